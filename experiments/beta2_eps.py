"""Study 2: β2 × ε at a fixed learning rate (claim 4: β2 matters only in the adaptive regime).

For each task of the budget's ``beta2_tasks`` (Adam): every literature ε × every β2 of the budget, at one fixed
learning rate: the best lr of the Adam grid's smallest-ε column (a good lr for the adaptive regime) when that
grid has run, else a preset default. β2 = 0.999 (the presets' default) reuses the grid's trial files.

Results: ``experiments/results/beta2_eps/<budget>/<task>__adam/`` (``sweep.json``, ``summary.json``,
``heatmap.png``).

    python experiments/beta2_eps.py --budget cpu
"""

from __future__ import annotations

import pathlib
import sys
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import _common as C
import range_vs_grid as RG

STUDY = "beta2_eps"
OPTIMIZER = "adam"
DEFAULT_BETA2 = 0.999
FALLBACK_LR = {"fashion-mnist-mlp": 2e-3, "ptb-lstm1": 1e-2, "fashion-mnist-alexnet": 5e-4}


def fixed_lr(budget: C.Budget, tb: C.TaskBudget) -> tuple[float, str]:
    """The lr the study holds fixed, and where it came from."""
    grid = RG.points(tb, OPTIMIZER)
    trials = C.load_trials(tb, OPTIMIZER, grid)
    eps0 = min(tb.eps_grid(OPTIMIZER))
    col = [t for t in trials if t.get("eps") is not None and C.close(float(t["eps"]), eps0)]
    _, direction = C.metric_of(tb.task)
    if len(col) == len(tb.lrs(OPTIMIZER)):
        b = C.best_trial(col, direction)
        if b is not None:
            return float(b["lr"]), f"best lr of the Adam grid at ε={eps0:g}"
    return FALLBACK_LR.get(tb.task, 1e-3), "preset default (the Adam grid had not run)"


def points(budget: C.Budget, tb: C.TaskBudget, lr: float) -> list[tuple[float, float | None, float | None]]:
    """ε outer, β2 inner; the default β2 is passed as None so that the grid's trial is reused."""
    return [(lr, eps, None if C.close(b2, DEFAULT_BETA2) else b2)
            for eps in tb.eps_grid(OPTIMIZER) for b2 in budget.beta2]


def analyze(budget: C.Budget, tb: C.TaskBudget, *, figures: bool = True) -> dict[str, Any]:
    """Spread of the metric over β2 in each ε column, the regime of each column and the β2 rule."""
    d = C.result_dir(STUDY, budget.name) / f"{tb.task}__{OPTIMIZER}"
    lr, lr_source = fixed_lr(budget, tb)
    metric, direction = C.metric_of(tb.task)
    trials = C.load_trials(tb, OPTIMIZER, points(budget, tb, lr))
    for t in trials:  # the grid's trials were stored with β2=None: name it
        if t.get("beta2") is None:
            t["beta2"] = DEFAULT_BETA2
    est = RG._load_range(RG.case_dir(budget.name, tb.task, OPTIMIZER) / "estimate_paper.json")
    steps = next((t.get("steps_per_epoch") for t in trials if t.get("steps_per_epoch")), None)
    summary: dict[str, Any] = {
        "task": tb.task, "optimizer": OPTIMIZER, "lr": lr, "lr_source": lr_source, "metric": metric,
        "budget": budget.name, "beta2_grid": budget.beta2, "trials_done": len(trials),
        "trials_planned": len(budget.beta2) * len(tb.eps_grid(OPTIMIZER)), "steps_per_epoch": steps,
        "rule_beta2": C.beta2_rule(steps, budget.beta2) if steps else None, "columns": {},
    }
    for eps in tb.eps_grid(OPTIMIZER):
        col = [t for t in trials if C.close(float(t["eps"]), eps)]
        vals = {f"{float(t['beta2']):g}": (t["value"] if t["state"] == "COMPLETE" else None) for t in col}
        best = C.best_trial(col, direction)
        share = float(est.fraction_above(eps)) if est is not None else None
        s = C.spread(list(vals.values()), metric)
        summary["columns"][f"{eps:g}"] = {
            "values": vals, "spread": s, "matters": C.matters(s, metric),
            "best_beta2": None if best is None else float(best["beta2"]),
            "share": share, "regime": None if share is None else C.regime(share),
        }
    if trials:
        sweep = C.write_sweep(d / "sweep.json", task=tb.task, optimizer=OPTIMIZER, trials=trials, lr=[lr],
                              eps=tb.eps_grid(OPTIMIZER), beta2=budget.beta2,
                              range_dict=est.to_dict() if est is not None else None, study=STUDY,
                              budget=budget.describe())
        summary["best"] = sweep["best"]
        if figures:
            try:
                from epsfinder import plots

                C.save_png(plots.plot_heatmap(sweep, x="eps", y="beta2", result=est), d / "heatmap.png")
            except Exception as exc:
                print(f"  heatmap failed: {type(exc).__name__}: {exc}", flush=True)
    C.write_json(d / "summary.json", summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    args = C.study_parser(__doc__.split("\n\n")[0]).parse_args(argv)
    budget = C.get_budget(args.budget)
    C.setup_threads(budget)
    C.log_header(STUDY, budget)
    for name in budget.beta2_tasks:
        if args.tasks and name not in args.tasks:
            continue
        tb = budget.tasks[name]
        lr, source = fixed_lr(budget, tb)
        print(f"  {name}: lr={lr:g} ({source})", flush=True)
        C.run_grid(tb, OPTIMIZER, points(budget, tb, lr), budget=budget.name, fresh=args.fresh)
        analyze(budget, tb)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
