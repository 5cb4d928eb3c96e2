"""The adaptive-term registry: optimizer state → the per-element quantity ``A`` that ε competes with.

Every adaptive optimizer divides its step by ``A + ε`` (or ``sqrt(A + ε)``); ``A`` is what the paper's histograms
show (NOTES §3, the paper's Table V). Each entry of the registry is a :class:`TermSpec`: a function that reads
one parameter's state and its param group and returns an :class:`AdaptiveTerm`, plus the *unit family*:

* ``"magnitude"``: ``A`` is a root of squared gradients, in gradient units (Adam ``sqrt(v̂)``, RMSprop
  ``sqrt(v)``, AdaGrad ``sqrt(G)``, Adamax ``u``, DiffGrad/AdaMod ``sqrt(v̂)``, MADGRAD ``G^(1/3)``); ε is
  compared with ``A`` directly; grids step by ×10.
* ``"squared"``: ``A`` is in squared-gradient units because ε sits inside the root (AdaBelief, EAdam,
  AdaMomentum add ε into their EMA every step); the ranges span twice the decades; grids step by ×100.

The functions never write to the state. Users add optimizers with :func:`register_term`.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch

from epsfinder.errors import UnsupportedOptimizerError

__all__ = [
    "AdaptiveTerm",
    "TermSpec",
    "adam_term",
    "lookup",
    "register_term",
    "supported_optimizers",
]

Family = Literal["magnitude", "squared"]
#: For optimizers that add ε into their state: the smallest ``A`` resolved, as a multiple of ε.
RESOLUTION = 1e-6
State = Mapping[str, Any]
Group = Mapping[str, Any]
#: ``fn(state, group) -> AdaptiveTerm | Tensor | None`` (None: no state yet for this parameter).
TermFn = Callable[[State, Group], "AdaptiveTerm | torch.Tensor | None"]


@dataclass(frozen=True)
class AdaptiveTerm:
    """``A`` for one parameter tensor, computed lazily and elementwise from state tensors.

    ``op(out, *chunks)`` writes the float32 ``A`` of same-position chunks of ``inputs`` (flattened) into ``out``
    and returns it, so ``A`` is computed a chunk at a time into one reused buffer: no full-size copy and no
    allocation per chunk. ``op`` must never write to its inputs.
    """

    inputs: tuple[torch.Tensor, ...]
    op: Callable[..., torch.Tensor]

    @property
    def numel(self) -> int:
        return self.inputs[0].numel()

    @property
    def device(self) -> torch.device:
        return self.inputs[0].device

    def chunks(self, size: int) -> Iterator[torch.Tensor]:
        """``A`` in consecutive float32 chunks of at most ``size`` elements.

        The chunks share one buffer: each is valid until the next is produced, and the consumer may overwrite it.
        """
        flats = [t.detach().reshape(-1) for t in self.inputs]
        n = flats[0].numel()
        size = max(1, min(size, n))
        buf = torch.empty(size, dtype=torch.float32, device=self.device)
        for start in range(0, n, size):
            parts = [f[start : start + size] for f in flats]
            yield self.op(buf[: parts[0].numel()], *parts)

    def full(self) -> torch.Tensor:
        """``A`` as one flat float32 tensor (one full-size allocation)."""
        out = torch.empty(self.numel, dtype=torch.float32, device=self.device)
        return self.op(out, *(t.detach().reshape(-1) for t in self.inputs))

    @classmethod
    def of_tensor(cls, a: torch.Tensor) -> AdaptiveTerm:
        """Wrap an already computed ``A`` (what a user's term function may return)."""
        return cls((a,), _copy)


@dataclass(frozen=True)
class TermSpec:
    """A registry entry: how to get ``A`` from one optimizer class's state."""

    name: str
    family: Family
    fn: TermFn
    #: True when the optimizer adds ε into its state each step (``A`` is then the ε-free quantity, recovered by
    #: subtraction; see :func:`_eps_free_term`).
    eps_in_state: bool = False
    formula: str = ""

    def term(self, state: State, group: Group) -> AdaptiveTerm | None:
        out = self.fn(state, group)
        if out is None or isinstance(out, AdaptiveTerm):
            return out
        if isinstance(out, torch.Tensor):
            return AdaptiveTerm.of_tensor(out)
        raise TypeError(
            f"the term function for {self.name!r} returned {type(out).__name__}; it must return a Tensor, "
            "an AdaptiveTerm or None"
        )


# ---------------------------------------------------------------------------------------------- helpers
def _copy(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return out.copy_(x)


def _sqrt(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    if x.dtype == torch.float32:
        return torch.sqrt(x, out=out)
    return out.copy_(x).sqrt_()


def _step_of(state: State, group: Group) -> float:
    """The step count ``t`` of a parameter: torch keeps it in the state (tensor), pytorch_optimizer in the group."""
    step = state.get("step", group.get("step"))
    if step is None:
        raise KeyError("no 'step' in the parameter state or its param group")
    return float(step.item() if isinstance(step, torch.Tensor) else step)


def _beta2(group: Group) -> float:
    betas = group.get("betas")
    if betas is not None:
        return float(betas[1])
    return float(group["beta2"])


def _bias_correction2(state: State, group: Group) -> float:
    return 1.0 - _beta2(group) ** _step_of(state, group)


def adam_term(v: torch.Tensor, *, step: float, beta2: float) -> AdaptiveTerm:
    """Adam's ``A = sqrt(v) / sqrt(1 − β2^t)`` (= ``sqrt(v̂)``), computed as torch.optim.Adam forms its denominator.

    Args:
        v: the second-moment EMA ``exp_avg_sq`` (or ``max_exp_avg_sq`` for AMSGrad), squared-gradient units.
        step: ``t``, the number of steps taken.
        beta2: the EMA's decay.

    >>> v = torch.tensor([4e-6, 0.0])
    >>> adam_term(v, step=1, beta2=0.999).full()
    tensor([0.0632, 0.0000])
    """
    bc2_sqrt = math.sqrt(1.0 - beta2**step)

    def op(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return _sqrt(out, x).div_(bc2_sqrt)

    return AdaptiveTerm((v,), op)


def _sqrt_term(v: torch.Tensor) -> AdaptiveTerm:
    return AdaptiveTerm((v,), _sqrt)


def _eps_free_term(s: torch.Tensor, *, step: float, beta2: float, eps: float) -> AdaptiveTerm:
    """``A = (1 − β2)·s′/bc2`` for a state ``s = s′ + ε·Σ_{i<t} β2^i`` that absorbed ε every step.

    Since ``Σ_{i<t} β2^i = bc2/(1 − β2)``, ``A = (1 − β2)·s/bc2 − ε``. The subtraction cancels digits when ε is
    large against ``A``: a float32 state holds ``A`` to about ``1e-7·(A + ε)`` (more after many rounded steps),
    so ``RESOLUTION·ε`` (``1e-6·ε``) is the smallest ``A`` this reading resolves. Values of magnitude below it are
    set to exactly zero (they are rounding noise, possibly negative, not signal) and so count as zeros; the probe
    warns when a percentile of Algorithm 2 comes within 100× of that floor.
    """
    scale = (1.0 - beta2) / (1.0 - beta2**step)
    floor = RESOLUTION * eps

    def op(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        a = torch.mul(x, scale, out=out) if x.dtype == torch.float32 else out.copy_(x).mul_(scale)
        a.sub_(eps)
        return a.masked_fill_(a.abs() < floor, 0.0)

    return AdaptiveTerm((s,), op)


# ---------------------------------------------------------------------------------------------- terms
def _adam(state: State, group: Group) -> AdaptiveTerm | None:
    key = "max_exp_avg_sq" if group.get("amsgrad") and "max_exp_avg_sq" in state else "exp_avg_sq"
    if key not in state:
        return None
    return adam_term(state[key], step=_step_of(state, group), beta2=_beta2(group))


def _rmsprop(state: State, group: Group) -> AdaptiveTerm | None:
    if "square_avg" not in state:
        return None
    if group.get("centered") and "grad_avg" in state:

        def op(out: torch.Tensor, v: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
            g32 = g.to(torch.float32)
            return out.copy_(v).addcmul_(g32, g32, value=-1).sqrt_()

        return AdaptiveTerm((state["square_avg"], state["grad_avg"]), op)
    return _sqrt_term(state["square_avg"])


def _adagrad(state: State, group: Group) -> AdaptiveTerm | None:
    return _sqrt_term(state["sum"]) if "sum" in state else None


def _adamax(state: State, group: Group) -> AdaptiveTerm | None:
    return AdaptiveTerm((state["exp_inf"],), _copy) if "exp_inf" in state else None


def _adam_like_group_step(state: State, group: Group) -> AdaptiveTerm | None:
    """DiffGrad, AdaMod (pytorch_optimizer): ``sqrt(v̂)`` with the step count in the group."""
    key = "max_exp_avg_sq" if group.get("ams_bound") and "max_exp_avg_sq" in state else "exp_avg_sq"
    if key not in state:
        return None
    return adam_term(state[key], step=_step_of(state, group), beta2=_beta2(group))


def _madgrad(state: State, group: Group) -> AdaptiveTerm | None:
    if "grad_sum_sq" not in state:
        return None
    return AdaptiveTerm((state["grad_sum_sq"],), lambda out, x: out.copy_(x).pow_(1.0 / 3.0))


def _adabelief(state: State, group: Group) -> AdaptiveTerm | None:
    key = "max_exp_avg_var" if group.get("ams_bound") and "max_exp_avg_var" in state else "exp_avg_var"
    if key not in state:
        return None
    return _eps_free_term(state[key], step=_step_of(state, group), beta2=_beta2(group), eps=float(group["eps"]))


def _eps_in_ema(state: State, group: Group) -> AdaptiveTerm | None:
    """EAdam, AdaMomentum (epsfinder.optim): ``exp_avg_sq`` includes the accumulated ε."""
    key = "max_exp_avg_sq" if group.get("amsgrad") and "max_exp_avg_sq" in state else "exp_avg_sq"
    if key not in state:
        return None
    return _eps_free_term(state[key], step=_step_of(state, group), beta2=_beta2(group), eps=float(group["eps"]))


# Built-in entries keyed by "module:ClassName" so optional packages are never imported to build the table.
_ADAM_FORMULA = "sqrt(exp_avg_sq) / sqrt(1 - beta2^t)"
_BUILTIN: dict[str, TermSpec] = {
    "torch.optim.adam:Adam": TermSpec("adam", "magnitude", _adam, formula=_ADAM_FORMULA),
    "torch.optim.adamw:AdamW": TermSpec("adamw", "magnitude", _adam, formula=_ADAM_FORMULA),
    "torch.optim.nadam:NAdam": TermSpec("nadam", "magnitude", _adam, formula=_ADAM_FORMULA),
    "torch.optim.radam:RAdam": TermSpec("radam", "magnitude", _adam, formula=_ADAM_FORMULA),
    "torch.optim.adamax:Adamax": TermSpec("adamax", "magnitude", _adamax, formula="exp_inf (eps inside the max)"),
    "torch.optim.rmsprop:RMSprop": TermSpec(
        "rmsprop", "magnitude", _rmsprop, formula="sqrt(square_avg) or sqrt(square_avg - grad_avg^2) centered"
    ),
    "torch.optim.adagrad:Adagrad": TermSpec("adagrad", "magnitude", _adagrad, formula="sqrt(sum)"),
    "pytorch_optimizer.optimizer.adabelief:AdaBelief": TermSpec(
        "adabelief", "squared", _adabelief, eps_in_state=True, formula="(1 - beta2) * exp_avg_var / bc2 - eps"
    ),
    "pytorch_optimizer.optimizer.diffgrad:DiffGrad": TermSpec(
        "diffgrad", "magnitude", _adam_like_group_step, formula=_ADAM_FORMULA
    ),
    "pytorch_optimizer.optimizer.adamod:AdaMod": TermSpec(
        "adamod", "magnitude", _adam_like_group_step, formula=_ADAM_FORMULA
    ),
    "pytorch_optimizer.optimizer.madgrad:MADGRAD": TermSpec(
        "madgrad", "magnitude", _madgrad, formula="grad_sum_sq^(1/3)"
    ),
    "epsfinder.optim.eadam:EAdam": TermSpec(
        "eadam", "squared", _eps_in_ema, eps_in_state=True, formula="(1 - beta2) * exp_avg_sq / bc2 - eps"
    ),
    "epsfinder.optim.adamomentum:AdaMomentum": TermSpec(
        "adamomentum", "squared", _eps_in_ema, eps_in_state=True, formula="(1 - beta2) * exp_avg_sq / bc2 - eps"
    ),
}
_USER: dict[type, TermSpec] = {}


def _key(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def register_term(cls: type, fn: TermFn, *, squared: bool = False, name: str | None = None) -> TermSpec:
    """Register the adaptive term of a user optimizer class.

    Args:
        cls: the optimizer class (subclasses resolve to it unless they have their own entry).
        fn: ``fn(state, group)`` returning ``A`` for one parameter as a Tensor (or an :class:`AdaptiveTerm`), or
            None when that parameter has no state yet. ``state`` is ``optimizer.state[param]``, ``group`` its
            param group. It must not modify either.
        squared: True when ε is compared with a squared-gradient quantity (ε inside the square root).
        name: the name shown in results (default: the class name, lower-cased).

    Returns:
        the registered :class:`TermSpec`.
    """
    if not isinstance(cls, type):
        raise TypeError(f"register_term needs an optimizer class, got {cls!r}; pass type(optimizer)")
    if not callable(fn):
        raise TypeError(f"register_term needs a callable fn(state, group), got {fn!r}")
    spec = TermSpec(name or cls.__name__.lower(), "squared" if squared else "magnitude", fn)
    _USER[cls] = spec
    return spec


def lookup(optimizer: torch.optim.Optimizer | type) -> TermSpec:
    """The :class:`TermSpec` of an optimizer (instance or class), searching its MRO.

    Raises:
        UnsupportedOptimizerError: no entry (e.g. SGD, which has no adaptive term); the message lists the
            supported optimizers and how to register one.
    """
    cls = optimizer if isinstance(optimizer, type) else type(optimizer)
    for klass in cls.__mro__:
        if klass in _USER:
            return _USER[klass]
        spec = _BUILTIN.get(_key(klass))
        if spec is not None:
            return spec
    hint = " SGD has no adaptive term, so ε plays no role in it." if "SGD" in cls.__name__ else ""
    raise UnsupportedOptimizerError(
        f"no adaptive term is known for optimizer class {cls.__module__}.{cls.__qualname__}.{hint} "
        f"Supported: {', '.join(supported_optimizers())}. For your own optimizer, call "
        "epsfinder.register_term(YourOptimizer, fn) with fn(state, group) returning its adaptive term."
    )


def supported_optimizers(pattern: str = "*") -> list[str]:
    """Sorted names of the optimizers with a known adaptive term, filtered by a shell-style ``pattern``."""
    names = {s.name for s in _BUILTIN.values()} | {s.name for s in _USER.values()}
    return sorted(n for n in names if fnmatch.fnmatch(n, pattern.lower()))


def builtin_specs() -> dict[str, TermSpec]:
    """The built-in table, keyed by ``"module:ClassName"`` (for docs and ``epsfinder optimizers``)."""
    return dict(_BUILTIN)
