"""The probe under ``torch.distributed``: one collective per snapshot, so that every rank sees the global histogram.

Two situations, told apart by ``EpsilonProbe(..., distributed=...)``:

* ``"replicated"`` (DDP, and plain data parallelism): every rank holds the full optimizer state, and the replicas
  are identical (DDP averages the gradients before every step). Counting on every rank and summing would count
  every element ``world_size`` times, so instead rank 0's counts are **broadcast** (one ``broadcast`` per
  snapshot) and every rank builds its result from them: the result is exactly rank 0's, which is exactly the
  single-process result. Each rank compares rank 0's counts with its own and warns once if its replica has
  diverged; the names and sizes of the tensors must agree across ranks (checked; a clear error otherwise).
* ``"sharded"`` (FSDP, ``ZeroRedundancyOptimizer``, DTensor parameters): each rank holds a part of the state,
  so the counts are **summed** (one ``all_reduce`` per snapshot, after one small ``all_gather_object`` of the
  layer names, since ranks may hold different tensors). The result is the exact global histogram. A tensor
  held in parts by several ranks (an FSDP flat parameter, a DTensor) is one layer whose counts are the sum of
  its parts. ``method="paper"`` needs every element of a tensor to sort: each layer's ``A`` is gathered onto
  every rank, one layer at a time (memory: world size × the largest part of one layer); prefer
  ``method="histogram"`` at scale.

``distributed="auto"`` (the default) picks ``None`` (no communication) when ``torch.distributed`` is not
initialized or has one process, ``"sharded"`` for a ``ZeroRedundancyOptimizer`` or parameters that FSDP
flattened or that are DTensors, and ``"replicated"`` otherwise. Every rank ends with the same snapshot, so
``probe.result()`` is the same on every rank; the integrations write files and log on rank 0 only.

The probe's snapshot schedule is a function of the step count, identical on every rank, so every rank enters
the collectives at the same optimizer step.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from epsfinder.histogram import _ALL, _NEG0
from epsfinder.terms import AdaptiveTerm

if TYPE_CHECKING:
    from epsfinder.probe import EpsilonProbe

__all__ = ["MODES", "BinnedLayer", "bin_layers", "local_optimizer", "resolve_mode"]

log = logging.getLogger("epsfinder")

#: Accepted values of ``EpsilonProbe(distributed=...)`` (None means no communication, like ``"off"``).
MODES: tuple[str, ...] = ("auto", "replicated", "sharded", "off")

# Extra int64 columns after the 32,768 code counts of each layer in the collective.
_ZEROS, _TINY_COL, _NAME, _NUMEL = _ALL, _ALL + 1, _ALL + 2, _ALL + 3


@dataclass
class BinnedLayer:
    """One layer's counts after the (optional) collective, ready for :meth:`LogHistogram.from_device_counts`.

    Attributes:
        name: the parameter's name; group: its param group index; shape: the full tensor's shape.
        counts: the 32,768 code counts, on the CPU.
        zeros, tiny: exact zeros and positive values below ``2^-132`` among the zero-bin counts, or None when the
            zero bin is empty (then there is nothing to split).
        full: returns the whole flat ``A`` of the layer (gathered from all ranks under sharding), for
            ``method="paper"``; under sharding a collective: every rank must call it for the same layers.
    """

    name: str
    group: int
    shape: tuple[int, ...]
    counts: torch.Tensor
    zeros: int | None
    tiny: int | None
    full: Callable[[], torch.Tensor]


Pending = Sequence[tuple[str, int, torch.Tensor, AdaptiveTerm]]


# ---------------------------------------------------------------------------------------------- modes
def _dist() -> Any:
    import torch.distributed as dist

    return dist


def _world_size() -> int:
    dist = _dist()
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return int(dist.get_world_size())


def _zero_class() -> type | None:
    try:
        from torch.distributed.optim import ZeroRedundancyOptimizer
    except ImportError:  # pragma: no cover - torch built without distributed
        return None
    return ZeroRedundancyOptimizer


def _dtensor_class() -> type | None:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - old torch or no distributed
        return None
    return DTensor


def _is_sharded_param(p: torch.Tensor, dtensor: type | None) -> bool:
    if dtensor is not None and isinstance(p, dtensor):
        return True
    # FSDP (v1) marks its FlatParameters and the original parameters viewing into their shards.
    return bool(getattr(p, "_fsdp_flattened", False) or getattr(p, "_is_flat_param", False))


def resolve_mode(distributed: str | None, optimizer: torch.optim.Optimizer) -> str | None:
    """Validate ``distributed`` and resolve ``"auto"``: returns None, ``"replicated"`` or ``"sharded"``.

    Raises:
        ValueError: ``distributed`` is not one of :data:`MODES` or None.
    """
    if distributed is not None and distributed not in MODES:
        raise ValueError(
            f"distributed must be one of {MODES} or None, got distributed={distributed!r}: use 'auto' to detect, "
            "'replicated' when every rank holds the full optimizer state (DDP), 'sharded' when each rank holds a "
            "part of it (FSDP, ZeroRedundancyOptimizer), None or 'off' for no communication"
        )
    if distributed in (None, "off"):
        return None
    if distributed != "auto":
        return distributed
    if _world_size() <= 1:
        return None
    zero = _zero_class()
    if zero is not None and isinstance(optimizer, zero):
        return "sharded"
    dtensor = _dtensor_class()
    for group in optimizer.param_groups:
        if any(_is_sharded_param(p, dtensor) for p in group["params"]):
            return "sharded"
    return "replicated"


def local_optimizer(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The optimizer that holds this rank's state: a ``ZeroRedundancyOptimizer``'s local ``optim``, else itself."""
    zero = _zero_class()
    if zero is None or not isinstance(optimizer, zero):
        return optimizer
    inner = getattr(optimizer, "optim", None)
    if not isinstance(inner, torch.optim.Optimizer):
        raise ValueError(
            "this ZeroRedundancyOptimizer has no local optimizer yet (overlap_with_ddp=True builds it after the "
            "first DDP buckets); create the EpsilonProbe after the first training step, or use "
            "overlap_with_ddp=False"
        )
    return inner


# ---------------------------------------------------------------------------------------------- binning
def bin_layers(probe: EpsilonProbe, pending: Pending, skipped: dict[str, str]) -> list[BinnedLayer]:
    """Bin each pending layer's ``A`` on its device, combine across ranks as ``probe.distributed`` says, and
    bring the counts to the CPU (one transfer per layer, one collective per snapshot).

    ``skipped`` is updated in place under sharding: a layer is skipped only if no rank holds it.
    """
    mode = getattr(probe, "distributed", None)
    if mode is None or _world_size() <= 1:
        return _bin_local(probe, pending)
    if mode == "replicated":
        return _bin_replicated(probe, pending)
    return _bin_sharded(probe, pending, skipped)


def _bin_local(probe: EpsilonProbe, pending: Pending) -> list[BinnedLayer]:
    codes = [probe._device_codes(term) for _, _, _, term in pending]
    host = [c.to("cpu") for c in codes]
    out = []
    for (name, gi, p, term), c in zip(pending, host):
        zeros = tiny = None
        if int(c[0]) + int(c[_NEG0]) > 0:  # rare: tell exact zeros from values below 2^-132
            zeros, tiny = probe._zero_split(term, c)
        out.append(BinnedLayer(name, gi, tuple(p.shape), c, zeros, tiny, term.full))
    return out


def _name_code(name: str) -> int:
    """A stable 63-bit fingerprint of a name (Python's ``hash`` differs between processes)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little") >> 1


def _comm_device(fallback: torch.device | None) -> torch.device:
    dist = _dist()
    if dist.get_backend() == "nccl":
        if fallback is not None and fallback.type == "cuda":
            return fallback
        return torch.device("cuda", torch.cuda.current_device())
    return fallback if fallback is not None else torch.device("cpu")


def _rows(probe: EpsilonProbe, terms: Sequence[AdaptiveTerm], device: torch.device) -> torch.Tensor:
    """Each term's codes plus exact-zero and tiny-positive counts, as an ``(n, _ALL + 4)`` int64 tensor."""
    rows = torch.zeros((len(terms), _ALL + 4), dtype=torch.int64, device=device)
    for i, term in enumerate(terms):
        rows[i, :_ALL] = probe._device_codes(term).to(device)
    if terms:
        zero_bin = (rows[:, 0] + rows[:, _NEG0]).cpu()
        for i in torch.nonzero(zero_bin).flatten().tolist():
            zeros, tiny = probe._zero_split(terms[i], rows[i, :_ALL])
            rows[i, _ZEROS] = zeros
            rows[i, _TINY_COL] = tiny
    return rows


def _split(row: torch.Tensor) -> tuple[int | None, int | None]:
    if int(row[0]) + int(row[_NEG0]) == 0:
        return None, None
    return int(row[_ZEROS]), int(row[_TINY_COL])


def _bin_replicated(probe: EpsilonProbe, pending: Pending) -> list[BinnedLayer]:
    dist = _dist()
    terms = [term for _, _, _, term in pending]
    if not terms:  # nothing has state yet; the replicas agree on that (same parameters, same gradients)
        return []
    device = _comm_device(terms[0].device if terms else None)
    rows = _rows(probe, terms, device)
    for i, (name, _, _, term) in enumerate(pending):
        rows[i, _NAME] = _name_code(name)
        rows[i, _NUMEL] = term.numel
    mine = rows.clone()
    dist.broadcast(rows, src=0)
    host = rows.cpu()
    if not torch.equal(host[:, _NAME:], mine[:, _NAME:].cpu()):
        raise RuntimeError(
            f"distributed='replicated' needs the same parameter tensors on every rank, but rank {dist.get_rank()} "
            f"holds {[(n, t.numel) for n, _, _, t in pending]}, which differ from rank 0's (by name or size); if "
            "each rank holds a part of the optimizer state, use distributed='sharded'"
        )
    if not torch.equal(host[:, :_NAME], mine[:, :_NAME].cpu()) and "diverged" not in probe._warned:
        probe._warned.add("diverged")
        log.warning(
            "epsfinder: at step %d the optimizer state on rank %d differs from rank 0's; the replicas have "
            "diverged, and the result uses rank 0's state",
            probe.steps,
            dist.get_rank(),
        )
    out = []
    for (name, gi, p, term), row in zip(pending, host):
        zeros, tiny = _split(row)
        out.append(BinnedLayer(name, gi, tuple(p.shape), row[:_ALL].clone(), zeros, tiny, term.full))
    return out


def _localize(term: AdaptiveTerm, dtensor: type | None) -> AdaptiveTerm | None:
    """This rank's part of a term whose inputs are DTensors (None when a replica on another rank counts it)."""
    if dtensor is None or not any(isinstance(t, dtensor) for t in term.inputs):
        return term
    first = next(t for t in term.inputs if isinstance(t, dtensor))
    coord = first.device_mesh.get_coordinate() or []
    for dim, placement in enumerate(first.placements):
        if placement.is_partial():
            raise ValueError(f"optimizer state with a Partial placement {first.placements} cannot be binned")
        if placement.is_replicate() and dim < len(coord) and coord[dim] != 0:
            return None  # a replicated mesh dimension: count only the copy at coordinate 0
    return AdaptiveTerm(tuple(t.to_local() if isinstance(t, dtensor) else t for t in term.inputs), term.op)


def _bin_sharded(probe: EpsilonProbe, pending: Pending, skipped: dict[str, str]) -> list[BinnedLayer]:
    dist = _dist()
    world = dist.get_world_size()
    dtensor = _dtensor_class()
    position = {name: i for i, name in enumerate(probe._names.values())}
    local: list[tuple[str, int, torch.Tensor, AdaptiveTerm]] = []
    meta: list[tuple[str, int, int, tuple[int, ...], int, bool]] = []
    for name, gi, p, term in pending:
        part = _localize(term, dtensor)
        if part is None:
            continue
        is_dt = dtensor is not None and isinstance(p, dtensor)
        local.append((name, gi, p, part))
        meta.append((name, position.get(name, len(position)), gi, tuple(p.shape), part.numel, is_dt))

    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, (meta, dict(skipped)))

    # The union of every rank's layers, in the parameters' order; a layer's parts may sit on several ranks.
    holders: dict[str, list[tuple[int, tuple[str, int, int, tuple[int, ...], int, bool]]]] = {}
    for r, (rank_meta, _) in enumerate(gathered):
        for m in rank_meta:
            holders.setdefault(m[0], []).append((r, m))
    names = sorted(holders, key=lambda n: (min(m[1] for _, m in holders[n]), n))
    index = {n: i for i, n in enumerate(names)}

    device = _comm_device(local[0][3].device if local else None)
    rows = torch.zeros((len(names), _ALL + 4), dtype=torch.int64, device=device)
    if local:
        mine = _rows(probe, [t for _, _, _, t in local], device)
        rows.index_copy_(0, torch.tensor([index[n] for n, _, _, _ in local], device=device), mine)
    if names:
        dist.all_reduce(rows, op=dist.ReduceOp.SUM)
    host = rows.cpu()

    skipped.clear()
    for _, rank_skipped in gathered:
        skipped.update({k: v for k, v in rank_skipped.items() if k not in holders})

    terms = {name: term for name, _, _, term in local}
    out = []
    for name, row in zip(names, host):
        held = holders[name]
        _, (_, _, gi, shape, _, is_dt) = held[0]
        sizes = [0] * world
        for r, m in held:
            sizes[r] = m[4]
        if not (len(held) == 1 or is_dt):
            shape = (sum(sizes),)  # parts of one flat tensor (FSDP flat parameters, hand-made shards)
        zeros, tiny = _split(row)
        out.append(
            BinnedLayer(name, gi, shape, row[:_ALL].clone(), zeros, tiny, _gatherer(terms.get(name), sizes, device))
        )
    return out


def _gatherer(term: AdaptiveTerm | None, sizes: list[int], device: torch.device) -> Callable[[], torch.Tensor]:
    """A function gathering one layer's whole flat ``A`` from its parts on every rank (a collective)."""

    def full() -> torch.Tensor:
        dist = _dist()
        part = term.full().to(device) if term is not None else torch.empty(0, dtype=torch.float32, device=device)
        owners = [r for r, n in enumerate(sizes) if n > 0]
        if len(owners) == 1:  # the whole tensor is on one rank: broadcast it
            mine = dist.get_rank() == owners[0]
            buf = part if mine else torch.empty(sizes[owners[0]], dtype=part.dtype, device=device)
            dist.broadcast(buf, src=owners[0])
            return buf
        longest = max(sizes) if sizes else 0
        padded = torch.zeros(longest, dtype=part.dtype, device=device)
        padded[: part.numel()] = part
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)
        return torch.cat([t[:n] for t, n in zip(parts, sizes)])

    return full
