"""Study 1: the estimated ε range vs a full lr × ε grid over the authors' literature range.

For every (task, optimizer) of the budget: Algorithm 2's range (``method="paper"`` and ``"histogram"``), the full
lr × ε grid (every literature ε), a real training run with an EpsilonProbe at the grid's best point, and then

* the Table III/IV analogue: literature range and its size, estimated range and its size, best ε, inside?
* the Table II analogue: share of elements with A > ε at each grid ε after epoch 1 (from the estimate) and over
  training (from the probe);
* the heat map, with the claim-2 diagonal test (classification) and the claim-3 flat-α test (language modelling,
  translation); see :func:`_common.diagonal_test` and :func:`_common.flat_test`.

Results: ``experiments/results/range_vs_grid/<budget>/<task>__<optimizer>/`` (``sweep.json``, ``estimate_*.json``,
``probe/result.json``, ``summary.json``, ``heatmap.png``, ``adaptability.png``, ``probe_shares.png``).

    python experiments/range_vs_grid.py --budget cpu [--tasks ptb-lstm1] [--optimizers adam]
"""

from __future__ import annotations

import pathlib
import sys
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import _common as C

STUDY = "range_vs_grid"


def points(tb: C.TaskBudget, optimizer: str) -> list[tuple[float, float | None, float | None]]:
    """The grid, ε outer and lr inner, so that an interrupted run leaves whole ε columns."""
    return [(lr, eps, None) for eps in tb.eps_grid(optimizer) for lr in tb.lrs(optimizer)]


def case_dir(budget: str, task: str, optimizer: str) -> pathlib.Path:
    return C.result_dir(STUDY, budget) / f"{task}__{optimizer}"


def cases(budget: C.Budget, tasks: list[str] | None = None, optimizers: list[str] | None = None
          ) -> list[tuple[C.TaskBudget, str]]:
    out = []
    for name, tb in budget.tasks.items():
        if tasks and name not in tasks:
            continue
        for opt in tb.optimizers:
            if optimizers and opt not in optimizers:
                continue
            out.append((tb, opt))
    return out


def run_case(budget: C.Budget, tb: C.TaskBudget, optimizer: str, *, fresh: bool = False) -> dict[str, Any]:
    """Estimates, grid, probe, then the analysis of one (task, optimizer)."""
    d = case_dir(budget.name, tb.task, optimizer)
    for method in ("paper", "histogram"):
        try:
            C.estimate(tb, optimizer, method, d / f"estimate_{method}.json", fresh=fresh)
        except Exception as exc:
            print(f"  estimate {tb.task} {optimizer} {method} failed: {type(exc).__name__}: {exc}", flush=True)
    trials = C.run_grid(tb, optimizer, points(tb, optimizer), budget=budget.name, fresh=fresh)
    _, direction = C.metric_of(tb.task)
    best = C.best_trial(trials, direction)
    if best is not None:
        C.probe_run(tb, optimizer, float(best["lr"]), best["eps"], d / "probe", fresh=fresh)
    return analyze_case(budget, tb, optimizer)


def _load_range(path: pathlib.Path) -> Any:
    from epsfinder import EpsilonRange

    return EpsilonRange.from_json(path) if path.exists() else None


def probe_shares(probe_json: pathlib.Path, eps_grid: list[float]) -> list[dict[str, Any]]:
    """Share of elements with A > ε at every probe snapshot: [{step, epoch, shares: {ε: share}}]."""
    r = _load_range(probe_json)
    if r is None:
        return []
    out = []
    for s in r.snapshots:
        total = s.total()
        out.append({"step": s.step, "epoch": s.epoch,
                    "shares": {f"{e:g}": float(total.fraction_above(e)) for e in eps_grid}})
    return out


def analyze_case(budget: C.Budget, tb: C.TaskBudget, optimizer: str, *, figures: bool = True) -> dict[str, Any]:
    """Everything the report needs about one case, from the files that exist (a partial grid is fine)."""
    d = case_dir(budget.name, tb.task, optimizer)
    metric, direction = C.metric_of(tb.task)
    eps_grid = tb.eps_grid(optimizer)
    lit = C.LITERATURE_EPS[(tb.family, optimizer)]
    lr_grid = tb.lrs(optimizer)
    planned = points(tb, optimizer)
    trials = C.load_trials(tb, optimizer, planned)
    est = {m: _load_range(d / f"estimate_{m}.json") for m in ("paper", "histogram")}
    main = est["paper"] or est["histogram"]
    summary: dict[str, Any] = {
        "task": tb.task, "optimizer": optimizer, "family": tb.family, "metric": metric, "direction": direction,
        "budget": budget.name, "budget_note": tb.note, "epochs": tb.epochs, "limit": tb.limit,
        "trials_planned": len(planned), "trials_done": len(trials),
        "literature": {"lower": min(lit), "upper": max(lit), "size": len(lit),
                       "note": C.LITERATURE_NOTES.get(tb.family)},
        "grid_is_literature": len(eps_grid) == len(lit),
        "lr_grid": lr_grid, "eps_grid": eps_grid,
    }
    for m, r in est.items():
        summary[f"range_{m}"] = None if r is None else {
            "lower": r.lower, "upper": r.upper, "raw_lower": r.raw_lower, "raw_upper": r.raw_upper,
            "size": C.range_size(r.lower, r.upper, optimizer),
            "shares": {f"{e:g}": float(r.fraction_above(e)) for e in eps_grid},
        }
    if not trials:
        return summary
    sweep = C.write_sweep(d / "sweep.json", task=tb.task, optimizer=optimizer, trials=trials, lr=lr_grid,
                          eps=eps_grid, range_dict=main.to_dict() if main is not None else None, study=STUDY,
                          budget=budget.describe())
    best = sweep["best"]
    summary["best"] = best
    summary["durations"] = {"total_s": sum(float(t.get("duration_s") or 0) for t in trials),
                            "mean_s": sum(float(t.get("duration_s") or 0) for t in trials) / len(trials)}
    summary["failed"] = sum(1 for t in trials if t["state"] != "COMPLETE")
    blr = C.best_lr_per_eps(trials, direction)
    summary["best_lr_per_eps"] = {f"{e:g}": lr for e, lr in blr.items()}
    summary["best_value_per_eps"] = {
        f"{e:g}": C.best_trial([t for t in trials if t.get("eps") is not None and C.close(float(t["eps"]), e)],
                               direction)["value"]
        for e in blr
    }
    if best is not None:
        be = float(best["eps"])
        tied = sorted({float(t["eps"]) for t in C.tied_best(trials, direction)})
        summary["best_eps_tied"] = tied
        for m, r in est.items():
            if r is None:
                continue
            # with an exact tie for the best value, the best ε is inside when any of the tied ε is
            inside = any(C.in_range(e, r.lower, r.upper) for e in tied)
            # near: some ε inside the range comes within the tuning tolerance of the grid's best
            target = C.target_value(float(best["value"]), metric)
            near = any(C.reaches(t.get("value"), target, direction) for t in trials
                       if t["state"] == "COMPLETE" and C.in_range(float(t["eps"]), r.lower, r.upper))
            summary[f"range_{m}"].update(inside=inside, near=near)
        if main is not None:
            shares = {e: float(main.fraction_above(e)) for e in eps_grid}
            summary["share_at_best"] = shares.get(be, float(main.fraction_above(be)))
            summary["regime_at_best"] = C.regime(summary["share_at_best"])
            summary["diagonal"] = C.diagonal_test(blr, shares)
            summary["flat"] = C.flat_test(blr, shares, lr_grid)
    summary["probe"] = probe_shares(d / "probe" / "result.json", eps_grid)
    if figures:
        _figures(d, sweep, main, summary)
    C.write_json(d / "summary.json", summary)
    return summary


def _figures(d: pathlib.Path, sweep: dict[str, Any], main: Any, summary: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from epsfinder import plots

    try:
        C.save_png(plots.plot_heatmap(sweep, x="eps", y="lr", result=main), d / "heatmap.png")
    except Exception as exc:
        print(f"  heatmap failed: {type(exc).__name__}: {exc}", flush=True)
    if main is not None:
        try:
            C.save_png(plots.plot_adaptability(main, per_layer=False), d / "adaptability.png")
        except Exception as exc:
            print(f"  adaptability plot failed: {type(exc).__name__}: {exc}", flush=True)
    if summary.get("probe"):
        fig, ax = plt.subplots(figsize=(5.0, 3.0))
        snaps = summary["probe"]
        xs = [s["epoch"] if s["epoch"] is not None else s["step"] for s in snaps]
        for key in snaps[0]["shares"]:
            ax.plot(xs, [100 * s["shares"][key] for s in snaps], marker=".", label=f"ε={key}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("% of elements with A > ε")
        ax.set_title(f"{summary['task']} {summary['optimizer']}: adaptive share during training", fontsize=9)
        ax.legend(fontsize=6, ncol=2)
        C.save_png(fig, d / "probe_shares.png")


def main(argv: list[str] | None = None) -> int:
    args = C.study_parser(__doc__.split("\n\n")[0]).parse_args(argv)
    budget = C.get_budget(args.budget)
    C.setup_threads(budget)
    C.log_header(STUDY, budget)
    for tb, opt in cases(budget, args.tasks, args.optimizers):
        s = run_case(budget, tb, opt, fresh=args.fresh)
        b = s.get("best") or {}
        rp = s.get("range_paper") or {}
        print(f"  -> {tb.task} {opt}: best {b.get('value')} at lr={b.get('lr')} eps={b.get('eps')}; range "
              f"[{rp.get('lower')}, {rp.get('upper')}] inside={rp.get('inside')}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["analyze_case", "cases", "main", "points", "probe_shares", "run_case"]
