"""Study 3: Adam at the upper end of the estimated range vs SGD + momentum at the equivalent learning rate.

NOTES §4: at the upper end ε_u (almost no element has A > ε) Adam's step is ≈ α·m̂/ε, i.e. SGD + momentum. torch's
SGD (momentum 0.9, no dampening) accumulates ``buf = 0.9·buf + g`` while Adam's ``m`` is an EMA with weight
(1 − β1) = 0.1, so the exactly equivalent torch learning rate is (1 − β1)·α/ε; the paper states α/ε
(its SGD is written with dampening = β1); ``EpsilonRange.recommend`` gives (1 − β1)·α/ε for torch's SGD.
Both are run, for every α of the Adam grid: Adam's trials at ε_u are the
range_vs_grid trials (reused, or run here when ε_u is not on the grid).

Results: ``experiments/results/sgd_baseline/<budget>/<task>/summary.json``.

    python experiments/sgd_baseline.py --budget cpu
"""

from __future__ import annotations

import pathlib
import sys
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import _common as C
import range_vs_grid as RG

STUDY = "sgd_baseline"
BETA1 = 0.9
MAX_SGD_LR = 10.0  # larger SGD learning rates are not run (they diverge): reported as skipped


def upper_end(budget: C.Budget, tb: C.TaskBudget) -> float | None:
    r = RG._load_range(RG.case_dir(budget.name, tb.task, "adam") / "estimate_paper.json")
    if r is None:
        try:
            r = C.estimate(tb, "adam", "paper", RG.case_dir(budget.name, tb.task, "adam") / "estimate_paper.json")
        except Exception as exc:
            print(f"  estimate failed: {type(exc).__name__}: {exc}", flush=True)
            return None
    return float(r.upper)


def plan(budget: C.Budget, tb: C.TaskBudget, eps_u: float) -> list[dict[str, Any]]:
    """One row per α: Adam (α, ε_u) and SGD at α/ε_u ("paper") and (1 − β1)·α/ε_u ("equivalent")."""
    return [{"lr": lr, "sgd_paper": lr / eps_u, "sgd_equivalent": (1 - BETA1) * lr / eps_u}
            for lr in tb.lrs("adam")]


def run(budget: C.Budget, tb: C.TaskBudget, *, execute: bool, fresh: bool = False) -> dict[str, Any]:
    """Run (``execute``) or only load the trials, and summarise."""
    eps_u = upper_end(budget, tb) if execute else None
    if eps_u is None:
        r = RG._load_range(RG.case_dir(budget.name, tb.task, "adam") / "estimate_paper.json")
        eps_u = None if r is None else float(r.upper)
    metric, direction = C.metric_of(tb.task)
    summary: dict[str, Any] = {"task": tb.task, "budget": budget.name, "metric": metric, "eps_upper": eps_u,
                               "rows": []}
    if eps_u is None:
        return summary
    get = C.run_trial if execute else _load
    for row in plan(budget, tb, eps_u):
        adam = get(tb, "adam", row["lr"], eps_u, None, budget=budget.name, fresh=fresh)
        out = {"lr": row["lr"], "adam": _val(adam)}
        for kind in ("sgd_paper", "sgd_equivalent"):
            lr_sgd = row[kind]
            out[f"{kind}_lr"] = lr_sgd
            if lr_sgd > MAX_SGD_LR:
                out[kind] = None
                out[f"{kind}_note"] = f"skipped: lr {lr_sgd:g} > {MAX_SGD_LR:g}"
                continue
            out[kind] = _val(get(tb, "sgd", lr_sgd, None, None, budget=budget.name, fresh=fresh))
        summary["rows"].append(out)
    for key in ("adam", "sgd_paper", "sgd_equivalent"):
        vals = [r[key] for r in summary["rows"] if r.get(key) is not None]
        summary[f"best_{key}"] = (max(vals) if direction == "maximize" else min(vals)) if vals else None
    ba, be = summary["best_adam"], summary["best_sgd_equivalent"]
    if ba is not None and be is not None:
        tol = C.TOLERANCE[metric][1]
        diff = (abs(ba - be) / min(ba, be)) if metric == "perplexity" else abs(ba - be)
        summary["equivalent_gap"] = diff
        summary["equivalent_within_tolerance"] = diff <= tol
    C.write_json(C.result_dir(STUDY, budget.name) / tb.task / "summary.json", summary)
    return summary


def _load(tb: C.TaskBudget, optimizer: str, lr: float, eps: float | None, beta2: float | None,
          **_: Any) -> dict[str, Any] | None:
    path = C.trial_path(tb, optimizer, lr, eps, beta2)
    return C.read_json(path) if path.exists() else None


def _val(trial: dict[str, Any] | None) -> float | None:
    if trial is None or trial.get("state") != "COMPLETE":
        return None
    return float(trial["value"])


def main(argv: list[str] | None = None) -> int:
    args = C.study_parser(__doc__.split("\n\n")[0]).parse_args(argv)
    budget = C.get_budget(args.budget)
    C.setup_threads(budget)
    C.log_header(STUDY, budget)
    tb = budget.tasks[budget.baseline_task]
    s = run(budget, tb, execute=True, fresh=args.fresh)
    print(f"  -> Adam at eps_u={s.get('eps_upper')}: {s.get('best_adam')}; SGD α/ε: {s.get('best_sgd_paper')}; "
          f"SGD (1-β1)α/ε: {s.get('best_sgd_equivalent')}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
