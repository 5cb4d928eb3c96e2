"""The probe under torch.distributed: 2 CPU processes (gloo) against the single-process result, exactly.

One ``torch.multiprocessing.spawn`` runs every scenario (process start-up dominates the cost); each rank writes
its results as JSON and the test process compares them with single-process references computed here.
"""

from __future__ import annotations

import json
import math
import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

from epsfinder import EpsilonProbe, EpsilonRange, every
from epsfinder import _distributed as D

WORLD = 2
STEPS = 3
FLAT = 1000  # elements of the hand-sharded flat parameter


# ---------------------------------------------------------------------------------------------- shared setup
def _model() -> nn.Module:
    from _models import EmbeddingBag

    torch.manual_seed(0)
    return EmbeddingBag()  # its unused embedding rows have exactly zero adaptive terms (the zero split path)


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Fixed digit-like batches (pixel levels 0..16 over 16); no sklearn import in the spawned processes."""
    g = torch.Generator().manual_seed(0)
    return [
        (torch.randint(0, 17, (64, 64), generator=g) / 16.0, torch.randint(0, 10, (64,), generator=g))
        for _ in range(STEPS)
    ]


def _flat_grads() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(STEPS):
        grad = torch.randn(FLAT, generator=g) * torch.logspace(-4, 1, FLAT)
        grad[:100] = 0  # zeros on rank 0's half only: the exact-zero counts must be summed, not guessed
        grad[900:950] = 0
        out.append(grad)
    return out


def _dtensor_grads() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    out = []
    for _ in range(STEPS):
        grad = torch.randn(11, 6, generator=g)
        grad[:2] = 0  # rows 0-1 (rank 0's shard) have zero adaptive terms
        out.append(grad)
    return out


def _probes(opt: torch.optim.Optimizer, model: nn.Module | None, **kw: object) -> dict[str, EpsilonProbe]:
    return {
        m: EpsilonProbe(opt, model=model, schedule=every(1), steps_per_epoch=STEPS, method=m, **kw)  # type: ignore[arg-type]
        for m in ("histogram", "paper")
    }


def _train_model(step_opt: Callable[[], None], zero_grad: Callable[[], None], net: nn.Module) -> None:
    for x, y in _batches():
        zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        step_opt()


def _train_flat(param: nn.Parameter, opt: torch.optim.Optimizer, part: slice) -> None:
    for grad in _flat_grads():
        param.grad = grad[part].clone()
        opt.step()


def _reference_model() -> dict[str, EpsilonRange]:
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    probes = _probes(opt, model)
    _train_model(opt.step, opt.zero_grad, model)
    return {m: p.result() for m, p in probes.items()}


def _reference_dtensor() -> dict[str, EpsilonRange]:
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(11, 6))
    opt = torch.optim.Adam([w], lr=1e-2)
    probes = _probes(opt, None)
    for grad in _dtensor_grads():
        w.grad = grad
        opt.step()
    return {m: p.result() for m, p in probes.items()}


def _reference_flat() -> dict[str, EpsilonRange]:
    param = nn.Parameter(torch.zeros(FLAT))
    opt = torch.optim.Adam([param], lr=1e-2)
    probes = _probes(opt, None)
    _train_flat(param, opt, slice(None))
    return {m: p.result() for m, p in probes.items()}


# ---------------------------------------------------------------------------------------------- worker
def _save(out: Path, scenario: str, rank: int, probes: dict[str, EpsilonProbe]) -> None:
    for method, probe in probes.items():
        probe.result().to_json(out / f"{scenario}-{method}-rank{rank}.json")
        (out / f"{scenario}-mode-rank{rank}.txt").write_text(str(probe.distributed))


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    out = Path(out_dir)
    try:
        # DDP: replicated state; every rank trains on the same batches, so DDP's averaged gradient is bitwise
        # the single-process gradient ((g + g) / 2 == g) and the state equals the single-process state.
        model = _model()
        ddp = nn.parallel.DistributedDataParallel(model)
        opt = torch.optim.Adam(ddp.parameters(), lr=1e-2)
        probes = _probes(opt, model)
        _train_model(opt.step, opt.zero_grad, ddp)
        _save(out, "ddp", rank, probes)

        # ZeroRedundancyOptimizer: each rank holds the Adam state of some whole parameters.
        from torch.distributed.optim import ZeroRedundancyOptimizer

        model = _model()
        zero = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=torch.optim.Adam, lr=1e-2)
        probes = _probes(zero, model)
        _train_model(zero.step, zero.zero_grad, model)
        (out / f"zero-local-rank{rank}.txt").write_text(str(sum(p.numel() for p in zero.optim.state)))
        _save(out, "zero", rank, probes)

        # FSDP (v1) with use_orig_params=True: each rank holds a flat part of every parameter; detected as sharded.
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        model = _model()
        fsdp = FSDP(model, device_id=torch.device("cpu"), use_orig_params=True)
        opt = torch.optim.Adam(fsdp.parameters(), lr=1e-2)
        probes = _probes(opt, model)
        _train_model(opt.step, opt.zero_grad, fsdp)
        _save(out, "fsdp", rank, probes)

        # A hand-sharded flat parameter: each rank holds the Adam state of half of its elements.
        half = FLAT // WORLD
        param = nn.Parameter(torch.zeros(half))
        opt = torch.optim.Adam([param], lr=1e-2)
        probes = _probes(opt, None, distributed="sharded")
        _train_flat(param, opt, slice(rank * half, (rank + 1) * half))
        _save(out, "flat", rank, probes)

        # DTensor parameters (FSDP2's layout): 11 rows sharded 6 + 5 over the ranks; detected as sharded.
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.tensor import Shard, distribute_tensor

        mesh = init_device_mesh("cpu", (WORLD,))
        torch.manual_seed(0)
        w = nn.Parameter(distribute_tensor(torch.randn(11, 6), mesh, [Shard(0)]))
        opt = torch.optim.Adam([w], lr=1e-2)
        probes = _probes(opt, None)
        for grad in _dtensor_grads():
            w.grad = distribute_tensor(grad, mesh, [Shard(0)])
            opt.step()
        _save(out, "dtensor", rank, probes)

        # Names differ across ranks under distributed="replicated": a clear error on the rank that differs.
        lin = nn.Linear(3, 2) if rank == 0 else nn.Sequential(nn.Linear(3, 2))
        opt = torch.optim.Adam(lin.parameters())
        probe = EpsilonProbe(opt, model=lin, schedule=every(1), distributed="replicated")
        lin(torch.ones(1, 3)).sum().backward()
        try:
            opt.step()
            message = "no error"
        except RuntimeError as e:
            message = str(e)
        probe.detach()
        (out / f"mismatch-rank{rank}.txt").write_text(message)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    torch.multiprocessing.spawn(_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=True)
    return out


# ---------------------------------------------------------------------------------------------- checks
def assert_same(got: EpsilonRange, ref: EpsilonRange, *, flat: bool = False) -> None:
    assert (got.lower, got.upper, got.raw_lower, got.raw_upper) == (ref.lower, ref.upper, ref.raw_lower, ref.raw_upper)
    assert [ly.name for ly in got.layers] == [ly.name for ly in ref.layers]
    for a, b in zip(got.layers, ref.layers):
        shape = (math.prod(b.shape),) if flat else b.shape
        assert (a.name, a.shape, a.group, a.p_low, a.p_high) == (b.name, shape, b.group, b.p_low, b.p_high)
        assert a.histogram == b.histogram  # counts, zeros, negatives, non-finite: exactly
    assert got.skipped == ref.skipped
    assert [s.step for s in got.snapshots] == [s.step for s in ref.snapshots]
    for s, t in zip(got.snapshots, ref.snapshots):
        assert s.histograms == t.histograms


def _load(runs: Path, scenario: str, method: str, rank: int) -> EpsilonRange:
    return EpsilonRange.from_json(runs / f"{scenario}-{method}-rank{rank}.json")


@pytest.mark.parametrize("method", ["histogram", "paper"])
def test_ddp_equals_single_process(runs: Path, method: str) -> None:
    ref = _reference_model()[method]
    assert ref.histogram.zeros > 0  # the zero split is exercised
    for rank in range(WORLD):
        assert (runs / f"ddp-mode-rank{rank}.txt").read_text() == "replicated"
        assert_same(_load(runs, "ddp", method, rank), ref)


@pytest.mark.parametrize("method", ["histogram", "paper"])
def test_zero_redundancy_optimizer_equals_single_process(runs: Path, method: str) -> None:
    ref = _reference_model()[method]
    local = [int((runs / f"zero-local-rank{r}.txt").read_text()) for r in range(WORLD)]
    assert all(n > 0 for n in local) and sum(local) == sum(ly.numel for ly in ref.layers)  # really sharded
    for rank in range(WORLD):
        assert (runs / f"zero-mode-rank{rank}.txt").read_text() == "sharded"
        assert_same(_load(runs, "zero", method, rank), ref)


@pytest.mark.parametrize("method", ["histogram", "paper"])
def test_hand_sharded_flat_state_sums_to_global_histogram(runs: Path, method: str) -> None:
    ref = _reference_flat()[method]
    assert ref.histogram.zeros == 150
    for rank in range(WORLD):
        assert_same(_load(runs, "flat", method, rank), ref)


@pytest.mark.parametrize("method", ["histogram", "paper"])
def test_dtensor_parameters_sum_to_global_histogram(runs: Path, method: str) -> None:
    ref = _reference_dtensor()[method]
    assert ref.layers[0].shape == (11, 6) and ref.histogram.zeros == 12
    for rank in range(WORLD):
        assert (runs / f"dtensor-mode-rank{rank}.txt").read_text() == "sharded"
        assert_same(_load(runs, "dtensor", method, rank), ref)


@pytest.mark.parametrize("method", ["histogram", "paper"])
def test_fsdp_flat_parts_sum_to_global_histogram(runs: Path, method: str) -> None:
    ref = _reference_model()[method]
    for rank in range(WORLD):
        assert (runs / f"fsdp-mode-rank{rank}.txt").read_text() == "sharded"
        assert_same(_load(runs, "fsdp", method, rank), ref, flat=True)  # FSDP flattens: shapes are (numel,)


def test_replicated_names_must_agree(runs: Path) -> None:
    assert (runs / "mismatch-rank0.txt").read_text() == "no error"  # rank 0 is the reference
    message = (runs / "mismatch-rank1.txt").read_text()
    assert "same parameter tensors on every rank" in message and "distributed='sharded'" in message


def test_mode_validation_and_single_process() -> None:
    opt = torch.optim.Adam(nn.Linear(2, 2).parameters())
    with pytest.raises(ValueError, match=r"distributed=.*'shard'.*'replicated'"):
        EpsilonProbe(opt, distributed="shard")
    assert EpsilonProbe(opt).distributed is None  # auto without torch.distributed: no communication
    assert EpsilonProbe(opt, distributed="off").distributed is None
    assert EpsilonProbe(opt, distributed="sharded").distributed == "sharded"  # kept; inert in one process
    assert D.local_optimizer(opt) is opt


def test_json_roundtrip_is_exact_for_comparisons(tmp_path: Path) -> None:
    ref = _reference_flat()["paper"]
    ref.to_json(tmp_path / "r.json")
    assert_same(EpsilonRange.from_json(tmp_path / "r.json"), ref)
    assert json.loads((tmp_path / "r.json").read_text())["method"] == "paper"
