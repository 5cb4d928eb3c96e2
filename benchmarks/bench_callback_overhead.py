"""Overhead of the Lightning callback: the same ``Trainer.fit`` with and without ``EpsilonFinderCallback``.

Both runs happen in one process, interleaved (the order alternates every repeat), on the same model, data and
seed; the wall time of ``fit`` is measured (Trainer construction excluded). Reported: the median over repeats of
the ratio within each back-to-back pair (robust to a machine whose load drifts), the ratio of the medians, and the
median share of the probed run's time spent inside ``EpsilonProbe.snapshot`` (the probe's own cost, measured
directly). The callback runs at its default schedule (four snapshots per epoch, histogram method).

    python benchmarks/bench_callback_overhead.py --repeats 7

prints a Markdown table row for ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import logging
import platform
import statistics
import time
import warnings

import torch
from torch import nn

from epsfinder import EpsilonProbe

_IN_SNAPSHOTS = [0.0]  # seconds spent inside EpsilonProbe.snapshot (a noise-free view of the cost)


def _timed_snapshot(original):  # type: ignore[no-untyped-def]
    def snapshot(self: EpsilonProbe):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        try:
            return original(self)
        finally:
            _IN_SNAPSHOTS[0] += time.perf_counter() - t0

    return snapshot


def _data(n: int, features: int, classes: int) -> torch.utils.data.TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, features, generator=g)
    return torch.utils.data.TensorDataset(x, torch.randint(0, classes, (n,), generator=g))


def _fit(args: argparse.Namespace, with_callback: bool) -> tuple[float, int, float]:
    import lightning.pytorch as L

    from epsfinder.integrations.lightning import EpsilonFinderCallback

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            w = args.width
            self.net = nn.Sequential(
                nn.Linear(args.features, w), nn.ReLU(), nn.Linear(w, w), nn.ReLU(), nn.Linear(w, args.classes)
            )

        def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
            x, y = batch
            return nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    callbacks = [EpsilonFinderCallback(out_dir=None, report=False, log=False)] if with_callback else []
    trainer = L.Trainer(
        max_epochs=args.epochs,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
        default_root_dir="/tmp/epsfinder-bench",
    )
    loader = torch.utils.data.DataLoader(
        _data(args.batches * args.batch_size, args.features, args.classes), batch_size=args.batch_size
    )
    module = Module()
    _IN_SNAPSHOTS[0] = 0.0
    t0 = time.perf_counter()
    trainer.fit(module, loader)
    elapsed = time.perf_counter() - t0
    snapshots = len(callbacks[0].probes[0].snapshots) if with_callback else 0
    return elapsed, snapshots, _IN_SNAPSHOTS[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batches", type=int, default=100, help="batches per epoch")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--features", type=int, default=784)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")

    EpsilonProbe.snapshot = _timed_snapshot(EpsilonProbe.snapshot)  # type: ignore[method-assign]
    _fit(args, False)  # warm-up: imports, allocator, first-step costs
    _fit(args, True)
    plain, probed, inside, snaps = [], [], [], 0
    for r in range(args.repeats):
        order = (False, True) if r % 2 == 0 else (True, False)
        for with_cb in order:
            t, s, t_snap = _fit(args, with_cb)
            (probed if with_cb else plain).append(t)
            if with_cb:
                inside.append(t_snap / t)
            snaps = max(snaps, s)
    m_plain, m_probed = statistics.median(plain), statistics.median(probed)
    paired = statistics.median(b / a for a, b in zip(plain, probed))  # each pair ran back to back
    params = sum(
        a * b + b for a, b in [(args.features, args.width), (args.width, args.width), (args.width, args.classes)]
    )
    print(f"plain fit: {[round(t, 3) for t in plain]}")
    print(f"with callback: {[round(t, 3) for t in probed]}")
    print(f"share of the probed fit spent in snapshots: {[round(x, 4) for x in inside]}")
    print(f"ratio of medians: {m_probed / m_plain:.3f}; median of paired ratios: {paired:.3f}")
    print(
        "| Lightning callback, default schedule (4 snapshots/epoch, histogram) "
        f"| MLP {args.features}-{args.width}-{args.width}-{args.classes} ({params / 1e6:.2f} M params), Adam, "
        f"{args.epochs} × {args.batches} batches of {args.batch_size}, {snaps} snapshots "
        f"| {m_plain:.3f} s | {m_probed:.3f} s | **{paired:.3f}×** ({m_probed / m_plain:.3f}×) "
        f"| {100 * statistics.median(inside):.2f} % "
        f"| {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"medians of {args.repeats} interleaved pairs |"
    )


if __name__ == "__main__":
    main()
