"""Streaming log-binned histogram of positive float32 values.

The bins follow the float32 bit pattern: a value's bin is its sign, its 8 exponent bits and the top
``MANTISSA_BITS`` (6) mantissa bits. Inside each octave ``[2^e, 2^(e+1))`` there are 64 bins of equal width
``2^e / 64``, so a bin's width is at most 1/64 of its lower edge, across the whole float32 range
(``2^-126 ≈ 1.2e-38`` to ``3.4e38``, 16,320 bins for the positive finite values). Reporting a bin's midpoint
for a quantile is therefore within ``1/128 ≈ 0.78 %`` of any value in that bin, hence of the exact sorted
element (values below ``2^-126``, subnormals, share wider bins and have no such bound).

Binning reads the tensor on its own device: one bit shift and one ``bincount``, in chunks, so the extra memory
is one chunk and a 32,768-entry count vector. Exact zeros, negative values and non-finite values (inf, NaN) are
counted apart from the positive values, never binned with them.

Memory per histogram: 16,320 int64 counts (127.5 KiB) whatever the number of values added.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["BINS", "MANTISSA_BITS", "LogHistogram", "bin_edges"]

MANTISSA_BITS = 6
_SHIFT = 23 - MANTISSA_BITS  # drop the low mantissa bits
_PER_OCTAVE = 1 << MANTISSA_BITS
#: Number of bins for positive finite float32 values (exponent field 0..254).
BINS = 255 * _PER_OCTAVE
_ALL = 1 << (32 - _SHIFT)  # sign + exponent + kept mantissa: 32,768 codes
_NEG0 = _ALL // 2  # code of -0.0 (and tiny negative subnormals)
_NONFINITE_POS = range(BINS, _NEG0)  # +inf, +nan
_NONFINITE_NEG = range(_NEG0 + BINS, _ALL)  # -inf, -nan
#: Elements binned per chunk; bounds the transient memory of `add`.
CHUNK = 1 << 20

FLOAT32_MAX = float(np.finfo(np.float32).max)
_TINY = 2.0 ** (-149 + _SHIFT)  # values below this share code 0 with +0.0


def bin_edges() -> np.ndarray:
    """Edges of the ``BINS`` positive bins as float64: ``edges[i] <= x < edges[i + 1]`` for bin ``i``.

    Every edge is an exact float32 value; the last edge is float32 max (the top bin is closed there).
    """
    codes = (np.arange(BINS + 1, dtype=np.int64) << _SHIFT).astype(np.uint32)
    edges = codes.view(np.float32).astype(np.float64)
    edges[-1] = FLOAT32_MAX
    return edges


_EDGES = bin_edges()
_MIDS = 0.5 * (_EDGES[:-1] + _EDGES[1:])


def count_codes_(buf: torch.Tensor) -> torch.Tensor:
    """Counts of the 32,768 bin codes of the float32 values in ``buf``, which is overwritten (used as scratch).

    A value's code is its bit pattern shifted right by 17 (sign, exponent, top 6 mantissa bits): one in-place
    shift, one mask and one ``bincount``, with no allocation but the count vector.
    """
    if buf.dtype != torch.float32 or not buf.is_contiguous():
        raise TypeError(f"count_codes_ needs a contiguous float32 buffer, got {buf.dtype}")
    codes = buf.view(torch.int32)
    codes.bitwise_right_shift_(_SHIFT).bitwise_and_(_ALL - 1)
    return torch.bincount(codes, minlength=_ALL)


@dataclass
class LogHistogram:
    """Counts of positive values in log-spaced bins, plus counts of zeros, negatives and non-finite values.

    ``counts[i]`` is the number of added values in ``[edges[i], edges[i+1])`` (see :func:`bin_edges`).
    Add tensors with :meth:`add` (any device, any float dtype: values are read as float32), combine
    histograms with :meth:`merge` or ``+``, query with :meth:`quantile` and :meth:`fraction_above`.
    """

    counts: np.ndarray = field(default_factory=lambda: np.zeros(BINS, dtype=np.int64))
    zeros: int = 0
    negative: int = 0
    nonfinite: int = 0

    def __post_init__(self) -> None:
        self.counts = np.asarray(self.counts, dtype=np.int64)
        if self.counts.shape != (BINS,):
            raise ValueError(f"counts must have shape ({BINS},), got {self.counts.shape}")

    # ------------------------------------------------------------------ building
    @staticmethod
    def device_counts(values: torch.Tensor, *, chunk: int = CHUNK) -> torch.Tensor:
        """All 32,768 bin codes' counts of ``values`` as an int64 tensor on ``values``' device.

        This is the on-device half of :meth:`add`; keep the result on the device to sum several tensors (or
        all-reduce across ranks) before one transfer with :meth:`from_device_counts`. ``values`` is not modified:
        each chunk is copied into one scratch buffer first.
        """
        if values.is_sparse:
            raise TypeError("sparse tensors are not supported: pass a dense tensor (tensor.to_dense())")
        flat = values.detach().reshape(-1)
        total = torch.zeros(_ALL, dtype=torch.int64, device=flat.device)
        n = flat.numel()
        if n == 0:
            return total
        step = max(1, min(chunk, n))
        buf = torch.empty(step, dtype=torch.float32, device=flat.device)
        for start in range(0, n, step):
            part = flat[start : start + step]
            total += count_codes_(buf[: part.numel()].copy_(part))
        return total

    @classmethod
    def from_device_counts(
        cls, codes: torch.Tensor, *, exact_zeros: int | None = None, tiny_positive: int | None = None
    ) -> LogHistogram:
        """Build from the 32,768 code counts of :meth:`device_counts` (one device-to-host transfer).

        Codes 0 and -0 hold the exact zeros together with the values of magnitude below ``2^-132``; pass
        ``exact_zeros`` and ``tiny_positive`` (counted separately, see :meth:`add`) to split them, else they all
        count as zeros.
        """
        c = codes.detach().to("cpu", torch.int64).numpy()
        counts = c[:BINS].copy()
        nonfinite = int(c[_NONFINITE_POS.start : _NONFINITE_POS.stop].sum() + c[_NONFINITE_NEG.start :].sum())
        zero_like = int(c[0] + c[_NEG0])
        zeros = zero_like if exact_zeros is None else int(exact_zeros)
        tiny_pos = 0 if tiny_positive is None else int(tiny_positive)
        tiny_neg = zero_like - zeros - tiny_pos
        if tiny_neg < 0 or tiny_pos > c[0]:
            raise ValueError(
                f"exact_zeros={zeros} and tiny_positive={tiny_pos} do not fit the {zero_like} zero-bin values"
            )
        counts[0] = tiny_pos
        negative = int(c[_NEG0 + 1 : _NEG0 + BINS].sum()) + tiny_neg
        return cls(counts=counts, zeros=zeros, negative=negative, nonfinite=nonfinite)

    @classmethod
    def of(cls, values: torch.Tensor, *, chunk: int = CHUNK) -> LogHistogram:
        """Histogram of one tensor (see :meth:`add`)."""
        h = cls()
        h.add(values, chunk=chunk)
        return h

    def add(self, values: torch.Tensor, *, chunk: int = CHUNK) -> LogHistogram:
        """Add every element of ``values`` (read as float32, on its own device, in chunks); returns self.

        Exact zeros are counted exactly: when the zero bin is non-empty, one extra comparison pass tells
        zeros from subnormals.
        """
        codes = self.device_counts(values, chunk=chunk)
        zeros = tiny = None
        if int(codes[0]) + int(codes[_NEG0]) > 0:  # rare: split exact zeros from subnormals
            v = values.detach()
            zeros = int((v == 0).sum())
            tiny = int(((v > 0) & (v < _TINY)).sum())
        other = self.from_device_counts(codes, exact_zeros=zeros, tiny_positive=tiny)
        self.merge(other)
        return self

    def merge(self, other: LogHistogram) -> LogHistogram:
        """Add ``other``'s counts into this histogram (in place); returns self."""
        self.counts += other.counts
        self.zeros += other.zeros
        self.negative += other.negative
        self.nonfinite += other.nonfinite
        return self

    def __add__(self, other: LogHistogram) -> LogHistogram:
        return self.copy().merge(other)

    def copy(self) -> LogHistogram:
        return LogHistogram(self.counts.copy(), self.zeros, self.negative, self.nonfinite)

    @classmethod
    def sum(cls, histograms: Iterable[LogHistogram]) -> LogHistogram:
        total = cls()
        for h in histograms:
            total.merge(h)
        return total

    # ------------------------------------------------------------------ queries
    @property
    def positive(self) -> int:
        """Number of positive finite values binned."""
        return int(self.counts.sum())

    @property
    def finite(self) -> int:
        """Number of finite values added (positive, zero and negative)."""
        return self.positive + self.zeros + self.negative

    @property
    def total(self) -> int:
        """Number of values added, non-finite included."""
        return self.finite + self.nonfinite

    def quantile(self, q: float | Iterable[float]) -> float | np.ndarray:
        """The ``floor(q·n)``-th smallest positive value (0-based, ``n`` = positive count), as a bin midpoint.

        This is the paper's index rule (zeros dropped, no interpolation) read from the bins; the answer is within
        0.78 % of the exact element for values above ``2^-126``. Returns NaN when no positive value was added.
        """
        scalar = np.ndim(q) == 0
        qs = np.atleast_1d(np.asarray(q, dtype=np.float64))
        if np.any((qs < 0) | (qs > 1)) or np.any(np.isnan(qs)):
            raise ValueError(f"quantile q must lie in [0, 1], got q={q!r}")
        n = self.positive
        if n == 0:
            out = np.full(qs.shape, np.nan)
        else:
            ranks = np.minimum(np.floor(qs * n), n - 1).astype(np.int64)
            cum = np.cumsum(self.counts)
            idx = np.searchsorted(cum, ranks, side="right")
            out = _MIDS[idx]
        return float(out[0]) if scalar else out

    def count_above(self, value: float) -> float:
        """Number of positive values greater than ``value``.

        Exact when ``value`` is a bin edge; inside a bin, the bin's count is split in proportion to where
        ``value`` lies (values assumed uniform within the bin, whose width is at most 1/64 of its edge).
        """
        if not math.isfinite(value):
            raise ValueError(f"value must be finite, got {value!r}")
        if value <= 0:
            return float(self.positive)
        if value >= FLOAT32_MAX:
            return 0.0
        i = int(np.searchsorted(_EDGES, value, side="right")) - 1
        lo, hi = _EDGES[i], _EDGES[i + 1]
        above_in_bin = self.counts[i] * (hi - value) / (hi - lo)
        return float(self.counts[i + 1 :].sum() + above_in_bin)

    def fraction_above(self, value: float) -> float:
        """Share of finite values greater than ``value`` (zeros and negatives count as not above).

        This is the adaptability level at ε = ``value``: the share of elements with ``A > ε``. NaN when empty.
        """
        n = self.finite
        return self.count_above(value) / n if n else math.nan

    def min_max(self) -> tuple[float, float]:
        """Lower edge of the lowest and upper edge of the highest non-empty bin (NaN, NaN when empty)."""
        nz = np.flatnonzero(self.counts)
        if nz.size == 0:
            return math.nan, math.nan
        return float(_EDGES[nz[0]]), float(_EDGES[nz[-1] + 1])

    def dense(self, bins_per_decade: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Non-empty span of the histogram as ``(edges, counts)`` for plotting or logging.

        With ``bins_per_decade`` the native bins are summed into coarser log-spaced bins (native bins are
        assigned by their midpoint), else the native bins are returned.
        """
        nz = np.flatnonzero(self.counts)
        if nz.size == 0:
            return np.array([]), np.array([], dtype=np.int64)
        lo, hi = nz[0], nz[-1] + 1
        if bins_per_decade is None:
            return _EDGES[lo : hi + 1].copy(), self.counts[lo:hi].copy()
        d0 = math.floor(math.log10(_EDGES[lo]) * bins_per_decade)
        d1 = math.ceil(math.log10(_EDGES[hi]) * bins_per_decade)
        edges = 10.0 ** (np.arange(d0, d1 + 1) / bins_per_decade)
        which = np.clip(np.searchsorted(edges, _MIDS[lo:hi], side="right") - 1, 0, len(edges) - 2)
        counts = np.bincount(which, weights=self.counts[lo:hi], minlength=len(edges) - 1).astype(np.int64)
        return edges, counts

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """Compact JSON-ready form: the non-empty span of counts with its offset."""
        nz = np.flatnonzero(self.counts)
        lo, hi = (int(nz[0]), int(nz[-1]) + 1) if nz.size else (0, 0)
        return {
            "mantissa_bits": MANTISSA_BITS,
            "offset": lo,
            "counts": self.counts[lo:hi].tolist(),
            "zeros": self.zeros,
            "negative": self.negative,
            "nonfinite": self.nonfinite,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LogHistogram:
        if int(d.get("mantissa_bits", MANTISSA_BITS)) != MANTISSA_BITS:
            raise ValueError(
                f"histogram has mantissa_bits={d['mantissa_bits']}, this version reads {MANTISSA_BITS}"
            )
        counts = np.zeros(BINS, dtype=np.int64)
        span = np.asarray(d["counts"], dtype=np.int64)
        off = int(d["offset"])
        counts[off : off + span.size] = span
        return cls(counts, int(d["zeros"]), int(d["negative"]), int(d["nonfinite"]))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LogHistogram):
            return NotImplemented
        return (
            np.array_equal(self.counts, other.counts)
            and (self.zeros, self.negative, self.nonfinite) == (other.zeros, other.negative, other.nonfinite)
        )

    def __repr__(self) -> str:
        lo, hi = self.min_max()
        return (
            f"LogHistogram(positive={self.positive}, zeros={self.zeros}, negative={self.negative}, "
            f"nonfinite={self.nonfinite}, span=[{lo:.3g}, {hi:.3g}])"
        )
