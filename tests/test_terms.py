"""The adaptive term A of every supported optimizer equals the NOTES §3 formula computed by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import epsfinder
from epsfinder import UnsupportedOptimizerError, make_optimizer, register_term, supported_optimizers
from epsfinder.terms import lookup

ADAPTIVE = epsfinder.optimizer_names(adaptive_only=True)
STEPS = 6


def _grads(seed: int = 0) -> list[list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    shapes = [(5, 7), (3,), (2, 2, 2)]
    out = []
    for _ in range(STEPS):
        grads = [torch.randn(s, generator=g) * 10.0 ** torch.empty(s).uniform_(-4, 0, generator=g) for s in shapes]
        grads[0][0, :] = 0.0  # a row that never gets gradient: A = 0 there
        out.append(grads)
    return out


def _run(name: str, **kw):
    torch.manual_seed(0)
    params = [nn.Parameter(torch.randn(s)) for s in [(5, 7), (3,), (2, 2, 2)]]
    opt = make_optimizer(name, params, **kw)
    grads = _grads()
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = g.clone()
        opt.step()
    return opt, params, grads


def _by_hand(name: str, opt, p, grads_of_p) -> torch.Tensor:
    """NOTES §3, written out independently of epsfinder.terms."""
    st, group = opt.state[p], opt.param_groups[0]
    t = float(st["step"]) if "step" in st else float(group.get("step", 0))
    if name in ("adam", "adamw", "nadam", "radam", "diffgrad", "adamod"):
        b2 = group["betas"][1]
        return st["exp_avg_sq"].sqrt() / math.sqrt(1 - b2**t)
    if name in ("amsgrad", "adamw-amsgrad"):
        b2 = group["betas"][1]
        return st["max_exp_avg_sq"].sqrt() / math.sqrt(1 - b2**t)
    if name == "rmsprop":
        return st["square_avg"].sqrt()
    if name == "rmsprop-centered":
        return (st["square_avg"] - st["grad_avg"] ** 2).sqrt()
    if name == "adagrad":
        return st["sum"].sqrt()
    if name == "adamax":
        return st["exp_inf"]
    if name == "madgrad":
        return st["grad_sum_sq"] ** (1 / 3)
    # Squared family: replay the ε-free EMA from the recorded gradients, A = (1 − β2)·s′ / (1 − β2^t).
    b1, b2 = group["betas"][:2]
    m = torch.zeros_like(p, dtype=torch.float64)
    s = torch.zeros_like(p, dtype=torch.float64)
    for g in grads_of_p:
        g = g.double()
        m = b1 * m + (1 - b1) * g
        if name == "adabelief":
            s = b2 * s + (1 - b2) * (g - m) ** 2
        elif name == "eadam":
            s = b2 * s + (1 - b2) * g**2
        elif name == "adamomentum":
            s = b2 * s + (1 - b2) * m**2
        else:
            raise AssertionError(name)
    return ((1 - b2) * s / (1 - b2 ** len(grads_of_p))).float()


@pytest.mark.parametrize("name", ADAPTIVE)
def test_term_equals_formula(name):
    opt, params, grads = _run(name)
    spec = lookup(opt)
    for i, p in enumerate(params):
        got = spec.term(opt.state[p], opt.param_groups[0]).full().view_as(p)
        want = _by_hand(name, opt, p, [g[i] for g in grads])
        if spec.family == "magnitude":
            assert torch.equal(got, want.float()), name  # same float ops: bit-identical
        else:
            # ε-free recovery by subtraction: float32 rounding of the ε-including state (NOTES §3).
            eps = opt.param_groups[0]["eps"]
            torch.testing.assert_close(got, want, rtol=2e-4, atol=1e-6 * eps + 1e-12)


def test_units_family():
    fam = {n: lookup(epsfinder._catalog.optimizer_class(n)).family for n in ADAPTIVE}
    assert {n for n, f in fam.items() if f == "squared"} == {"adabelief", "eadam", "adamomentum"}


def test_sgd_and_unknown_name_errors_name_the_fix():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=0.1)
    with pytest.raises(UnsupportedOptimizerError, match=r"SGD has no adaptive term.*adam.*register_term"):
        lookup(opt)
    with pytest.raises(UnsupportedOptimizerError, match=r"unknown optimizer name 'adamm'.*adabelief"):
        make_optimizer("adamm", [nn.Parameter(torch.zeros(2))])
    with pytest.raises(ValueError, match=r"adagrad.*has no β2"):
        make_optimizer("adagrad", [nn.Parameter(torch.zeros(2))], beta2=0.99)


def test_register_term_for_a_user_optimizer():
    class Signum(torch.optim.SGD):
        pass

    def fn(state, group):
        return state["momentum_buffer"].abs() if "momentum_buffer" in state else None

    try:
        register_term(Signum, fn, name="signum-abs")
        p = nn.Parameter(torch.ones(3))
        opt = Signum([p], lr=0.1, momentum=0.9)
        with epsfinder.EpsilonProbe(opt, schedule=epsfinder.every(1)) as probe:
            p.grad = torch.tensor([1e-3, 1e-2, 1e-1])
            opt.step()
        r = probe.result()
        assert r.optimizer == "signum-abs" and r.family == "magnitude"
        assert r.raw_lower == pytest.approx(1e-3, rel=0.01) and r.raw_upper == pytest.approx(1e-1, rel=0.01)
        assert "signum-abs" in supported_optimizers()
    finally:
        epsfinder.terms._USER.pop(Signum, None)
    with pytest.raises(TypeError, match="optimizer class"):
        register_term(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1), fn)


def test_supported_optimizers_filter():
    assert supported_optimizers("ada*") == ["adabelief", "adagrad", "adam", "adamax", "adamod", "adamomentum",
                                            "adamw"]


def test_eps_in_state_cancellation_warns():
    p = nn.Parameter(torch.zeros(1000))
    opt = make_optimizer("eadam", [p], eps=1e-4)  # resolution floor 1e-6·ε = 1e-10
    probe = epsfinder.EpsilonProbe(opt, schedule=epsfinder.every(1))
    with pytest.warns(RuntimeWarning, match="within 100× of that floor"):
        p.grad = torch.full((1000,), 1e-3)  # A = (1 − β2)·g² = 1e-9: resolved, within 100× of the floor
        opt.step()
    assert probe.result().raw_lower == pytest.approx(1e-9, rel=0.05)
    probe.detach()
    # Far below the floor: rounding noise is reported as zeros, never as a (negative or tiny) signal.
    q = nn.Parameter(torch.zeros(1000))
    opt2 = make_optimizer("eadam", [q], eps=1e-2)
    probe2 = epsfinder.EpsilonProbe(opt2, schedule=epsfinder.every(1))
    q.grad = torch.full((1000,), 1e-6)
    opt2.step()
    assert probe2.snapshots[-1].skipped == {"group0.param0": "all adaptive terms are zero"}
