"""EpsilonProbe: read-only, exact paper method, names and groups, schedules, and bad input."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

import epsfinder
from _models import MODELS, digits_batches, mlp, train
from epsfinder import EpsilonProbe, NoSnapshotError, every, make_optimizer

ADAPTIVE = epsfinder.optimizer_names(adaptive_only=True)


@pytest.fixture(scope="module")
def batches():
    return digits_batches(n_batches=5)


@pytest.mark.parametrize("name", ADAPTIVE)
def test_read_only_training_is_bit_identical(name, batches):
    torch.manual_seed(0)
    base = MODELS["cnn"]()
    runs = []
    for with_probe in (False, True):
        model = copy.deepcopy(base)
        opt = make_optimizer(name, model.parameters(), lr=1e-2)
        probe = EpsilonProbe(opt, model=model, schedule=every(1), method="paper") if with_probe else None
        train(model, opt, batches, 20)
        if probe is not None:
            assert len(probe.snapshots) == 20
            probe.detach()
        runs.append((model.state_dict(), opt.state_dict()))
    (m0, o0), (m1, o1) = runs
    for k in m0:
        assert torch.equal(m0[k], m1[k]), k
    for pid, st in o0["state"].items():
        if isinstance(st, torch.Tensor):  # MADGRAD keeps a global step 'k' in its state
            assert torch.equal(st, o1["state"][pid])
            continue
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                assert torch.equal(v, o1["state"][pid][k]), (name, k)


def _reference_bounds(opt: torch.optim.Optimizer) -> tuple[float, float]:
    """Independent sort-based reference of the authors' calculator, on Adam's state."""
    lows, highs = [], []
    group = opt.param_groups[0]
    b2 = group["betas"][1]
    for p in group["params"]:
        st = opt.state.get(p)
        if not st:
            continue
        a = (st["exp_avg_sq"].sqrt() / math.sqrt(1 - b2 ** float(st["step"]))).numpy().ravel()
        a = np.sort(a[a != 0])
        if a.size == 0:
            continue
        lows.append(a[math.floor(0.02 * a.size)])
        highs.append(a[math.floor(0.98 * a.size)])
    return float(min(lows)), float(max(highs))


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_paper_method_equals_sort_reference_exactly(arch, batches):
    torch.manual_seed(1)
    model = MODELS[arch]()
    # Coupled weight decay makes every gradient non-zero; the embedding case needs exact zeros.
    opt = torch.optim.Adam(model.parameters(), weight_decay=0.0 if arch == "embedding" else 5e-4)
    probe = EpsilonProbe(opt, model=model, schedule=every(5), method="paper", steps_per_epoch=5)
    train(model, opt, batches, 5)
    r = probe.result()
    lo, hi = _reference_bounds(opt)
    assert (r.raw_lower, r.raw_upper) == (lo, hi)
    assert r.lower == 10.0 ** round(math.log10(lo)) and r.upper == 10.0 ** round(math.log10(hi))
    # The histogram method reads the same ranks within 0.78 %.
    h = EpsilonProbe(opt, model=model, schedule=every(1))
    hr = h.result(h.snapshot())
    assert hr.raw_lower == pytest.approx(lo, rel=0.0079) and hr.raw_upper == pytest.approx(hi, rel=0.0079)
    if arch == "embedding":
        emb = r.layer("emb.weight")
        assert emb.histogram.zeros == (40 - 17) * 6  # unused rows: zero terms, dropped, counted


def test_names_groups_frozen_and_missing_grads(batches):
    model = mlp()
    model[0].bias.requires_grad_(False)
    extra = nn.Parameter(torch.zeros(3))  # in the optimizer, never gets a gradient
    opt = torch.optim.Adam(
        [{"params": [model[0].weight], "lr": 1e-3}, {"params": [model[2].weight, model[2].bias, extra], "lr": 1e-2}]
    )
    probe = EpsilonProbe(opt, model=model, schedule=every(1))
    train(model, opt, batches, 2)
    r = probe.result()
    assert [ly.name for ly in r.layers] == ["0.weight", "2.weight", "2.bias"]
    assert [ly.group for ly in r.layers] == [0, 1, 1]
    assert "group1.param2" in r.skipped and "no optimizer state" in r.skipped["group1.param2"]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_state(dtype):
    torch.manual_seed(0)
    model = nn.Linear(16, 4).to(dtype)
    opt = torch.optim.Adam(model.parameters(), eps=1e-4)
    probe = EpsilonProbe(opt, model=model, schedule=every(1))
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(8, 16, dtype=dtype)).float().pow(2).mean().backward()
        opt.step()
    r = probe.result()
    assert opt.state[model.weight]["exp_avg_sq"].dtype == dtype
    assert 0 < r.raw_lower <= r.raw_upper < 10


def test_result_before_any_step_and_detach():
    model = mlp()
    opt = torch.optim.Adam(model.parameters())
    probe = EpsilonProbe(opt, model=model)
    with pytest.raises(NoSnapshotError, match=r"no snapshot exists yet.*0 optimizer steps"):
        probe.result()
    with EpsilonProbe(opt, schedule=every(1)) as p2:
        train(model, opt, digits_batches(1), 1)
    assert not p2.attached and len(p2.snapshots) == 1
    train(model, opt, digits_batches(1), 1)
    assert len(p2.snapshots) == 1 and p2.steps == 1  # detached: no more
    p2.detach()  # twice is fine


def test_nonfinite_state_counted_excluded_and_warned_once():
    p = nn.Parameter(torch.zeros(100))
    opt = torch.optim.Adam([p])
    probe = EpsilonProbe(opt, schedule=every(1))
    g = torch.full((100,), 1e-3)
    g[:3] = float("nan")
    g[3] = float("inf")
    p.grad = g
    with pytest.warns(RuntimeWarning, match="non-finite"):
        opt.step()
    with _no_warnings():
        opt.step()
    r = probe.result()
    assert r.layers[0].histogram.nonfinite == 4 and r.nonfinite == 4
    assert r.raw_lower == pytest.approx(1e-3, rel=0.01)
    assert r.to_dict()["layers"][0]["nonfinite"] == 4


class _no_warnings:
    def __enter__(self):
        import warnings

        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *a):
        self._cm.__exit__(*a)


def test_all_zero_tensor_is_skipped_and_listed():
    a, b = nn.Parameter(torch.zeros(5)), nn.Parameter(torch.zeros(5))
    opt = torch.optim.Adam([a, b])
    probe = EpsilonProbe(opt, schedule=every(1))
    a.grad, b.grad = torch.zeros(5), torch.ones(5)
    opt.step()
    r = probe.result()
    assert r.skipped == {"group0.param0": "all adaptive terms are zero"}
    assert [ly.name for ly in r.layers] == ["group0.param1"]


def test_sparse_gradients_are_refused():
    emb = nn.Embedding(10, 3, sparse=True)
    opt = torch.optim.Adagrad(emb.parameters())
    probe = EpsilonProbe(opt, model=emb, schedule=every(1))
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(ValueError, match=r"sparse gradient.*sparse=False"):
        opt.step()
    probe.detach()


def test_bad_arguments():
    opt = torch.optim.Adam(mlp().parameters())
    with pytest.raises(ValueError, match="method must be one of"):
        EpsilonProbe(opt, method="sort")
    with pytest.raises(ValueError, match="percentiles must satisfy"):
        EpsilonProbe(opt, percentiles=(98, 2))
    with pytest.raises(TypeError, match=r"torch\.optim\.Optimizer"):
        EpsilonProbe(object())  # type: ignore[arg-type]
    with pytest.raises(epsfinder.UnsupportedOptimizerError, match="register_term"):
        EpsilonProbe(torch.optim.SGD(mlp().parameters(), lr=0.1))


def test_schedules_and_first_epoch_choice():
    s = epsfinder.per_epoch(10, 4)
    assert [k for k in range(1, 31) if s(k)] == [2, 5, 8, 10, 12, 15, 18, 20, 22, 25, 28, 30]
    assert [k for k in range(1, 120) if epsfinder.log_spaced()(k)] == [1, 2, 5, 10, 20, 50, 100]
    model = mlp()
    opt = torch.optim.Adam(model.parameters())
    probe = EpsilonProbe(opt, model=model, steps_per_epoch=4)
    train(model, opt, digits_batches(4), 12)
    assert [s.step for s in probe.snapshots] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
    r = probe.result()
    assert r.step == 4 and r.epoch == 1.0  # the end of the first epoch, as the paper reads it
    assert len(r.snapshots) == 12
    on_demand = probe.snapshot()
    assert on_demand.step == 12 and len(probe.snapshots) == 13


def test_max_snapshots_keeps_first_epoch_end():
    model = mlp()
    opt = torch.optim.Adam(model.parameters())
    probe = EpsilonProbe(opt, model=model, steps_per_epoch=2, schedule=every(1), max_snapshots=3)
    train(model, opt, digits_batches(2), 8)
    assert [s.step for s in probe.snapshots] == [2, 7, 8]


def test_zeros_told_from_subnormals_exactly():
    """Exact zeros come from a non-zero count in the binning pass; values below 2^-132 take the exact path."""
    values = torch.tensor([0.0, -0.0, 0.0, 1e-45, 3e-41, -1e-45, 1e-3, 2e-3])

    class Fixed(torch.optim.SGD):
        pass

    epsfinder.register_term(Fixed, lambda state, group: values if "momentum_buffer" in state else None)
    try:
        p = nn.Parameter(torch.zeros(8))
        opt = Fixed([p], lr=0.1, momentum=0.9)
        probe = EpsilonProbe(opt, schedule=every(1))
        p.grad = torch.ones(8)
        opt.step()
        h = probe.result().layers[0].histogram
        assert (h.zeros, h.negative, h.positive) == (3, 1, 4)
        values[3:6] = torch.tensor([0.5, 0.25, 0.0])  # no tiny values left: the arithmetic path
        opt.step()
        h = probe.result(-1).layers[0].histogram
        assert (h.zeros, h.negative, h.positive) == (4, 0, 4)
    finally:
        epsfinder.terms._USER.pop(Fixed, None)
