"""One histogram snapshot against one Adam step and against the paper's sort, same tensors, same process.

Goal (issue 2): a snapshot costs at most 2× one Adam step and is at least 10× faster than the sort; its extra
peak memory is at most 10 % of the largest tensor (the sort needs about 3×).

    python benchmarks/bench_histogram.py [--sizes 10000000 100000000] [--device cpu|cuda] [--repeats 3]

Time: median of ``--repeats`` runs of each, interleaved. Memory on CPU: the rise of the process's peak resident
set (VmHWM, reset through /proc/self/clear_refs before each measurement); on CUDA: torch.cuda.max_memory_allocated.
Writes benchmarks/results/histogram[-cuda].json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from epsfinder import EpsilonProbe


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    raise RuntimeError(field)


class PeakMemory:
    """Extra peak memory (bytes) of the block, relative to what was in use when it started."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.extra = 0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
            self.base = _rss_kib("VmRSS") * 1024
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.extra = torch.cuda.max_memory_allocated() - self.base
        else:
            self.extra = _rss_kib("VmHWM") * 1024 - self.base


def _time(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def bench(n: int, device: torch.device, repeats: int) -> dict:
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.zeros(n, device=device))
    p.grad = torch.randn(n, device=device).mul_(torch.rand(n, device=device).mul_(12).sub_(10).exp_())
    opt = torch.optim.Adam([p])
    opt.step()  # create the state
    hist_probe = EpsilonProbe(opt, schedule=lambda s: False)
    paper_probe = EpsilonProbe(opt, schedule=lambda s: False, method="paper")
    for fn in (opt.step, hist_probe.snapshot):  # warm up
        fn()
    times: dict[str, list[float]] = {"adam_step": [], "snapshot": [], "paper_sort": []}
    for _ in range(repeats):
        times["adam_step"].append(_time(opt.step, device))
        times["snapshot"].append(_time(hist_probe.snapshot, device))
        times["paper_sort"].append(_time(paper_probe.snapshot, device))
        hist_probe.snapshots.clear()
        paper_probe.snapshots.clear()
    mem = {}
    for key, fn in (("adam_step", opt.step), ("snapshot", hist_probe.snapshot), ("paper_sort", paper_probe.snapshot)):
        with PeakMemory(device) as m:
            fn()
        mem[key] = m.extra
    med = {k: statistics.median(v) for k, v in times.items()}
    tensor_bytes = p.numel() * p.element_size()
    return {
        "elements": n,
        "device": str(device),
        "seconds": med,
        "snapshot_over_adam_step": med["snapshot"] / med["adam_step"],
        "sort_over_snapshot": med["paper_sort"] / med["snapshot"],
        "extra_peak_bytes": mem,
        "snapshot_extra_peak_over_tensor": mem["snapshot"] / tensor_bytes,
        "sort_extra_peak_over_tensor": mem["paper_sort"] / tensor_bytes,
        "repeats": repeats,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000_000, 100_000_000])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None)
    ap.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (1 on a shared machine: see README)"
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = [bench(n, device, args.repeats) for n in args.sizes]
    env = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
    }
    out = Path(
        args.out or Path(__file__).parent / "results" / f"histogram{'-cuda' if device.type == 'cuda' else ''}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"env": env, "rows": rows}, indent=1))
    print(
        "| elements | device | Adam step (s) | snapshot (s) | paper sort (s) | snapshot / Adam step | sort / snapshot "
        "| snapshot extra peak / tensor | sort extra peak / tensor |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        s = r["seconds"]
        print(
            f"| {r['elements']:,} | {r['device']} | {s['adam_step']:.4f} | {s['snapshot']:.4f} | {s['paper_sort']:.3f} "
            f"| {r['snapshot_over_adam_step']:.2f}× | {r['sort_over_snapshot']:.1f}× "
            f"| {100 * r['snapshot_extra_peak_over_tensor']:.1f} % | {100 * r['sort_extra_peak_over_tensor']:.0f} % |"
        )
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
