"""``epsfinder sweep``: a grid over (lr, ε[, β2]) on Optuna, every point exactly once, resumable."""

from __future__ import annotations

import argparse

SPEC_HELP = "a list 1e-4,1e-3, a range lo:hi[:values-per-decade] (log-even, ends included)"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="train a grid over learning rate and ε (and β2) on Optuna, resumable, with many workers",
        description="Train every (lr, ε[, β2]) point of a grid once on an Optuna storage; run the same command again "
        "to resume, or on other machines (same --storage and --study) to add workers. Writes DIR/trials.csv, "
        "DIR/sweep.json, DIR/range.json (auto/ends) and DIR/report.html. See docs/sweeps.md.",
    )
    p.add_argument("--task", required=True, help="task name (see `epsfinder tasks`)")
    p.add_argument("--optimizer", required=True, help="adaptive optimizer name (see `epsfinder optimizers`)")
    p.add_argument("--lr", required=True, metavar="SPEC", help=f"learning rates: {SPEC_HELP}, or paper-grid")
    p.add_argument("--eps", default="auto", metavar="SPEC",
                   help="auto (grid of the estimated range, default), ends (its two ends), paper-grid (the authors' "
                   f"literature grid), or {SPEC_HELP}")
    p.add_argument("--beta2", default=None, metavar="SPEC",
                   help="β2 values: auto (1/(1-β2) covers one epoch of batches), or a list or range (a range spaces "
                   "1-β2 log-evenly); default: the task's")
    p.add_argument("--epochs", type=int, default=None, help="epochs per trial (default: the preset's)")
    p.add_argument("--storage", default=None, metavar="URL",
                   help="SQLAlchemy URL (sqlite:///f.db, postgresql://u:p@host/db, mysql://...) or a SQLite file; "
                   "default DIR/study.db")
    p.add_argument("--study", default=None, metavar="NAME", help="study name (default: TASK-OPTIMIZER)")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="local worker processes (default 1)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="cap the number of training examples")
    p.add_argument("--preset", default="cpu", help="task preset: cpu (default) or paper")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None, help="folder with the task's data (default: installed location)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--pruning", action="store_true", help="stop poor trials early (median rule on each epoch)")
    p.add_argument("--no-baseline", action="store_true",
                   help="do not train SGD + momentum when the best ε is the upper end of the range")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--no-report", action="store_true", help="do not write report.html")
    p.add_argument("--heartbeat", type=float, default=10.0, metavar="S",
                   help="seconds between a running trial's heartbeats (default 10)")
    p.add_argument("--grace", type=float, default=60.0, metavar="S",
                   help="seconds without heartbeat after which another host's trial counts as dead (default 60)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from epsfinder.sweep import SweepError, run_sweep

    try:
        result = run_sweep(
            args.task, optimizer=args.optimizer, lr=args.lr, eps=args.eps, beta2=args.beta2, epochs=args.epochs,
            storage=args.storage, study=args.study, workers=args.workers, out=args.out, preset=args.preset,
            seed=args.seed, limit=args.limit, pruning=args.pruning, baseline=not args.no_baseline,
            progress=not args.no_progress, report=not args.no_report, data_dir=args.data_dir, device=args.device,
            heartbeat=args.heartbeat, grace=args.grace,
        )
    except SweepError as err:
        print(f"epsfinder sweep: error: {err}", file=sys.stderr)
        return 1
    print(result.summary())
    out = result.out
    assert out is not None
    for name in ("trials.csv", "sweep.json", "range.json", "report.html"):
        if (out / name).exists():
            print(f"wrote {out / name}")
    if not result.complete:
        print("note: some grid points have not finished (still running elsewhere, or failed with an error); run "
              "the same command again to resume")
    return 0
