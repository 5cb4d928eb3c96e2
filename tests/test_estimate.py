"""Algorithm 2 (estimate_range, EpsilonRange): the dry pass, rounding, grid, advice, JSON, bad input."""

from __future__ import annotations

import copy
import itertools
import json
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import epsfinder
from _models import digits_batches, mlp
from epsfinder import EpsilonRange, estimate_range
from epsfinder.estimate import beta2_for_batches, round_to_power_of_ten

CE = nn.functional.cross_entropy


@pytest.fixture(scope="module")
def batches():
    return digits_batches(n_batches=6)


def _exact_half(e: float) -> float:
    """A float whose log10 is exactly e (a .5 exponent), found by stepping from 10**e."""
    x = 10.0**e
    for _ in range(100):
        if math.log10(x) == e:
            return x
        x = math.nextafter(x, math.inf if math.log10(x) < e else 0.0)
    raise AssertionError(e)


def test_rounding_is_ties_to_even_in_the_exponent():
    assert round_to_power_of_ten(_exact_half(-3.5)) == 1e-4  # round(-3.5) == -4
    assert round_to_power_of_ten(_exact_half(-2.5)) == 1e-2  # round(-2.5) == -2
    assert round_to_power_of_ten(3.2e-7) == 1e-6 and round_to_power_of_ten(3.1e-7) == 1e-7
    with pytest.raises(ValueError, match="positive and finite"):
        round_to_power_of_ten(0.0)


def test_weights_untouched_state_advanced_and_paper_equals_manual(batches):
    torch.manual_seed(0)
    model = mlp()
    before = copy.deepcopy(model.state_dict())
    r = estimate_range(model, CE, batches, "adam", betas=(0.9, 0.999), weight_decay=5e-4, method="paper",
                       progress_bar=False)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    # Manual Algorithm 2: the same moments, accumulated at fixed weights, read at the last step.
    opt = torch.optim.Adam(model.parameters(), betas=(0.9, 0.999), weight_decay=5e-4)
    init = [p.detach().clone() for p in model.parameters()]
    for x, y in batches:
        opt.zero_grad()
        CE(model(x), y).backward()
        opt.step()
        with torch.no_grad():
            for p, p0 in zip(model.parameters(), init):
                p.copy_(p0)
    lows, highs = [], []
    for p in model.parameters():
        a = opt.state[p]["exp_avg_sq"].sqrt() / math.sqrt(1 - 0.999**6)
        a = torch.sort(a.flatten()[a.flatten() != 0]).values
        lows.append(float(a[math.floor(0.02 * a.numel())]))
        highs.append(float(a[math.floor(0.98 * a.numel())]))
    assert (r.raw_lower, r.raw_upper) == (min(lows), max(highs))
    assert r.step == 6 and r.steps_per_epoch == 6 and r.method == "paper"


def test_histogram_and_paper_give_the_same_bounds(batches):
    torch.manual_seed(0)
    model = mlp()
    rp = estimate_range(model, CE, batches, "rmsprop", method="paper", progress_bar=False)
    rh = estimate_range(model, CE, batches, "rmsprop", progress_bar=False)
    assert rh.raw_lower == pytest.approx(rp.raw_lower, rel=0.0079)
    assert rh.raw_upper == pytest.approx(rp.raw_upper, rel=0.0079)
    assert (rh.lower, rh.upper) == (rp.lower, rp.upper)
    assert [s.step for s in rh.snapshots] == [2, 3, 4, 6]  # four per epoch for the drift figure


def test_grid_fraction_and_recommendation(batches):
    torch.manual_seed(0)
    r = estimate_range(mlp(), CE, batches, "adam", lr=1e-3, progress_bar=False)
    grid = r.grid()
    assert grid[0] == r.lower and grid[-1] == r.upper
    assert all(b / a == pytest.approx(10) for a, b in itertools.pairwise(grid))
    shares = [r.fraction_above(e) for e in grid]
    assert shares == sorted(shares, reverse=True)
    for ly in r.layers:  # P2 and P98 of the non-zero terms
        h = ly.histogram
        if h.positive < 1000:
            continue
        assert 0.97 <= h.count_above(ly.p_low) / h.positive <= 0.99
        assert 0.01 <= h.count_above(ly.p_high) / h.positive <= 0.03
    per = r.fraction_above(grid[0], per_layer=True)
    assert set(per) == {ly.name for ly in r.layers}
    rec = r.recommend()
    assert rec.sgd_lr == pytest.approx((1 - 0.9) * 1e-3 / r.upper) and rec.beta2 == 0.9  # 6 batches per epoch
    assert r.recommend(batches_per_epoch=668).beta2 == 0.999  # the paper's PTB example


def test_squared_family_grid_steps_by_hundred():
    r = EpsilonRange(1e-15, 1e-6, 1e-15, 1e-6, "adabelief", "squared", "histogram", [])
    assert r.grid() == [1e-15, 1e-13, 1e-11, 1e-09, 1e-07, 1e-06]
    assert r.grid(step=10)[:3] == [1e-15, 1e-14, 1e-13]


@given(st.integers(1, 10**7))
def test_beta2_rule_covers_the_epoch(n):
    b2 = beta2_for_batches(n)
    assert 1 / (1 - b2) >= n * (1 - 1e-9)
    assert b2 == 0.9 or 1 / (1 - (1 - 10 * (1 - b2))) < n  # the smallest such 1 - 10^-k


def test_json_round_trip(tmp_path, batches):
    torch.manual_seed(0)
    r = estimate_range(mlp(), CE, batches, "adabelief", progress_bar=False)
    path = tmp_path / "result.json"
    r.to_json(path)
    d = json.loads(path.read_text())
    assert {"lower", "upper", "raw_lower", "raw_upper", "optimizer", "method", "layers"} <= set(d)
    back = EpsilonRange.from_json(path)
    assert (back.lower, back.upper, back.raw_lower, back.raw_upper) == (r.lower, r.upper, r.raw_lower, r.raw_upper)
    assert back.histogram == r.histogram and len(back.snapshots) == len(r.snapshots)
    assert back.fraction_above(1e-9) == r.fraction_above(1e-9)
    assert back.family == "squared"


def test_step_fn_and_steps(batches):
    torch.manual_seed(0)
    model = mlp()

    def step_fn(m, batch):
        x, y = batch["x"], batch["y"]
        return CE(m(x), y)

    dict_batches = [{"x": x, "y": y} for x, y in batches]
    r = estimate_range(model, None, dict_batches, "adam", step_fn=step_fn, steps=4, progress_bar=False)
    assert r.step == 4


def test_bad_input(batches):
    model = mlp()
    with pytest.raises(ValueError, match="loader is empty"):
        estimate_range(model, CE, [], "adam", progress_bar=False)
    with pytest.raises(ValueError, match="loader is empty"):
        estimate_range(model, CE, iter([]), "adam", progress_bar=False)
    with pytest.raises(ValueError, match="shorter than steps: it has 6 batches, steps=10"):
        estimate_range(model, CE, batches, "adam", steps=10, progress_bar=False)
    with pytest.raises(ValueError, match="shorter than steps: it yielded 6 batches"):
        estimate_range(model, CE, iter(batches), "adam", steps=10, progress_bar=False)
    frozen = mlp().requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        estimate_range(frozen, CE, batches, "adam", progress_bar=False)
    with pytest.raises(epsfinder.UnsupportedOptimizerError, match="SGD has no adaptive term"):
        estimate_range(model, CE, batches, torch.optim.SGD, lr=0.1, progress_bar=False)
    with pytest.raises(ValueError, match="method must be one of"):
        estimate_range(model, CE, batches, "adam", method="exact", progress_bar=False)
    with pytest.raises(ValueError, match="loss_fn"):
        estimate_range(model, None, batches, "adam", progress_bar=False)
    with pytest.raises(ValueError, match="no parameter tensor has a non-zero adaptive term"):
        zero = [(torch.zeros(4, 64), torch.zeros(4, dtype=torch.long))]
        lin = nn.Linear(64, 10, bias=False)
        estimate_range(lin, lambda out, y: out.sum() * 0, zero, "adam", progress_bar=False)


@pytest.mark.parametrize("name", ["adabelief", "eadam", "adamomentum"])
def test_eps_in_state_optimizers_probe_with_a_tiny_eps(name, batches):
    import warnings

    torch.manual_seed(0)
    model = mlp()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no resolution warning with the default tiny ε
        r = estimate_range(model, CE, batches, name, progress_bar=False)
    assert r.hyperparameters["eps"] == pytest.approx(1e-30)
    # The ε-free term does not depend on ε: a moderate ε gives the same bounds where it resolves them.
    r8 = estimate_range(model, CE, batches, name, eps=1e-20, progress_bar=False)
    assert r8.raw_upper == pytest.approx(r.raw_upper, rel=1e-3)
    assert r8.raw_lower == pytest.approx(r.raw_lower, rel=1e-3)
