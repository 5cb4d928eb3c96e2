"""Run every study of a budget, one after the other, cheapest and most important first.

Order: fashion-mnist-mlp Adam grid, ptb-lstm1 Adam grid, the other optimizers on fashion-mnist-mlp, then on
ptb-lstm1, the Fashion-MNIST AlexNet, the Transformer, the β2 study, the SGD baseline, and finally the tuning
efficiency tables and docs/reproduction.md. Every trial is stored as its own file, so the run can be stopped at any
moment and restarted with the same command; finished trials are skipped.

    nohup python experiments/run_all.py --budget cpu > experiments/results/run_all.log 2>&1 &
"""

from __future__ import annotations

import argparse
import importlib
import pathlib
import sys
import time
import traceback
from collections.abc import Callable

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import _common as C


def steps(budget: str) -> list[tuple[str, Callable[[], object]]]:
    """The studies in run order, as (label, thunk)."""
    b = ["--budget", budget]

    def study(module: str) -> Callable[[list[str]], object]:
        # imported when the step starts, so that a script edited during a long run is picked up
        return lambda args: importlib.import_module(module).main(args)

    range_vs_grid, beta2_eps, sgd_baseline = study("range_vs_grid"), study("beta2_eps"), study("sgd_baseline")
    tuning_efficiency, make_report = study("tuning_efficiency"), study("make_report")
    others = ["rmsprop", "adabelief", "adamomentum"]
    return [
        ("range_vs_grid fashion-mnist-mlp adam",
         lambda: range_vs_grid([*b, "--tasks", "fashion-mnist-mlp", "--optimizers", "adam"])),
        ("range_vs_grid ptb-lstm1 adam",
         lambda: range_vs_grid([*b, "--tasks", "ptb-lstm1", "--optimizers", "adam"])),
        ("range_vs_grid fashion-mnist-mlp others",
         lambda: range_vs_grid([*b, "--tasks", "fashion-mnist-mlp", "--optimizers", *others])),
        ("sgd_baseline", lambda: sgd_baseline(b)),
        ("beta2_eps fashion-mnist-mlp", lambda: beta2_eps([*b, "--tasks", "fashion-mnist-mlp"])),
        ("range_vs_grid ptb-lstm1 others",
         lambda: range_vs_grid([*b, "--tasks", "ptb-lstm1", "--optimizers", *others])),
        ("range_vs_grid fashion-mnist-alexnet", lambda: range_vs_grid([*b, "--tasks", "fashion-mnist-alexnet"])),
        ("beta2_eps ptb-lstm1", lambda: beta2_eps([*b, "--tasks", "ptb-lstm1"])),
        ("range_vs_grid es-en-transformer", lambda: range_vs_grid([*b, "--tasks", "es-en-transformer"])),
        ("tuning_efficiency", lambda: tuning_efficiency(b)),
        ("make_report", lambda: make_report(b)),
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", choices=sorted(C.BUDGETS), default="cpu")
    p.add_argument("--resume", action="store_true", default=True, help="skip finished trials (always on)")
    p.add_argument("--only", nargs="*", default=None, help="run only the steps whose label contains one of these")
    args = p.parse_args(argv)
    C.setup_threads(C.get_budget(args.budget))
    start = time.perf_counter()
    failed = 0
    for label, thunk in steps(args.budget):
        if args.only and not any(o in label for o in args.only):
            continue
        t0 = time.perf_counter()
        print(f"### {label} ({time.strftime('%H:%M:%S')})", flush=True)
        try:
            thunk()
        except Exception:
            failed += 1
            traceback.print_exc()
        print(f"### {label} done in {time.perf_counter() - t0:.0f}s (total {time.perf_counter() - start:.0f}s)",
              flush=True)
    print(f"### all done in {time.perf_counter() - start:.0f}s, {failed} step(s) failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
