"""Time per epoch of every built-in task and preset, and the metric after one epoch of Adam (lr 1e-3, ε 1e-8).

``cpu`` presets run one full epoch with :func:`epsfinder.tasks.train_task` (training plus the test-set metric).
``paper`` presets (and CIFAR-10 tasks, whose data is not installed here and which are timed on random images of
CIFAR-10's shape) are timed over a few optimizer steps (at least ``--paper-steps`` and 3 s, at most 50) after one
warm-up step; the per-epoch time is that step time × steps per epoch (training only, no evaluation), and no
metric is reported. A ``paper`` preset whose extrapolated epoch is under 90 s is measured like a ``cpu`` one.

Usage (results are merged into the JSON file, one entry per task and preset)::

    python benchmarks/bench_task_epochs.py                       # everything (about 20-30 minutes on 2 cores)
    python benchmarks/bench_task_epochs.py --tasks digits-mlp --presets cpu
    python benchmarks/bench_task_epochs.py --markdown            # print the table of the JSON file

Output: ``benchmarks/results/task_epochs.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import pickle
import platform
import sys
import tempfile
import time
from typing import Any

import numpy as np
import torch

from epsfinder.tasks import get_task, list_tasks, train_task

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "task_epochs.json"


def _load() -> dict[str, Any]:
    if RESULTS.is_file():
        return json.loads(RESULTS.read_text(encoding="utf-8"))
    return {"entries": {}}


def _save(data: dict[str, Any]) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
    }


def _fake_cifar(folder: pathlib.Path, train: int = 2000, test: int = 200) -> pathlib.Path:
    """Random images in CIFAR-10's python-pickle layout (timing only: the metric means nothing)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("data_batch_1", train), ("test_batch", test)):
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"labels": rng.integers(0, 10, n).tolist()}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    return folder


def time_steps(name: str, preset: str, steps: int, data_dir: str | None = None) -> dict[str, Any]:
    """Seconds per optimizer step (Adam), after one warm-up step, over ``steps`` steps."""
    torch.manual_seed(0)
    setup = get_task(name).build(preset=preset, seed=0, data_dir=data_dir, options={"eval_limit": 10})
    model = setup.model
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-8, weight_decay=setup.hparams["weight_decay"])
    clip = setup.hparams.get("clip_grad_norm")
    it = iter(setup.train_loader)
    times: list[float] = []
    for i in range(min(50, setup.steps_per_epoch or 50)):
        if len(times) >= steps and sum(times) >= 3.0:
            break
        batch = next(it)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        if setup.step_fn is not None:
            loss = setup.step_fn(model, batch)
        else:
            loss = setup.loss_fn(model(batch[0]), batch[1])
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        if i > 0:
            times.append(time.perf_counter() - t0)
    per_step = float(np.mean(times))
    spe = setup.steps_per_epoch
    if name.startswith("cifar10-"):
        spe = int(np.ceil(50_000 / setup.hparams["batch_size"]))  # the real data set's epoch
    params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    return {
        "kind": "extrapolated", "steps_timed": len(times), "s_per_step": per_step, "steps_per_epoch": spe,
        "epoch_s": per_step * spe, "metric": None, "params": params,
    }


def one_epoch(name: str, preset: str) -> dict[str, Any]:
    """One full epoch with train_task: wall time (training + evaluation) and the metric."""
    task = get_task(name)
    t0 = time.perf_counter()
    result = train_task(task, optimizer="adam", lr=1e-3, eps=1e-8, epochs=1, preset=preset, seed=0, progress=False)
    total = time.perf_counter() - t0
    rec = result.epochs[0]
    setup = task.build(preset=preset, seed=0, options={"eval_limit": 10})
    params = sum(p.numel() for p in {id(p): p for p in setup.model.parameters()}.values())
    return {
        "kind": "measured", "epoch_s": rec["wall_s"], "total_s": total, "steps_per_epoch": result.steps_per_epoch,
        "s_per_step": None, "metric": rec["metric"], "train_loss": rec["train_loss"], "params": params,
        "diverged": result.diverged,
    }


def run(tasks: list[str], presets: list[str], paper_steps: int) -> None:
    data = _load()
    data["machine"] = _machine()
    data["command"] = "python benchmarks/bench_task_epochs.py " + " ".join(sys.argv[1:])
    with tempfile.TemporaryDirectory() as tmp:
        cifar_dir = str(_fake_cifar(pathlib.Path(tmp) / "cifar"))
        for name in tasks:
            task = get_task(name)
            for preset in presets:
                key = f"{name}/{preset}"
                load_before = os.getloadavg()[0]
                print(f"== {key}", flush=True)
                if name.startswith("cifar10-"):
                    entry = time_steps(name, preset, paper_steps if preset == "paper" else 10, cifar_dir)
                    entry["note"] = "random images of CIFAR-10 shape; epoch = 50,000 images"
                elif task.data_status() is not None:
                    print(f"   skipped: data missing ({task.data_status()})")
                    continue
                elif preset == "cpu":
                    entry = one_epoch(name, preset)
                else:
                    entry = time_steps(name, preset, paper_steps)
                    if entry["epoch_s"] < 90:  # cheap enough: measure a real epoch (and its metric) instead
                        entry = one_epoch(name, preset)
                entry["load_avg_1m"] = [load_before, os.getloadavg()[0]]
                entry["when"] = time.strftime("%Y-%m-%d %H:%M:%S")
                data["entries"][key] = entry
                _save(data)
                print(f"   {json.dumps(entry)}", flush=True)


def markdown() -> str:
    data = _load()
    lines = [
        "| task | preset | parameters | steps/epoch | time/epoch | how | metric after 1 epoch | load |",
        "|---|---|---:|---:|---:|---|---:|---:|",
    ]
    order = [t.name for t in list_tasks()]
    for key in sorted(data["entries"], key=lambda k: (order.index(k.split("/")[0]), k.split("/")[1])):
        e = data["entries"][key]
        name, preset = key.split("/")
        minutes = e["epoch_s"] / 60
        when = f"{e['epoch_s']:.0f} s" if e["epoch_s"] < 120 else f"{minutes:.1f} min"
        if minutes > 120:
            when = f"{minutes / 60:.1f} h"
        if e["kind"] == "measured":
            how = "1 epoch, train + test"
        else:
            how = f"{e['steps_timed']} steps × {e['steps_per_epoch']}, train only"
            if name.startswith("cifar10-"):
                how += " (random images)"
        metric = e.get("metric")
        task = get_task(name)
        if metric is None:
            metric_text = "–"
        elif task.metric == "accuracy":
            metric_text = f"{100 * metric:.1f} % accuracy"
        elif task.metric == "perplexity":
            metric_text = f"{metric:.0f} perplexity"
        else:
            metric_text = f"{metric:.2f} BLEU"
        params = f"{e['params'] / 1e6:.2f} M" if e.get("params") else "–"
        load = float(np.mean(e["load_avg_1m"])) if e.get("load_avg_1m") else float("nan")
        lines.append(
            f"| {name} | {preset} | {params} | {e['steps_per_epoch']} | {when} | {how} | {metric_text} | {load:.1f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=None, help="comma-separated task names (default: all)")
    parser.add_argument("--presets", default="cpu,paper", help="comma-separated presets (default cpu,paper)")
    parser.add_argument("--paper-steps", type=int, default=3, help="timed steps for extrapolated rows (default 3)")
    parser.add_argument("--markdown", action="store_true", help="print the results table and exit")
    args = parser.parse_args()
    if args.markdown:
        print(markdown())
        return 0
    tasks = args.tasks.split(",") if args.tasks else [t.name for t in list_tasks()]
    run(tasks, args.presets.split(","), args.paper_steps)
    print(markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
