"""``EpsilonProbe``: watch an optimizer's adaptive term during training, read-only.

The probe registers a step post hook on the optimizer. After the steps its schedule picks it takes a
*snapshot*: for every parameter tensor with state, the adaptive term ``A`` (:mod:`epsfinder.terms`) is binned
into a :class:`~epsfinder.histogram.LogHistogram` on the state's own device, and with ``method="paper"`` the
exact 2nd/98th percentiles are taken by sorting as the authors do. Snapshots are kept so that the drift of ``A``
over training can be drawn; :meth:`EpsilonProbe.result` turns one into an :class:`~epsfinder.EpsilonRange`.

The hook runs under ``torch.no_grad()`` and never writes to parameters, gradients or optimizer state.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from epsfinder import _distributed
from epsfinder.errors import NoSnapshotError
from epsfinder.estimate import METHODS, EpsilonRange, LayerStats, SnapshotRecord, paper_percentiles
from epsfinder.histogram import _ALL, _NEG0, _TINY, LogHistogram, count_codes_
from epsfinder.terms import RESOLUTION, AdaptiveTerm, TermSpec, lookup

__all__ = ["EpsilonProbe", "Schedule", "Snapshot", "at_steps", "default_schedule", "every", "log_spaced", "per_epoch"]

log = logging.getLogger("epsfinder")

#: A schedule maps the probe's step count (1 after the first step) to whether to take a snapshot.
Schedule = Callable[[int], bool]


def every(n: int) -> Schedule:
    """Snapshot every ``n`` steps."""
    if n < 1:
        raise ValueError(f"every(n) needs n >= 1, got n={n}")
    return lambda step: step % n == 0


def at_steps(*steps: int) -> Schedule:
    """Snapshot at exactly these step counts."""
    chosen = frozenset(int(s) for s in steps)
    return lambda step: step in chosen


def log_spaced(start: int = 1, per_decade: int = 3) -> Schedule:
    """Snapshot at roughly log-spaced steps: 1, 2, 5, 10, 20, 50, ... for ``per_decade=3``."""
    mantissas = {1: [1], 2: [1, 3], 3: [1, 2, 5]}.get(per_decade)
    if mantissas is None:
        mantissas = sorted({round(10 ** (i / per_decade), 6) for i in range(per_decade)})

    def schedule(step: int) -> bool:
        if step < start:
            return False
        d = 10 ** math.floor(math.log10(step))
        return any(abs(step - m * d) < 0.5 for m in mantissas)

    return schedule


def per_epoch(steps_per_epoch: int, times: int = 4, *, epochs: int | None = None) -> Schedule:
    """Snapshot ``times`` times per epoch, evenly, the last at each epoch's end (optionally only ``epochs``)."""
    if steps_per_epoch < 1 or times < 1:
        raise ValueError(f"per_epoch needs steps_per_epoch >= 1 and times >= 1, got {steps_per_epoch}, {times}")
    marks = {max(1, round(steps_per_epoch * k / times)) for k in range(1, times + 1)}

    def schedule(step: int) -> bool:
        epoch, within = divmod(step - 1, steps_per_epoch)
        if epochs is not None and epoch >= epochs:
            return False
        return within + 1 in marks

    return schedule


def default_schedule(steps_per_epoch: int | None) -> Schedule:
    """Four snapshots per epoch (the last at the end of each epoch) when the epoch length is known, else
    log-spaced steps (1, 2, 5, 10, 20, ...)."""
    return per_epoch(steps_per_epoch, 4) if steps_per_epoch else log_spaced()


@dataclass
class Snapshot:
    """The adaptive term of every parameter tensor after one optimizer step."""

    step: int
    epoch: float | None
    layers: list[LayerStats]
    skipped: dict[str, str] = field(default_factory=dict)
    hyperparameters: dict[str, Any] = field(default_factory=dict)

    def histogram(self) -> LogHistogram:
        return LogHistogram.sum(ly.histogram for ly in self.layers)

    def record(self) -> SnapshotRecord:
        return SnapshotRecord(self.step, self.epoch, {ly.name: ly.histogram for ly in self.layers})


class EpsilonProbe:
    """Attach to an optimizer, snapshot its adaptive term on a schedule, and estimate ε's range.

    >>> model = nn.Linear(4, 2)
    >>> opt = torch.optim.Adam(model.parameters())
    >>> with EpsilonProbe(opt, model=model, schedule=every(1)) as probe:
    ...     model(torch.randn(8, 4)).pow(2).mean().backward()
    ...     opt.step()
    >>> probe.result().optimizer
    'adam'

    Args:
        optimizer: a supported optimizer (see :func:`epsfinder.supported_optimizers`, or register your own with
            :func:`epsfinder.register_term`).
        model: names tensors from ``model.named_parameters()``; without it tensors are named ``group{g}.param{i}``.
        schedule: step count → bool; default :func:`default_schedule` (four per epoch, or log-spaced).
        steps_per_epoch: batches per epoch, to date snapshots in epochs and to pick the end of the first epoch.
        method: ``"histogram"`` (streaming bins, default) or ``"paper"`` (also sort each tensor at each snapshot
            for the exact percentiles of the authors' calculator).
        percentiles: the low and high percentiles of Algorithm 2, in percent.
        max_snapshots: keep at most this many snapshots (oldest dropped, except the end of the first epoch).
        chunk: elements binned at a time; bounds the probe's extra memory.
        distributed: under ``torch.distributed``, how ranks combine their counts (one collective per snapshot):
            ``"replicated"`` (DDP: rank 0's counts are shared), ``"sharded"`` (FSDP, ZeroRedundancyOptimizer:
            counts are summed into the global histogram), None or ``"off"`` (none), or ``"auto"`` (detect; see
            :mod:`epsfinder._distributed`). Every rank gets the same result.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        model: nn.Module | None = None,
        *,
        schedule: Schedule | None = None,
        steps_per_epoch: int | None = None,
        method: str = "histogram",
        percentiles: tuple[float, float] = (2.0, 98.0),
        max_snapshots: int | None = 64,
        chunk: int | None = None,
        distributed: str | None = "auto",
    ) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"EpsilonProbe needs a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got method={method!r}")
        lo, hi = percentiles
        if not 0 <= lo < hi <= 100:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got percentiles={percentiles}")
        if steps_per_epoch is not None and steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got steps_per_epoch={steps_per_epoch}")
        self.distributed = _distributed.resolve_mode(distributed, optimizer)  # None, "replicated" or "sharded"
        outer, optimizer = optimizer, _distributed.local_optimizer(optimizer)  # ZeRO: this rank's optimizer
        self.spec: TermSpec = lookup(optimizer)  # raises UnsupportedOptimizerError with the supported list
        self.optimizer = optimizer
        self.method = method
        self.percentiles = (float(lo), float(hi))
        self.steps_per_epoch = steps_per_epoch
        self.schedule = schedule if schedule is not None else default_schedule(steps_per_epoch)
        self.max_snapshots = max_snapshots
        self.chunk = chunk
        self.steps = 0
        self.snapshots: list[Snapshot] = []
        self._names = _parameter_names(outer, model)
        self._warned: set[str] = set()
        self._nonzero: dict[int, torch.Tensor] = {}
        self._handle = optimizer.register_step_post_hook(self._hook)

    # ------------------------------------------------------------------ lifecycle
    def detach(self) -> None:
        """Remove the hook; the probe keeps its snapshots. Safe to call twice."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    @property
    def attached(self) -> bool:
        return self._handle is not None

    def __enter__(self) -> EpsilonProbe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def _hook(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self.steps += 1
        if self.schedule(self.steps):
            self.snapshot()

    # ------------------------------------------------------------------ snapshots
    @property
    def epoch(self) -> float | None:
        return self.steps / self.steps_per_epoch if self.steps_per_epoch else None

    def snapshot(self) -> Snapshot:
        """Take a snapshot of the adaptive term now (on demand, or from the hook) and keep it."""
        with torch.no_grad():
            snap = self._take()
        self.snapshots.append(snap)
        self._trim()
        self._report(snap)
        return snap

    def _trim(self) -> None:
        if self.max_snapshots is None or len(self.snapshots) <= self.max_snapshots:
            return
        first_end = self._first_epoch_end()
        for i, s in enumerate(self.snapshots):
            if s is not first_end:
                del self.snapshots[i]
                return

    def _entries(self) -> Iterable[tuple[str, int, torch.Tensor, AdaptiveTerm | None]]:
        opt = self.optimizer
        for gi, group in enumerate(opt.param_groups):
            for pi, p in enumerate(group["params"]):
                name = self._names.get(id(p), f"group{gi}.param{pi}")
                if p.grad is not None and p.grad.is_sparse:
                    raise ValueError(
                        f"parameter {name!r} has a sparse gradient; sparse gradients are not supported "
                        "(use a dense embedding: nn.Embedding(..., sparse=False))"
                    )
                state = opt.state.get(p)
                term = self.spec.term(state, group) if state else None
                yield name, gi, p, term

    def _take(self) -> Snapshot:
        self._nonzero = {}  # per term, filled by _device_codes for _zero_split
        skipped: dict[str, str] = {}
        pending: list[tuple[str, int, torch.Tensor, AdaptiveTerm]] = []
        for name, gi, p, term in self._entries():
            if term is None:
                skipped[name] = "no optimizer state yet (no gradient so far, or frozen)"
                continue
            if any(t.is_sparse for t in term.inputs):
                raise ValueError(f"optimizer state of {name!r} is sparse; sparse state is not supported")
            pending.append((name, gi, p, term))

        # Bin every tensor on its device, then one transfer of all counts (one collective across ranks).
        layers: list[LayerStats] = []
        for b in _distributed.bin_layers(self, pending, skipped):
            name = b.name
            hist = LogHistogram.from_device_counts(b.counts, exact_zeros=b.zeros, tiny_positive=b.tiny)
            if hist.positive == 0:
                skipped[name] = (
                    "all adaptive terms are zero" if hist.nonfinite == 0 else "no finite non-zero adaptive term"
                )
                continue
            if self.method == "paper":
                values, _ = paper_percentiles(b.full(), self.percentiles)
                p_low, p_high = values
            else:
                p_low, p_high = (float(v) for v in hist.quantile([x / 100 for x in self.percentiles]))
            layers.append(LayerStats(name, b.shape, b.group, p_low, p_high, hist))
        return Snapshot(self.steps, self.epoch, layers, skipped, self._hyperparameters())

    def _chunk_size(self, numel: int) -> int:
        if self.chunk is not None:
            return max(1, self.chunk)
        return int(min(1 << 20, max(1 << 16, numel // 32)))

    def _device_codes(self, term: AdaptiveTerm) -> torch.Tensor:
        """The 32,768 code counts of ``term`` on its device; also counts its non-zero values (kept on the device
        for :meth:`_zero_split`), one cheap pass over each chunk while it is in cache."""
        total = torch.zeros(_ALL, dtype=torch.int64, device=term.device)
        nonzero = torch.zeros((), dtype=torch.int64, device=term.device)
        for part in term.chunks(self._chunk_size(term.numel)):
            nonzero += torch.count_nonzero(part)
            total += count_codes_(part)  # the chunk buffer is ours to overwrite
        self._nonzero[id(term)] = nonzero
        return total

    def _zero_split(self, term: AdaptiveTerm, codes: torch.Tensor | None = None) -> tuple[int, int]:
        """Exact zeros and positive values below ``2^-132`` (both land in the zero codes).

        With the term's ``codes`` and the non-zero count from :meth:`_device_codes` this is arithmetic; only when
        some values are that tiny (almost never) is ``A`` recomputed to tell their signs.
        """
        nonzero = self._nonzero.pop(id(term), None)
        if nonzero is not None and codes is not None:
            zeros = term.numel - int(nonzero)
            if int(codes[0]) + int(codes[_NEG0]) == zeros:  # no tiny values at all
                return zeros, 0
        zeros = tiny = 0
        for part in term.chunks(self._chunk_size(term.numel)):
            zeros += int((part == 0).sum())
            tiny += int(((part > 0) & (part < _TINY)).sum())
        return zeros, tiny

    def _hyperparameters(self) -> dict[str, Any]:
        g = self.optimizer.param_groups[0]
        out: dict[str, Any] = {}
        for key in ("lr", "eps", "betas", "alpha", "weight_decay", "momentum", "amsgrad", "centered"):
            if key in g:
                v = g[key]
                out[key] = v.item() if isinstance(v, torch.Tensor) else (list(v) if isinstance(v, tuple) else v)
        return out

    def _report(self, snap: Snapshot) -> None:
        bad = {ly.name: ly.histogram.nonfinite for ly in snap.layers if ly.histogram.nonfinite}
        if bad and "nonfinite" not in self._warned:
            self._warned.add("nonfinite")
            warnings.warn(
                f"non-finite values (inf/NaN) in the optimizer state were excluded at step {snap.step}: {bad}; "
                "they are counted per layer in the result (LayerStats.histogram.nonfinite)",
                RuntimeWarning,
                stacklevel=4,
            )
        eps = float(self.optimizer.param_groups[0].get("eps", 0.0))
        if self.spec.eps_in_state and eps > 0 and snap.layers and "cancel" not in self._warned:
            low = min(ly.p_low for ly in snap.layers)
            if low < 100 * RESOLUTION * eps:
                self._warned.add("cancel")
                warnings.warn(
                    f"{self.spec.name} adds ε into its state every step; removing it again resolves the adaptive "
                    f"term only down to {RESOLUTION:g}·ε = {RESOLUTION * eps:.1e} (smaller values count as zeros), "
                    f"and the lowest percentile {low:.2e} is within 100× of that floor, so it may be off by more "
                    f"than 1 %. Probe with a smaller ε (ε={eps:g} now; the estimate itself does not depend on ε).",
                    RuntimeWarning,
                    stacklevel=4,
                )

    # ------------------------------------------------------------------ results
    def _first_epoch_end(self) -> Snapshot | None:
        if not self.steps_per_epoch:
            return None
        for s in self.snapshots:
            if s.step == self.steps_per_epoch:
                return s
        return None

    def result(self, snapshot: Snapshot | int | None = None) -> EpsilonRange:
        """The :class:`EpsilonRange` of one snapshot.

        Args:
            snapshot: a :class:`Snapshot`, an index into :attr:`snapshots`, or None for the paper's choice: the
                snapshot at the end of the first epoch when there is one, else the latest.

        Raises:
            NoSnapshotError: no snapshot has been taken yet.
        """
        if not self.snapshots:
            raise NoSnapshotError(
                f"no snapshot exists yet (the probe has seen {self.steps} optimizer steps): train a step, or call "
                "probe.snapshot() after a step"
            )
        if snapshot is None:
            snap = self._first_epoch_end() or self.snapshots[-1]
        elif isinstance(snapshot, int):
            snap = self.snapshots[snapshot]
        else:
            snap = snapshot
        name = self.spec.name
        hp = snap.hyperparameters
        if hp.get("amsgrad"):
            name += "-amsgrad"
        if hp.get("centered"):
            name += "-centered"
        return EpsilonRange.from_layers(
            snap.layers,
            optimizer=name,
            family=self.spec.family,
            method=self.method,
            percentiles=self.percentiles,
            skipped=dict(snap.skipped),
            step=snap.step,
            epoch=snap.epoch,
            steps_per_epoch=self.steps_per_epoch,
            hyperparameters=dict(hp),
            snapshots=[s.record() for s in self.snapshots],
        )

    def __repr__(self) -> str:
        state = "attached" if self.attached else "detached"
        return (
            f"EpsilonProbe({type(self.optimizer).__name__}, term={self.spec.name!r}, method={self.method!r}, "
            f"steps={self.steps}, snapshots={len(self.snapshots)}, {state})"
        )


def _parameter_names(optimizer: torch.optim.Optimizer, model: nn.Module | None) -> dict[int, str]:
    names: dict[int, str] = {}
    if model is not None:
        for n, p in model.named_parameters():
            names.setdefault(id(p), n)
    for gi, group in enumerate(optimizer.param_groups):
        for pi, p in enumerate(group["params"]):
            names.setdefault(id(p), f"group{gi}.param{pi}")
    return names
