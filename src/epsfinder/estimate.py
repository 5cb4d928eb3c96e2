"""Algorithm 2 of the paper as arithmetic, and its result, :class:`EpsilonRange`.

From the adaptive term ``A`` of every parameter tensor at one snapshot (the last step of the first epoch), take
per tensor the 2nd and 98th percentiles of the non-zero values; the range is

    lower = 10^round(log10(min over tensors of P2)),   upper = 10^round(log10(max over tensors of P98))

with Python's ``round`` (ties to even), NOTES §2. ``method="paper"`` takes the percentiles as the authors do: drop
exact zeros, sort, take the elements at ``floor(0.02·n)`` and ``floor(0.98·n)``. ``method="histogram"`` reads the
same ranks from the streaming :class:`~epsfinder.histogram.LogHistogram` (within 0.78 %).

This module is pure arithmetic on tensors and histograms: it knows nothing of optimizers or training.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from epsfinder.histogram import LogHistogram

__all__ = [
    "EpsilonRange",
    "LayerStats",
    "Recommendation",
    "SnapshotRecord",
    "paper_percentiles",
    "round_to_power_of_ten",
]

Method = Literal["paper", "histogram"]
METHODS: tuple[str, ...] = ("paper", "histogram")
SCHEMA_VERSION = 1


def round_to_power_of_ten(x: float) -> float:
    """``10 ** round(log10(x))`` with Python's ``round`` (ties to even), as the authors' calculator does."""
    if not (x > 0 and math.isfinite(x)):
        raise ValueError(f"a bound must be positive and finite to round to a power of ten, got {x!r}")
    return 10.0 ** round(math.log10(x))


def paper_percentiles(a: torch.Tensor, percentiles: Sequence[float] = (2.0, 98.0)) -> tuple[list[float], int]:
    """The authors' per-tensor percentiles: drop exact zeros, sort ascending, take index ``floor(p/100·n)``.

    Non-finite values are excluded too (the authors' code would sort them to the end; we count them apart).

    Args:
        a: the adaptive term of one tensor (any shape).
        percentiles: in percent, e.g. ``(2, 98)``.

    Returns:
        ``(values, n)``: the selected elements (as Python floats of the tensor's dtype) and the number ``n`` of
        non-zero finite elements; ``values`` is empty when ``n == 0``.
    """
    flat = a.detach().reshape(-1)
    keep = flat[(flat != 0) & torch.isfinite(flat)]
    n = keep.numel()
    if n == 0:
        return [], 0
    ordered = torch.sort(keep).values
    return [float(ordered[math.floor(p / 100 * n)]) for p in percentiles], n


@dataclass
class LayerStats:
    """One parameter tensor at one snapshot: its name, percentiles of ``A`` and the histogram of ``A``."""

    name: str
    shape: tuple[int, ...]
    group: int
    p_low: float
    p_high: float
    histogram: LogHistogram

    @property
    def numel(self) -> int:
        return self.histogram.total

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "group": self.group,
            "numel": self.numel,
            "p_low": self.p_low,
            "p_high": self.p_high,
            "zeros": self.histogram.zeros,
            "negative": self.histogram.negative,
            "nonfinite": self.histogram.nonfinite,
            "histogram": self.histogram.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LayerStats:
        return cls(
            name=d["name"],
            shape=tuple(d["shape"]),
            group=int(d["group"]),
            p_low=float(d["p_low"]),
            p_high=float(d["p_high"]),
            histogram=LogHistogram.from_dict(d["histogram"]),
        )


@dataclass
class SnapshotRecord:
    """A compact record of one snapshot (step, epoch, per-layer histograms), kept to draw ``A`` over time."""

    step: int
    epoch: float | None
    histograms: dict[str, LogHistogram]

    def total(self) -> LogHistogram:
        return LogHistogram.sum(self.histograms.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "histograms": {k: h.to_dict() for k, h in self.histograms.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SnapshotRecord:
        return cls(
            int(d["step"]),
            None if d.get("epoch") is None else float(d["epoch"]),
            {k: LogHistogram.from_dict(h) for k, h in d["histograms"].items()},
        )


@dataclass(frozen=True)
class Recommendation:
    """What the paper advises for a range (NOTES §4).

    Attributes:
        eps_lower, eps_upper: the two ends to try (the paper: try only these, then tune α for each).
        sgd_lr: at the upper end the optimizer ≈ ``torch.optim.SGD(momentum=β1)`` with this learning rate
            (``(1 − β1)·α/ε`` for magnitude terms, ``(1 − β1)·α·sqrt((1 − β2)/ε)`` for squared terms, see
            :func:`sgd_equivalent_lr`); None without a learning rate.
        beta2: at the lower (adaptive) end, the smallest ``1 − 10^-k`` with ``1/(1 − β2)`` ≥ batches per epoch;
            None when the number of batches is unknown.
        notes: the advice as sentences.
    """

    eps_lower: float
    eps_upper: float
    lr: float | None
    sgd_lr: float | None
    beta2: float | None
    notes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "eps_lower": self.eps_lower,
            "eps_upper": self.eps_upper,
            "lr": self.lr,
            "sgd_lr": self.sgd_lr,
            "beta2": self.beta2,
            "notes": list(self.notes),
        }


def sgd_equivalent_lr(
    lr: float, eps: float, family: str = "magnitude", *, beta1: float = 0.9, beta2: float = 0.999
) -> float:
    """The learning rate of ``torch.optim.SGD(momentum=β1)`` that an optimizer at large ε approaches (NOTES §1, §4).

    With ε ≫ A the step is ``α·m̂/ε`` (magnitude terms) or ``α·m̂·sqrt((1 − β2)/ε)`` (squared terms), where ``m̂`` is
    an *average* of gradients. torch's SGD momentum buffer is a *sum* (``b = β1·b + g``, about ``g/(1 − β1)``), so
    the matching SGD learning rate carries a factor ``1 − β1``: ``(1 − β1)·α/ε``. (The paper's "SGD at α/ε" is the
    same optimizer written with dampening = β1, i.e. ``SGD(momentum=β1, dampening=β1, lr=α/ε)``.)
    """
    if eps <= 0:
        raise ValueError(f"eps must be positive, got eps={eps}")
    scale = math.sqrt((1.0 - beta2) / eps) if family == "squared" else 1.0 / eps
    return (1.0 - beta1) * float(lr) * scale


def beta2_for_batches(batches: int) -> float:
    """The smallest ``β2 = 1 − 10^-k`` whose horizon ``1/(1 − β2)`` covers ``batches`` (NOTES §4)."""
    if batches < 1:
        raise ValueError(f"batches per epoch must be at least 1, got {batches}")
    k = max(1, math.ceil(math.log10(batches)))
    return round(1.0 - 10.0**-k, k)


@dataclass
class EpsilonRange:
    """The estimated search range for ε, with the per-layer data behind it.

    Attributes:
        lower, upper: the bounds rounded to powers of ten (Algorithm 2).
        raw_lower, raw_upper: the lowest per-layer low percentile and the highest per-layer high percentile.
        optimizer: the optimizer's registry name (e.g. ``"adam"``); family: ``"magnitude"`` or ``"squared"``.
        method: ``"paper"`` (exact sort) or ``"histogram"`` (streaming bins).
        layers: one :class:`LayerStats` per parameter tensor with a non-zero term.
        skipped: ``{name: reason}`` for tensors left out (no state yet, all terms zero, ...).
        step, epoch, steps_per_epoch: when the snapshot was taken.
        hyperparameters: ``lr``, ``eps``, ``betas`` of the first param group at that time.
        snapshots: compact records of every snapshot the probe kept (to draw ``A`` over time).
    """

    lower: float
    upper: float
    raw_lower: float
    raw_upper: float
    optimizer: str
    family: str
    method: str
    layers: list[LayerStats]
    percentiles: tuple[float, float] = (2.0, 98.0)
    skipped: dict[str, str] = field(default_factory=dict)
    step: int | None = None
    epoch: float | None = None
    steps_per_epoch: int | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    snapshots: list[SnapshotRecord] = field(default_factory=list)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_layers(
        cls,
        layers: Sequence[LayerStats],
        *,
        optimizer: str,
        family: str,
        method: str,
        percentiles: tuple[float, float] = (2.0, 98.0),
        **kwargs: Any,
    ) -> EpsilonRange:
        """Algorithm 2's reduction: min of the low percentiles, max of the high ones, rounded to powers of ten."""
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got method={method!r}")
        usable = [ly for ly in layers if math.isfinite(ly.p_low) and math.isfinite(ly.p_high)]
        if not usable:
            skipped = kwargs.get("skipped") or {}
            raise ValueError(
                "no parameter tensor has a non-zero adaptive term, so no range can be estimated"
                + (f" (skipped: {skipped})" if skipped else "")
                + "; check that the optimizer has stepped with non-zero gradients"
            )
        raw_lower = min(ly.p_low for ly in usable)
        raw_upper = max(ly.p_high for ly in usable)
        return cls(
            lower=round_to_power_of_ten(raw_lower),
            upper=round_to_power_of_ten(raw_upper),
            raw_lower=raw_lower,
            raw_upper=raw_upper,
            optimizer=optimizer,
            family=family,
            method=method,
            layers=list(layers),
            percentiles=percentiles,
            **kwargs,
        )

    # ------------------------------------------------------------------ queries
    @property
    def histogram(self) -> LogHistogram:
        """All layers' histograms merged."""
        return LogHistogram.sum(ly.histogram for ly in self.layers)

    @property
    def nonfinite(self) -> int:
        return sum(ly.histogram.nonfinite for ly in self.layers)

    def layer(self, name: str) -> LayerStats:
        for ly in self.layers:
            if ly.name == name:
                return ly
        raise KeyError(f"no layer named {name!r}; layers: {[ly.name for ly in self.layers]}")

    def grid(self, step: float | None = None) -> list[float]:
        """Every ``step``-th power between ``lower`` and ``upper``, both included.

        ``step`` defaults to 10 for magnitude terms and 100 for squared terms (whose range spans twice the
        decades). The upper end is always included, even when the span is not a whole number of steps.
        """
        step = step if step is not None else (100.0 if self.family == "squared" else 10.0)
        if not step > 1:
            raise ValueError(f"grid step must be > 1, got step={step}")
        k = math.log10(step)
        lo, hi = round(math.log10(self.lower)), round(math.log10(self.upper))
        n = math.floor((hi - lo) / k + 1e-9)
        exps = [lo + i * k for i in range(n + 1)]
        if abs(exps[-1] - hi) > 1e-9:
            exps.append(hi)
        return [float(10.0 ** round(e, 9)) if float(e).is_integer() else float(10.0**e) for e in exps]

    def fraction_above(self, eps: float, *, per_layer: bool = False) -> float | dict[str, float]:
        """Share of elements with ``A > eps`` (the adaptability level at that ε), overall or per layer.

        Zeros count as not above; non-finite values are excluded. From the histograms: exact when ``eps`` is a
        bin edge, else within the share of one bin (width ≤ 1/64 of its edge).
        """
        if per_layer:
            return {ly.name: ly.histogram.fraction_above(eps) for ly in self.layers}
        return self.histogram.fraction_above(eps)

    def adaptability_table(self, eps_values: Iterable[float] | None = None) -> list[dict[str, Any]]:
        """Table II analogue: for each ε, the share above it overall and per layer (rows of dicts)."""
        eps_values = list(eps_values) if eps_values is not None else self.grid()
        rows = []
        for e in eps_values:
            row: dict[str, Any] = {"eps": e, "overall": self.fraction_above(e)}
            row.update(self.fraction_above(e, per_layer=True))  # type: ignore[arg-type]
            rows.append(row)
        return rows

    def recommend(self, lr: float | None = None, batches_per_epoch: int | None = None) -> Recommendation:
        """The paper's advice: the two ends; SGD + momentum at the upper end; β2 for the lower end (NOTES §4)."""
        lr = lr if lr is not None else self.hyperparameters.get("lr")
        batches = batches_per_epoch if batches_per_epoch is not None else self.steps_per_epoch
        betas = self.hyperparameters.get("betas")
        beta2_now = float(betas[1]) if betas else None
        sgd_lr = None
        beta1 = float(betas[0]) if betas else 0.9
        if lr is not None:
            b2 = beta2_now if beta2_now is not None else 0.999
            sgd_lr = sgd_equivalent_lr(float(lr), self.upper, self.family, beta1=beta1, beta2=b2)
        beta2 = beta2_for_batches(batches) if batches else None
        notes = [
            f"Try only the two ends, ε = {self.lower:.0e} and ε = {self.upper:.0e}, and tune the learning rate for "
            "each.",
        ]
        if sgd_lr is not None:
            notes.append(
                f"At ε = {self.upper:.0e} {_share(self.fraction_above(self.upper))} of the elements stay adaptive: "
                f"the optimizer acts as SGD + momentum: torch.optim.SGD(momentum={beta1:g}) with learning rate "
                f"≈ {sgd_lr:.3g} (the paper's α/ε in its dampened form), a cheaper substitute."
            )
        if beta2 is not None:
            notes.append(
                f"At ε = {self.lower:.0e} (fully adaptive) choose β2 ≥ {beta2} so that 1/(1 − β2) covers the "
                f"{batches} batches of an epoch; keep β1 < sqrt(β2)."
            )
        if betas and beta2 is not None and float(betas[0]) >= math.sqrt(beta2):
            notes.append(f"β1 = {betas[0]} is not below sqrt(β2) = {math.sqrt(beta2):.4f}: lower β1.")
        return Recommendation(self.lower, self.upper, None if lr is None else float(lr), sgd_lr, beta2, tuple(notes))

    def summary(self) -> str:
        """A plain-text report: the range, the grid, the per-layer percentiles and the adaptability table."""
        lines = [
            f"optimizer {self.optimizer} ({self.family} term), method {self.method}, step {self.step}"
            + (f", epoch {self.epoch:.2f}" if self.epoch is not None else ""),
            f"ε range: [{self.lower:.0e}, {self.upper:.0e}]  (raw P{self.percentiles[0]:g} = "
            f"{self.raw_lower:.3e}, P{self.percentiles[1]:g} = {self.raw_upper:.3e})",
            "grid: " + ", ".join(f"{e:.0e}" for e in self.grid()),
            "",
        ]
        width = max([len(ly.name) for ly in self.layers] + [5])
        lo_h, hi_h = f"P{self.percentiles[0]:g}", f"P{self.percentiles[1]:g}"
        lines.append(f"{'layer':<{width}}  {'elements':>10}  {lo_h:>10}  {hi_h:>10}  {'zeros':>8}  {'nonfinite':>9}")
        for ly in self.layers:
            h = ly.histogram
            lines.append(
                f"{ly.name:<{width}}  {ly.numel:>10}  {ly.p_low:>10.3e}  {ly.p_high:>10.3e}  {h.zeros:>8}  "
                f"{h.nonfinite:>9}"
            )
        for name, why in self.skipped.items():
            lines.append(f"{name:<{width}}  skipped: {why}")
        lines += ["", "adaptability: share of elements with A > ε"]
        for row in self.adaptability_table():
            lines.append(f"  ε = {row['eps']:.0e}: {100 * row['overall']:6.2f} %")
        lines += ["", *self.recommend().notes]
        return "\n".join(lines)

    def plot(self, **kwargs: Any) -> Any:
        """The gradient magnitude histogram with the range shaded (see ``epsfinder.plots``; needs matplotlib)."""
        from epsfinder import plots

        return plots.plot_histogram(self, **kwargs)

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "lower": self.lower,
            "upper": self.upper,
            "raw_lower": self.raw_lower,
            "raw_upper": self.raw_upper,
            "grid": self.grid(),
            "optimizer": self.optimizer,
            "family": self.family,
            "method": self.method,
            "percentiles": list(self.percentiles),
            "step": self.step,
            "epoch": self.epoch,
            "steps_per_epoch": self.steps_per_epoch,
            "hyperparameters": _jsonable(self.hyperparameters),
            "nonfinite": self.nonfinite,
            "recommendation": self.recommend().to_dict(),
            "layers": [ly.to_dict() for ly in self.layers],
            "skipped": dict(self.skipped),
            "snapshots": [s.to_dict() for s in self.snapshots],
        }

    def to_json(self, path: str | os.PathLike[str] | None = None, *, indent: int | None = 1) -> str:
        """Serialise to JSON; also write it to ``path`` when given. Returns the JSON text."""
        text = json.dumps(self.to_dict(), indent=indent, allow_nan=True)
        if indent is not None:  # keep lists of numbers (histogram counts) on one line
            text = _NUMBER_BREAK.sub("", text)
        if path is not None:
            p = Path(path)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
        return text

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EpsilonRange:
        if int(d.get("schema", SCHEMA_VERSION)) > SCHEMA_VERSION:
            raise ValueError(f"result schema {d['schema']} is newer than this epsfinder reads ({SCHEMA_VERSION})")
        return cls(
            lower=float(d["lower"]),
            upper=float(d["upper"]),
            raw_lower=float(d["raw_lower"]),
            raw_upper=float(d["raw_upper"]),
            optimizer=d["optimizer"],
            family=d["family"],
            method=d["method"],
            layers=[LayerStats.from_dict(x) for x in d["layers"]],
            percentiles=tuple(d.get("percentiles", (2.0, 98.0))),  # type: ignore[arg-type]
            skipped=dict(d.get("skipped", {})),
            step=d.get("step"),
            epoch=d.get("epoch"),
            steps_per_epoch=d.get("steps_per_epoch"),
            hyperparameters=dict(d.get("hyperparameters", {})),
            snapshots=[SnapshotRecord.from_dict(s) for s in d.get("snapshots", [])],
        )

    @classmethod
    def from_json(cls, source: str | os.PathLike[str]) -> EpsilonRange:
        """Load from a JSON file path, or from JSON text."""
        text = str(source)
        if not text.lstrip().startswith("{"):
            text = Path(source).read_text()
        return cls.from_dict(json.loads(text))

    def __repr__(self) -> str:
        return (
            f"EpsilonRange(lower={self.lower:.0e}, upper={self.upper:.0e}, optimizer={self.optimizer!r}, "
            f"method={self.method!r}, layers={len(self.layers)}, step={self.step})"
        )


_NUMBER_BREAK = re.compile(r"(?<=[\[,])\n\s+(?=[-0-9])|(?<=[0-9])\n\s+(?=\])")


def _share(x: float) -> str:
    """A share as readable percent: "none", "< 0.1 %", "12.3 %"."""
    if x == 0:
        return "none"
    if x < 0.001:
        return "< 0.1 %"
    return f"{100 * x:.1f} %"


def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, torch.Tensor):
        return x.item() if x.numel() == 1 else x.tolist()
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, (bool, int, float, str)) or x is None:
        return x
    return repr(x)
