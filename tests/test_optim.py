"""Tests for :mod:`epsfinder.optim` (EAdam and AdaMomentum).

Every optimizer is checked against an independent, hand-written float64 reference of its
update equations; the float32 runs are compared with ``rtol=1e-5, atol=1e-6`` and the
float64 runs with ``rtol=1e-10, atol=1e-12``.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from epsfinder.optim import AdaMomentum, EAdam

OptCls = type[EAdam] | type[AdaMomentum]
OPTIMIZERS: list[OptCls] = [EAdam, AdaMomentum]
SHAPES: list[tuple[int, ...]] = [(3,), (2, 4), (5, 1, 2), ()]
N_STEPS = 20

F32_TOL: dict[str, float] = {"rtol": 1e-5, "atol": 1e-6}
F64_TOL: dict[str, float] = {"rtol": 1e-10, "atol": 1e-12}


# ---------------------------------------------------------------------------------------------
# Independent float64 reference (plain arithmetic on float64 tensors, no in-place tricks).
# ---------------------------------------------------------------------------------------------


@dataclass
class RefState:
    """Reference state of one parameter tensor."""

    theta: torch.Tensor
    m: torch.Tensor
    v: torch.Tensor  # ε-included second moment, as the optimizers store it
    v_free: torch.Tensor  # the same EMA without ε
    v_max: torch.Tensor
    history: list[torch.Tensor] = field(default_factory=list)


def reference_run(
    kind: str,
    theta0: list[torch.Tensor],
    grads: list[list[torch.Tensor]],
    *,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float = 0.0,
    decoupled_weight_decay: bool = False,
    amsgrad: bool = False,
    maximize: bool = False,
    eps_in_denominator: bool = False,
) -> list[RefState]:
    """Run the update equations of EAdam / AdaMomentum in float64, straight from the papers."""
    b1, b2 = betas
    states = [
        RefState(
            theta=t.double().clone(),
            m=torch.zeros_like(t, dtype=torch.float64),
            v=torch.zeros_like(t, dtype=torch.float64),
            v_free=torch.zeros_like(t, dtype=torch.float64),
            v_max=torch.zeros_like(t, dtype=torch.float64),
        )
        for t in theta0
    ]
    for t, step_grads in enumerate(grads, start=1):
        for s, g_raw in zip(states, step_grads):
            g = g_raw.double()
            if maximize:
                g = -g
            if weight_decay != 0:
                if decoupled_weight_decay:
                    s.theta = s.theta * (1 - lr * weight_decay)
                else:
                    g = g + weight_decay * s.theta
            s.m = b1 * s.m + (1 - b1) * g
            sq = g * g if kind == "eadam" else s.m * s.m
            s.v = b2 * s.v + (1 - b2) * sq + eps
            s.v_free = b2 * s.v_free + (1 - b2) * sq
            s.v_max = torch.maximum(s.v_max, s.v)
            u = s.v_max if amsgrad else s.v
            m_hat = s.m / (1 - b1**t)
            u_hat = u / (1 - b2**t)
            if kind == "eadam" or eps_in_denominator:
                denom = torch.sqrt(u_hat) + eps
            else:
                denom = torch.sqrt(u_hat)
            s.theta = s.theta - lr * m_hat / denom
            s.history.append(s.theta.clone())
    return states


def _kind(cls: OptCls) -> str:
    return "eadam" if cls is EAdam else "adamomentum"


def _make_problem(
    seed: int, dtype: torch.dtype, grad_scale: float = 1.0
) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
    gen = torch.Generator().manual_seed(seed)
    theta0 = [torch.randn(shape, generator=gen, dtype=dtype) for shape in SHAPES]
    grads = [[grad_scale * torch.randn(shape, generator=gen, dtype=dtype) for shape in SHAPES] for _ in range(N_STEPS)]
    return theta0, grads


def _run_optimizer(
    cls: OptCls,
    theta0: list[torch.Tensor],
    grads: list[list[torch.Tensor]],
    **kwargs: Any,
) -> tuple[list[torch.nn.Parameter], EAdam | AdaMomentum, list[list[torch.Tensor]]]:
    params = [torch.nn.Parameter(t.clone()) for t in theta0]
    opt = cls(params, **kwargs)
    history: list[list[torch.Tensor]] = []
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = g.clone()
        opt.step()
        history.append([p.detach().clone() for p in params])
    return params, opt, history


CONFIGS: list[dict[str, Any]] = [
    {},
    {"eps": 1e-3},
    {"weight_decay": 0.1},
    {"weight_decay": 0.1, "decoupled_weight_decay": True, "eps": 1e-4},
    {"maximize": True, "eps": 1e-3},
    {"amsgrad": True, "eps": 1e-3},
    {"amsgrad": True, "weight_decay": 0.05, "maximize": True},
    {"betas": (0.5, 0.9), "eps": 1e-2},
    {"betas": (0.0, 0.0), "eps": 1e-6},
]


def _cases() -> list[Any]:
    cases = []
    for cls in OPTIMIZERS:
        for i, cfg in enumerate(CONFIGS):
            cases.append(pytest.param(cls, cfg, id=f"{cls.__name__}-{i}"))
    cases.append(pytest.param(AdaMomentum, {"eps_in_denominator": True, "eps": 1e-2}, id="AdaMomentum-epsden"))
    cases.append(
        pytest.param(
            AdaMomentum,
            {"eps_in_denominator": True, "amsgrad": True, "eps": 1e-3, "weight_decay": 0.1},
            id="AdaMomentum-epsden-ams",
        )
    )
    return cases


def _full_kwargs(cfg: dict[str, Any]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"lr": 1e-2, "betas": (0.9, 0.999), "eps": 1e-8}
    kwargs.update(cfg)
    return kwargs


# ---------------------------------------------------------------------------------------------
# Agreement with the reference
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("cls", "cfg"), _cases())
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, F32_TOL), (torch.float64, F64_TOL)], ids=["f32", "f64"])
def test_matches_float64_reference(cls: OptCls, cfg: dict[str, Any], dtype: torch.dtype, tol: dict[str, float]) -> None:
    kwargs = _full_kwargs(cfg)
    theta0, grads = _make_problem(seed=1234, dtype=dtype)
    params, opt, history = _run_optimizer(cls, theta0, grads, **kwargs)
    ref = reference_run(_kind(cls), theta0, grads, **kwargs)

    for i, (p, r) in enumerate(zip(params, ref)):
        for t in range(N_STEPS):
            torch.testing.assert_close(history[t][i].double(), r.history[t], **tol, msg=f"param {i} step {t + 1}")
        state = opt.state[p]
        assert state["step"].dtype == torch.float32
        assert state["step"].device.type == "cpu"
        assert state["step"].item() == N_STEPS
        torch.testing.assert_close(state["exp_avg"].double(), r.m, **tol)
        torch.testing.assert_close(state["exp_avg_sq"].double(), r.v, **tol)
        if kwargs.get("amsgrad"):
            torch.testing.assert_close(state["max_exp_avg_sq"].double(), r.v_max, **tol)
        else:
            assert "max_exp_avg_sq" not in state


@pytest.mark.parametrize("cls", OPTIMIZERS)
@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("beta2", [0.999, 0.9])
def test_exp_avg_sq_contract_includes_accumulated_eps(cls: OptCls, amsgrad: bool, beta2: float) -> None:
    """``exp_avg_sq`` = ε-free EMA + ε·(1−β2^t)/(1−β2), at every step."""
    eps = 1e-3  # large, so the ε part dominates the small gradients below
    theta0, grads = _make_problem(seed=7, dtype=torch.float64, grad_scale=1e-2)
    params = [torch.nn.Parameter(t.clone()) for t in theta0]
    opt = cls(params, lr=1e-2, betas=(0.9, beta2), eps=eps, amsgrad=amsgrad)
    ref_free = [torch.zeros_like(t) for t in theta0]
    ref_m = [torch.zeros_like(t) for t in theta0]
    for t, step_grads in enumerate(grads, start=1):
        for p, g in zip(params, step_grads):
            p.grad = g.clone()
        opt.step()
        for j, (p, g) in enumerate(zip(params, step_grads)):
            ref_m[j] = 0.9 * ref_m[j] + 0.1 * g
            sq = g * g if cls is EAdam else ref_m[j] * ref_m[j]
            ref_free[j] = beta2 * ref_free[j] + (1 - beta2) * sq
            accumulated = eps * (1 - beta2**t) / (1 - beta2)
            torch.testing.assert_close(opt.state[p]["exp_avg_sq"], ref_free[j] + accumulated, **F64_TOL)
            # The ε part is far from negligible here, so the check is meaningful.
            assert accumulated > 10 * ref_free[j].max().item()


@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_eadam_with_zero_eps_is_torch_adam(amsgrad: bool, weight_decay: float) -> None:
    """With ε = 0 the EAdam change vanishes: it must reproduce torch.optim.Adam exactly."""
    theta0, grads = _make_problem(seed=99, dtype=torch.float32)
    kwargs: dict[str, Any] = {"lr": 1e-2, "eps": 0.0, "amsgrad": amsgrad, "weight_decay": weight_decay}
    params, _, _ = _run_optimizer(EAdam, theta0, grads, **kwargs)
    torch_params = [torch.nn.Parameter(t.clone()) for t in theta0]
    adam = torch.optim.Adam(torch_params, foreach=False, **kwargs)
    for step_grads in grads:
        for p, g in zip(torch_params, step_grads):
            p.grad = g.clone()
        adam.step()
    for p, q in zip(params, torch_params):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_eadam_differs_from_adam_with_default_eps() -> None:
    """Sanity: the accumulated ε actually changes the trajectory (effective ε ≈ sqrt(ε/(1−β2)))."""
    theta0, grads = _make_problem(seed=5, dtype=torch.float64, grad_scale=1e-3)
    params, _, _ = _run_optimizer(EAdam, theta0, grads, lr=1e-2)
    torch_params = [torch.nn.Parameter(t.clone()) for t in theta0]
    adam = torch.optim.Adam(torch_params, lr=1e-2, foreach=False)
    for step_grads in grads:
        for p, g in zip(torch_params, step_grads):
            p.grad = g.clone()
        adam.step()
    moved_eadam = (params[0] - theta0[0]).abs().max().item()
    moved_adam = (torch_params[0] - theta0[0]).abs().max().item()
    # |g| ~ 1e-3 vs effective ε ≈ 3.2e-3: EAdam's steps are markedly smaller than Adam's.
    assert moved_eadam < 0.7 * moved_adam


def test_adamomentum_eps_in_denominator_is_a_small_change() -> None:
    theta0, grads = _make_problem(seed=3, dtype=torch.float64)
    a, _, _ = _run_optimizer(AdaMomentum, theta0, grads, lr=1e-2)
    b, _, _ = _run_optimizer(AdaMomentum, theta0, grads, lr=1e-2, eps_in_denominator=True)
    for p, q in zip(a, b):
        assert not torch.equal(p, q)
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-8)


# ---------------------------------------------------------------------------------------------
# Hypothesis properties
# ---------------------------------------------------------------------------------------------

_grad_values = st.one_of(
    st.just(0.0),
    st.floats(min_value=1e-6, max_value=1e3, allow_subnormal=False),
    st.floats(min_value=-1e3, max_value=-1e-6, allow_subnormal=False),
)


@settings(max_examples=150, deadline=None)
@given(
    use_eadam=st.booleans(),
    beta1=st.floats(min_value=0.0, max_value=0.999),
    beta2=st.floats(min_value=0.0, max_value=0.9999),
    eps=st.floats(min_value=1e-16, max_value=1e-1),
    lr=st.floats(min_value=1e-6, max_value=1.0),
    maximize=st.booleans(),
    values=st.lists(_grad_values, min_size=1, max_size=8),
)
def test_first_step_closed_form_sign_and_bound(
    use_eadam: bool,
    beta1: float,
    beta2: float,
    eps: float,
    lr: float,
    maximize: bool,
    values: list[float],
) -> None:
    """Step 1 from θ=0: the update has the closed form below, opposes the (ascent-adjusted) gradient
    sign, is exactly 0 where g=0, and is bounded by lr (EAdam) or lr/(1−β1) (AdaMomentum).

    EAdam:        Δ = −lr·g / (sqrt(g² + ε/(1−β2)) + ε)
    AdaMomentum:  Δ = −lr·g / sqrt((1−β1)² g² + ε/(1−β2))
    """
    g = torch.tensor(values, dtype=torch.float64)
    p = torch.nn.Parameter(torch.zeros_like(g))
    p.grad = g.clone()
    cls: OptCls = EAdam if use_eadam else AdaMomentum
    opt = cls([p], lr=lr, betas=(beta1, beta2), eps=eps, maximize=maximize)
    opt.step()
    delta = p.detach()
    d = -g if maximize else g  # descent direction is −d

    if use_eadam:
        expected = -lr * d / (torch.sqrt(d * d + eps / (1 - beta2)) + eps)
        bound = lr
    else:
        expected = -lr * d / torch.sqrt((1 - beta1) ** 2 * d * d + eps / (1 - beta2))
        bound = lr / (1 - beta1)

    assert torch.isfinite(delta).all()
    torch.testing.assert_close(delta, expected, rtol=1e-9, atol=0.0)
    assert torch.equal(torch.sign(delta), -torch.sign(d))
    assert (delta.abs() <= bound * (1 + 1e-12)).all()


@settings(max_examples=100, deadline=None)
@given(
    use_eadam=st.booleans(),
    beta2=st.floats(min_value=0.0, max_value=0.9999),
    eps=st.floats(min_value=0.0, max_value=1.0),
    n_steps=st.integers(min_value=1, max_value=30),
    amsgrad=st.booleans(),
)
def test_zero_gradients_leave_params_and_accumulate_eps(
    use_eadam: bool, beta2: float, eps: float, n_steps: int, amsgrad: bool
) -> None:
    """With g ≡ 0 the parameters never move and exp_avg_sq is exactly the ε geometric series."""
    cls: OptCls = EAdam if use_eadam else AdaMomentum
    p = torch.nn.Parameter(torch.linspace(-1, 1, 5, dtype=torch.float64))
    before = p.detach().clone()
    opt = cls([p], lr=0.1, betas=(0.9, beta2), eps=eps, amsgrad=amsgrad)
    for _ in range(n_steps):
        p.grad = torch.zeros_like(p)
        opt.step()
    if eps > 0:
        assert torch.equal(p.detach(), before)
    expected = eps * sum(beta2**i for i in range(n_steps))
    assert math.isclose(expected, eps * (1 - beta2**n_steps) / (1 - beta2), rel_tol=1e-9, abs_tol=1e-300)
    torch.testing.assert_close(opt.state[p]["exp_avg_sq"], torch.full_like(p, expected), rtol=1e-12, atol=1e-300)


# ---------------------------------------------------------------------------------------------
# API behaviour
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", OPTIMIZERS)
@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"lr": -0.1}, r"learning rate: lr=-0\.1"),
        ({"lr": float("nan")}, r"learning rate: lr=nan"),
        ({"eps": -1e-8}, r"epsilon value: eps=-1e-08"),
        ({"betas": (1.0, 0.999)}, r"index 0: betas\[0\]=1\.0"),
        ({"betas": (-0.1, 0.999)}, r"index 0: betas\[0\]=-0\.1"),
        ({"betas": (0.9, 1.0)}, r"index 1: betas\[1\]=1\.0"),
        ({"betas": (0.9, -0.5)}, r"index 1: betas\[1\]=-0\.5"),
        ({"betas": (0.9,)}, r"betas=\(0\.9,\)"),
        ({"weight_decay": -0.01}, r"weight_decay value: weight_decay=-0\.01"),
    ],
)
def test_invalid_hyperparameters_raise(cls: OptCls, kwargs: dict[str, Any], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        cls([torch.nn.Parameter(torch.zeros(2))], **kwargs)


@pytest.mark.parametrize("cls", OPTIMIZERS)
def test_defaults(cls: OptCls) -> None:
    opt = cls([torch.nn.Parameter(torch.zeros(2))])
    group = opt.param_groups[0]
    assert group["lr"] == 1e-3
    assert group["betas"] == (0.9, 0.999)
    assert group["eps"] == 1e-8
    assert group["weight_decay"] == 0
    assert group["amsgrad"] is False
    assert group["maximize"] is False
    assert group["decoupled_weight_decay"] is False


@pytest.mark.parametrize("cls", OPTIMIZERS)
def test_param_without_grad_is_skipped(cls: OptCls) -> None:
    a = torch.nn.Parameter(torch.ones(3))
    b = torch.nn.Parameter(torch.ones(3))
    opt = cls([a, b], lr=0.1, weight_decay=0.1, decoupled_weight_decay=True)
    a.grad = torch.ones(3)
    opt.step()
    assert b.grad is None
    assert torch.equal(b.detach(), torch.ones(3))
    assert len(opt.state[b]) == 0
    assert not torch.equal(a.detach(), torch.ones(3))
    assert opt.state[a]["step"].item() == 1


@pytest.mark.parametrize("cls", OPTIMIZERS)
@pytest.mark.parametrize("amsgrad", [False, True])
def test_state_dict_round_trip(cls: OptCls, amsgrad: bool, tmp_path: Path) -> None:
    theta0, grads = _make_problem(seed=11, dtype=torch.float32)
    kwargs: dict[str, Any] = {"lr": 1e-2, "eps": 1e-4, "weight_decay": 0.01, "amsgrad": amsgrad}
    params = [torch.nn.Parameter(t.clone()) for t in theta0]
    opt = cls(params, **kwargs)

    def run(ps: list[torch.nn.Parameter], o: EAdam | AdaMomentum, steps: range) -> None:
        for t in steps:
            for p, g in zip(ps, grads[t]):
                p.grad = g.clone()
            o.step()

    run(params, opt, range(10))
    path = tmp_path / "opt.pt"
    torch.save(opt.state_dict(), path)

    clones = [torch.nn.Parameter(p.detach().clone()) for p in params]
    # Constructed with different hyperparameters: load_state_dict must restore the saved ones.
    restored = cls(clones, lr=0.5)
    restored.load_state_dict(torch.load(path, weights_only=True))
    assert restored.param_groups[0]["lr"] == 1e-2
    for q in clones:
        assert restored.state[q]["step"].dtype == torch.float32
        assert restored.state[q]["step"].device.type == "cpu"

    run(params, opt, range(10, N_STEPS))
    run(clones, restored, range(10, N_STEPS))
    for p, q in zip(params, clones):
        assert torch.equal(p, q)
        for key, value in opt.state[p].items():
            assert torch.equal(value, restored.state[q][key]), key


@pytest.mark.parametrize("cls", OPTIMIZERS)
def test_setstate_backfills_legacy_state(cls: OptCls) -> None:
    p = torch.nn.Parameter(torch.ones(2))
    opt = cls([p])
    p.grad = torch.ones(2)
    opt.step()
    legacy_groups = [
        {k: v for k, v in g.items() if k not in {"amsgrad", "maximize", "decoupled_weight_decay"}}
        for g in opt.param_groups
    ]
    legacy_state = {p: {**opt.state[p], "step": 1}}
    opt.__setstate__({"state": legacy_state, "param_groups": legacy_groups})
    assert opt.param_groups[0]["amsgrad"] is False
    assert opt.param_groups[0]["maximize"] is False
    assert opt.param_groups[0]["decoupled_weight_decay"] is False
    assert torch.is_tensor(opt.state[p]["step"])
    assert opt.state[p]["step"].dtype == torch.float32
    p.grad = torch.ones(2)
    opt.step()
    assert opt.state[p]["step"].item() == 2


@pytest.mark.parametrize("cls", OPTIMIZERS)
def test_regression_loss_decreases(cls: OptCls) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=gen)
    w_true = torch.tensor([[1.5], [-2.0], [0.5], [3.0]])
    y = x @ w_true + 0.01 * torch.randn(64, 1, generator=gen)
    model = torch.nn.Linear(4, 1)
    torch.nn.init.zeros_(model.weight)
    torch.nn.init.zeros_(model.bias)
    opt = cls(model.parameters(), lr=0.05)

    def closure() -> float:
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        return float(loss.detach())

    initial = closure()
    for _ in range(300):
        loss = opt.step(closure)
    assert loss is not None
    assert loss < 1e-2 * initial


@pytest.mark.parametrize("cls", OPTIMIZERS)
def test_sparse_gradients_raise(cls: OptCls) -> None:
    emb = torch.nn.Embedding(10, 3, sparse=True)
    opt = cls(emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    assert emb.weight.grad is not None and emb.weight.grad.is_sparse
    with pytest.raises(RuntimeError, match=f"{cls.__name__} does not support sparse gradients"):
        opt.step()


@pytest.mark.parametrize("cls", OPTIMIZERS)
def test_complex_params_match_real_view(cls: OptCls) -> None:
    gen = torch.Generator().manual_seed(4)
    z = torch.nn.Parameter(torch.randn(3, dtype=torch.complex64, generator=gen))
    r = torch.nn.Parameter(torch.view_as_real(z.detach()).clone())
    oz = cls([z], lr=1e-2, amsgrad=True, weight_decay=0.1)
    orr = cls([r], lr=1e-2, amsgrad=True, weight_decay=0.1)
    for _ in range(5):
        g = torch.randn(3, dtype=torch.complex64, generator=gen)
        z.grad = g
        r.grad = torch.view_as_real(g).clone()
        oz.step()
        orr.step()
    torch.testing.assert_close(torch.view_as_real(z.detach()), r.detach(), rtol=0, atol=0)


def test_public_api() -> None:
    import epsfinder.optim as optim

    assert sorted(optim.__all__) == ["AdaMomentum", "EAdam"]
    for cls in OPTIMIZERS:
        assert issubclass(cls, torch.optim.Optimizer)
        assert cls.__doc__ is not None and "exp_avg_sq" in cls.__doc__
        assert "arXiv" in (sys.modules[cls.__module__].__doc__ or "")
