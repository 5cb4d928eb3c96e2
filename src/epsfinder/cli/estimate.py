"""``epsfinder estimate``: the dry pass (Algorithm 2) on a built-in or user task; prints and writes result.json."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger("epsfinder")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "estimate",
        help="estimate the search range of ε for a task and optimizer",
        description="Run the paper's dry pass over the first epoch (weights untouched) and print the ε range, "
        "the per-layer percentiles and the adaptability table; write DIR/result.json.",
    )
    p.add_argument("--task", default="fashion-mnist-mlp", help="task name (see `epsfinder tasks`)")
    p.add_argument("--optimizer", default="adam", help="optimizer name (see `epsfinder optimizers`)")
    p.add_argument("--method", choices=("histogram", "paper"), default="histogram",
                   help="histogram: streaming bins (default); paper: the authors' exact sort")
    p.add_argument("--steps", type=int, default=None, help="batches to use (default: one epoch)")
    p.add_argument("--preset", default="cpu", help="task preset: cpu (default) or paper")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="cap the number of training examples")
    p.add_argument("--data-dir", default=None, help="folder with the task's data (default: installed location)")
    p.add_argument("--beta2", type=float, default=None, help="second-moment decay (default: the optimizer's)")
    p.add_argument("--eps", type=float, default=None, help="ε used during the pass (only matters for optimizers "
                   "that add ε into their state)")
    p.add_argument("--weight-decay", type=float, default=None, help="default: the task preset's")
    p.add_argument("--percentiles", type=float, nargs=2, default=(2.0, 98.0), metavar=("LOW", "HIGH"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, help="folder for result.json (and report.html)")
    p.add_argument("--no-report", action="store_true", help="do not write report.html")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from epsfinder._catalog import OPTIMIZERS, optimizer_class
    from epsfinder.dryrun import estimate_range
    from epsfinder.tasks import get_task
    from epsfinder.terms import lookup

    lookup(optimizer_class(args.optimizer))  # unknown / SGD: a clear error before any work
    if not OPTIMIZERS[args.optimizer.lower()].adaptive:
        raise ValueError(f"optimizer {args.optimizer!r} has no adaptive term")
    task = get_task(args.task)
    setup = task.build(preset=args.preset, seed=args.seed, data_dir=args.data_dir, device=args.device,
                       limit=args.limit)
    hp = setup.hparams
    kwargs: dict = {}
    wd = args.weight_decay if args.weight_decay is not None else hp.get("weight_decay")
    if wd is not None:
        kwargs["weight_decay"] = wd
    if args.eps is not None:
        kwargs["eps"] = args.eps
    entry = OPTIMIZERS[args.optimizer.lower()]
    if args.beta2 is not None:
        kwargs["beta2"] = args.beta2
    elif hp.get("betas") and entry.beta2 == "betas":  # the preset's β1, β2 (e.g. the Transformer's 0.98)
        kwargs["beta2"] = float(hp["betas"][1])
    result = estimate_range(
        setup.model,
        setup.loss_fn,
        setup.train_loader,
        args.optimizer,
        method=args.method,
        steps=args.steps,
        step_fn=setup.step_fn,
        percentiles=tuple(args.percentiles),
        clip_grad_norm=hp.get("clip_grad_norm"),
        progress_bar=not args.no_progress,
        **kwargs,
    )
    result.hyperparameters["task"] = task.name
    print(f"task {task.name} ({args.preset} preset)")
    print(result.summary())
    if args.out:
        out = Path(args.out)
        path = out / "result.json"
        result.to_json(path)
        print(f"\nwrote {path}")
        if not args.no_report:
            _write_report(out)
    return 0


def _write_report(out: Path) -> None:
    try:
        from epsfinder.report import write_report
    except ImportError as err:  # plotting extra not installed
        print(f"(no report.html: {err})")
        return
    print(f"wrote {write_report(out)}")
