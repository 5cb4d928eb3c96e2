"""``epsfinder train``: train one task with one optimizer setting; writes ``OUT/metrics.json``.

Exit status: 0 on success, 1 when the run diverged (a non-finite loss; ``metrics.json`` then says
``"diverged": true`` with the step), 2 for a usage error (unknown task, optimizer or preset, missing data).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def _option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r} (e.g. --option batch_size=64)")
    try:
        parsed: Any = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    return key.strip(), parsed


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a built-in task with one optimizer setting",
        description=(
            "Train TASK with one optimizer setting, evaluate its metric after every epoch, and write "
            "OUT/metrics.json (and OUT/result.json with --probe). Exit status 1 when the run diverged."
        ),
    )
    parser.add_argument("--task", required=True, help="task name (see `epsfinder tasks`)")
    parser.add_argument("--optimizer", required=True, help="optimizer name (see `epsfinder optimizers`)")
    parser.add_argument("--lr", required=True, type=float, help="learning rate")
    parser.add_argument("--eps", type=float, default=None, help="epsilon (default: the optimizer's)")
    parser.add_argument("--beta2", type=float, default=None, help="beta2 (default: the preset's, 0.999 or 0.98)")
    parser.add_argument("--weight-decay", type=float, default=None, help="weight decay (default: the preset's)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs (default: the preset's)")
    parser.add_argument("--preset", default="cpu", help="cpu (default, small and fast) or paper (the paper's sizes)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--limit", type=int, default=None, help="cap on training examples (images, tokens, pairs)")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps")
    parser.add_argument("--data-dir", default=None, help="data folder (CIFAR-10 needs one, or $EPSFINDER_CIFAR10)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument(
        "--option", action="append", type=_option, default=[], metavar="KEY=VALUE",
        help="override a preset setting, e.g. --option batch_size=64 --option eval_limit=500 (repeatable)",
    )
    parser.add_argument("--probe", action="store_true", help="attach an EpsilonProbe and write OUT/result.json")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--out", required=True, help="output folder for metrics.json")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from epsfinder.tasks import get_task, train_task

    task = get_task(args.task)  # unknown names fail here, before any data is read

    def show(record: dict[str, Any]) -> None:
        loss = record["train_loss"]
        loss_text = f"{loss:.4f}" if loss is not None else "n/a"
        print(
            f"epoch {record['epoch']}: train_loss {loss_text}  {task.metric} {record['metric']:.4f}  "
            f"lr {record['lr']:.3g}  ({record['wall_s']:.1f} s)",
            flush=True,
        )

    result = train_task(
        task,
        optimizer=args.optimizer,
        lr=args.lr,
        eps=args.eps,
        beta2=args.beta2,
        epochs=args.epochs,
        preset=args.preset,
        seed=args.seed,
        data_dir=args.data_dir,
        limit=args.limit,
        device=args.device,
        weight_decay=args.weight_decay,
        probe=args.probe,
        out=args.out,
        progress=not args.no_progress,
        max_steps=args.max_steps,
        options=dict(args.option) or None,
        on_record=show,
    )
    if result.best is not None:
        print(f"best {result.metric}: {result.best:.4f}")
    if result.probe is not None:
        print(f"eps range: {result.probe['lower']:.0e} .. {result.probe['upper']:.0e}")
    print(f"wrote {args.out}/metrics.json")
    if result.diverged:
        print(
            f"epsfinder train: diverged at step {result.diverged_step} (non-finite loss); lower --lr",
            file=sys.stderr,
        )
        return 1
    return 0
