"""LogHistogram: quantiles within 1 % of the exact sort, counts kept apart, merge, bounded memory."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from epsfinder.histogram import BINS, LogHistogram, bin_edges


def exact_floor_quantile(values: np.ndarray, q: float) -> float:
    """Independent reference: positive finite values, sorted, element at floor(q·n)."""
    pos = np.sort(values[np.isfinite(values) & (values > 0)])
    return float(pos[min(math.floor(q * pos.size), pos.size - 1)])


@st.composite
def wide_data(draw):
    n = draw(st.integers(min_value=1, max_value=4000))
    seed = draw(st.integers(0, 2**31 - 1))
    lo = draw(st.floats(-30, 10))
    rng = np.random.default_rng(seed)
    x = (10.0 ** rng.uniform(lo, lo + 20, n)).astype(np.float32)  # 20 decades
    n_zero = draw(st.integers(0, 50))
    n_bad = draw(st.integers(0, 20))
    extra = np.concatenate([np.zeros(n_zero, np.float32), rng.choice([np.inf, -np.inf, np.nan], n_bad)])
    return rng.permutation(np.concatenate([x, extra.astype(np.float32)])), n, n_zero, n_bad


@settings(max_examples=60, deadline=None)
@given(wide_data(), st.sampled_from([0.0, 0.02, 0.25, 0.5, 0.98, 1.0]))
def test_quantile_within_one_percent_of_sort(data, q):
    values, n, n_zero, n_bad = data
    h = LogHistogram.of(torch.from_numpy(values))
    assert h.positive == n and h.zeros == n_zero and h.nonfinite == n_bad
    exact = exact_floor_quantile(values, q)
    assert abs(h.quantile(q) - exact) <= 0.01 * exact
    assert abs(h.quantile(q) - exact) <= (1 / 128 + 1e-12) * exact  # the stated bound


def test_counts_kept_apart():
    x = torch.tensor([0.0, -0.0, 1.0, 2.0, -3.0, float("inf"), float("nan"), -float("inf"), 1e-45, -1e-45])
    h = LogHistogram.of(x)
    assert (h.zeros, h.negative, h.nonfinite, h.positive) == (2, 2, 3, 3)
    assert h.finite == 7 and h.total == 10


def test_chunked_equals_whole_and_merge_equals_concat():
    g = torch.Generator().manual_seed(1)
    a = torch.rand(50_001, generator=g).mul(30).sub(20).exp()
    b = torch.randn(7_777, generator=g)
    assert LogHistogram.of(a, chunk=1000) == LogHistogram.of(a)
    assert LogHistogram.of(a) + LogHistogram.of(b) == LogHistogram.of(torch.cat([a, b]))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_dtypes_read_as_float32(dtype):
    x = torch.logspace(-4, 3, 1000, dtype=torch.float64).to(dtype)
    assert LogHistogram.of(x) == LogHistogram.of(x.to(torch.float32))


def test_fraction_above_exact_at_edges_and_bounded_inside_bins():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(100_000, generator=g).mul(20).sub(15).exp()
    x[:1000] = 0
    h = LogHistogram.of(x)
    edges = bin_edges()
    for e in edges[[100 * 64, 120 * 64 + 17, 127 * 64]]:
        assert h.fraction_above(float(e)) == pytest.approx(float((x > e).sum()) / x.numel(), abs=1e-12)
    for eps in (1e-6, 3.3e-4, 1e-2):
        exact = float((x > eps).sum()) / x.numel()
        i = np.searchsorted(edges, eps, side="right") - 1
        assert abs(h.fraction_above(eps) - exact) <= h.counts[i] / x.numel() + 1e-12


def test_dict_round_trip_and_memory_bound():
    h = LogHistogram.of(torch.logspace(-30, 30, 10_000))
    assert LogHistogram.from_dict(h.to_dict()) == h
    assert h.counts.nbytes <= 256 * 1024
    assert BINS == 16320


def test_empty_and_bad_queries():
    h = LogHistogram()
    assert math.isnan(h.quantile(0.5)) and math.isnan(h.fraction_above(1.0))
    with pytest.raises(ValueError, match="q must lie in"):
        h.quantile(1.5)
    with pytest.raises(TypeError, match="sparse"):
        LogHistogram.of(torch.eye(3).to_sparse())
    with pytest.raises(ValueError, match="shape"):
        LogHistogram(np.zeros(3, dtype=np.int64))


def test_dense_rebinning_keeps_counts():
    x = torch.logspace(-8, -1, 5000)
    edges, counts = LogHistogram.of(x).dense(bins_per_decade=10)
    assert counts.sum() == 5000 and len(edges) == len(counts) + 1
    assert np.all(np.diff(edges) > 0)
