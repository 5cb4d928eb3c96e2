"""The whole ``estimate`` (the dry pass with the probe) against one plain training epoch, same task, same process.

Goal (issue 2): at most 1.1× one plain epoch of the same optimizer on ``fashion-mnist-mlp``.

    python benchmarks/bench_estimate.py [--task fashion-mnist-mlp] [--repeats 3] [--method histogram]

Both sides build the task's model and loader once, then alternate (plain epoch, estimate) ``--repeats`` times;
the ratio of the medians is reported. Writes benchmarks/results/estimate.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch

from epsfinder import estimate_range, make_optimizer
from epsfinder.tasks import get_task


def plain_epoch(setup, model, optimizer_name: str) -> None:
    opt = make_optimizer(optimizer_name, model.parameters(), weight_decay=setup.hparams.get("weight_decay"))
    model.train()
    for x, y in setup.train_loader:
        opt.zero_grad(set_to_none=True)
        setup.loss_fn(model(x), y).backward()
        opt.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="fashion-mnist-mlp")
    ap.add_argument("--optimizer", default="adam")
    ap.add_argument("--method", default="histogram")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    setup = get_task(args.task).build(preset="cpu", seed=0)
    base = copy.deepcopy(setup.model.state_dict())
    times: dict[str, list[float]] = {"plain_epoch": [], "estimate": []}
    for _ in range(args.repeats):
        setup.model.load_state_dict(base)
        t = time.perf_counter()
        plain_epoch(setup, setup.model, args.optimizer)
        times["plain_epoch"].append(time.perf_counter() - t)
        setup.model.load_state_dict(base)
        t = time.perf_counter()
        estimate_range(
            setup.model,
            setup.loss_fn,
            setup.train_loader,
            args.optimizer,
            method=args.method,
            weight_decay=setup.hparams.get("weight_decay"),
            progress_bar=False,
        )
        times["estimate"].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    row = {
        "task": args.task,
        "optimizer": args.optimizer,
        "method": args.method,
        "steps": setup.steps_per_epoch,
        "seconds": med,
        "all_seconds": times,
        "estimate_over_plain_epoch": med["estimate"] / med["plain_epoch"],
        "threads": torch.get_num_threads(),
    }
    out = Path(__file__).parent / "results" / f"estimate-{args.method}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(row, indent=1))
    print("| task | optimizer | method | plain epoch (s) | estimate (s) | estimate / plain epoch |")
    print("|---|---|---|---|---|---|")
    print(
        f"| {args.task} | {args.optimizer} | {args.method} | {med['plain_epoch']:.2f} | {med['estimate']:.2f} "
        f"| {row['estimate_over_plain_epoch']:.2f}× |"
    )
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
