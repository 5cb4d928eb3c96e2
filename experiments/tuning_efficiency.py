"""Study 4: tuning efficiency, computed from the finished range_vs_grid grids (no new training).

For every (task, optimizer) grid: the trials and wall time that each strategy spends, and whether it comes within
the tuning tolerance of the full grid's best (0.5 accuracy points, 2 % perplexity, 0.5 BLEU):

(a) the full lr × ε grid over the literature range;
(b) the grid ε values inside the estimated range × all lr (Algorithm 2, ``method="paper"``; histogram too);
(c) the two ends of the estimated range only × all lr (an end not on the grid is mapped to the nearest grid ε);
(d) random search over the full grid, simulated by 1,000 random orders of its finished trials: the median trials
    and time until the first trial that reaches the target.

Results: ``experiments/results/tuning_efficiency/<budget>/efficiency.json``.

    python experiments/tuning_efficiency.py --budget cpu
"""

from __future__ import annotations

import pathlib
import sys
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import _common as C
import range_vs_grid as RG

STUDY = "tuning_efficiency"


def compute(budget: C.Budget, seeds: int = 1000) -> dict[str, Any]:
    """Efficiency of every case whose grid has at least one finished trial."""
    out: dict[str, Any] = {"budget": budget.describe(), "tolerance": C.TOLERANCE, "cases": []}
    for tb, opt in RG.cases(budget):
        planned = RG.points(tb, opt)
        trials = C.load_trials(tb, opt, planned)
        if not trials:
            continue
        metric, direction = C.metric_of(tb.task)
        case: dict[str, Any] = {"task": tb.task, "optimizer": opt, "metric": metric,
                                "trials_done": len(trials), "trials_planned": len(planned),
                                "complete_grid": len(trials) == len(planned)}
        d = RG.case_dir(budget.name, tb.task, opt)
        for method in ("paper", "histogram"):
            r = RG._load_range(d / f"estimate_{method}.json")
            if r is None:
                continue
            case[method] = C.efficiency(trials, metric=metric, direction=direction, lower=r.lower, upper=r.upper,
                                        seeds=seeds)
            case[method]["range"] = [r.lower, r.upper]
        out["cases"].append(case)
    return out


def main(argv: list[str] | None = None) -> int:
    args = C.study_parser(__doc__.split("\n\n")[0]).parse_args(argv)
    budget = C.get_budget(args.budget)
    C.log_header(STUDY, budget)
    res = compute(budget)
    C.write_json(C.result_dir(STUDY, budget.name) / "efficiency.json", res)
    for c in res["cases"]:
        s = (c.get("paper") or {}).get("strategies", {})
        row = ", ".join(f"{k}: {v.get('trials', v.get('median_trials'))} trials "
                        f"{'ok' if v.get('reached', (v.get('reached_fraction') or 0) > 0) else 'MISS'}"
                        for k, v in s.items())
        print(f"  {c['task']} {c['optimizer']}: {row}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
