"""Shared machinery of the Adam-family optimizers in which ε enters the second moment.

:class:`~epsfinder.optim.EAdam` and :class:`~epsfinder.optim.AdaMomentum` run the same
step loop and differ only in what is squared into :math:`v_t` (:math:`g_t` or :math:`m_t`)
and in whether ε is also added to the denominator; :class:`_EpsInSecondMoment` holds that loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.optim import Optimizer

ParamsT = Iterable[Tensor] | Iterable[dict[str, Any]]


def _validate_hyperparameters(lr: float, betas: tuple[float, float], eps: float, weight_decay: float) -> None:
    """Raise ``ValueError`` naming the offending hyperparameter and its value.

    Shared by :class:`EAdam` and :class:`~epsfinder.optim.AdaMomentum`.
    The comparisons are written as ``not (lo <= x)`` so that NaN is rejected too.
    """
    if not 0.0 <= lr:
        raise ValueError(f"Invalid learning rate: lr={lr}")
    if not 0.0 <= eps:
        raise ValueError(f"Invalid epsilon value: eps={eps}")
    if len(betas) != 2:
        raise ValueError(f"Invalid betas: expected a pair (beta1, beta2), got betas={betas}")
    if not 0.0 <= betas[0] < 1.0:
        raise ValueError(f"Invalid beta parameter at index 0: betas[0]={betas[0]}")
    if not 0.0 <= betas[1] < 1.0:
        raise ValueError(f"Invalid beta parameter at index 1: betas[1]={betas[1]}")
    if not 0.0 <= weight_decay:
        raise ValueError(f"Invalid weight_decay value: weight_decay={weight_decay}")


def _backfill_step_tensors(optimizer: Optimizer) -> None:
    """Convert a legacy numeric ``state['step']`` into a float32 CPU tensor (as torch Adam does)."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            p_state = optimizer.state.get(p, {})
            if len(p_state) != 0 and not torch.is_tensor(p_state["step"]):
                p_state["step"] = torch.tensor(float(p_state["step"]), dtype=torch.float32)


class _EpsInSecondMoment(Optimizer):
    """Adam whose ε is added to ``exp_avg_sq`` every step; subclasses pick what is squared.

    Class attributes:
        _display_name: Name used in error messages.
        _squares_momentum: Square the (already updated) momentum :math:`m_t` into :math:`v_t`
            instead of the gradient :math:`g_t`.
        _extra_group_defaults: Extra per-group flags with their legacy defaults (backfilled by
            ``__setstate__``).
    """

    _display_name: ClassVar[str]
    _squares_momentum: ClassVar[bool]
    _extra_group_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        params: ParamsT,
        lr: float,
        betas: tuple[float, float],
        eps: float,
        weight_decay: float,
        amsgrad: bool,
        maximize: bool,
        decoupled_weight_decay: bool,
        **extra: Any,
    ) -> None:
        _validate_hyperparameters(lr, betas, eps, weight_decay)
        defaults: dict[str, Any] = {
            "lr": lr,
            "betas": (float(betas[0]), float(betas[1])),
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
            "maximize": maximize,
            "decoupled_weight_decay": decoupled_weight_decay,
            **extra,
        }
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        legacy = {"amsgrad": False, "maximize": False, "decoupled_weight_decay": False, **self._extra_group_defaults}
        for group in self.param_groups:
            for key, value in legacy.items():
                group.setdefault(key, value)
        _backfill_step_tensors(self)

    def _eps_in_denominator(self, group: dict[str, Any]) -> bool:
        """Whether ε is also added to :math:`\\sqrt{\\hat u_t}` for this parameter group (a group without the
        ``eps_in_denominator`` setting, as EAdam's, always adds it)."""
        return bool(group.get("eps_in_denominator", True))

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Perform a single optimization step.

        Args:
            closure: A closure that re-evaluates the model and returns the loss.

        Returns:
            The loss returned by ``closure``, or ``None``.

        Raises:
            RuntimeError: If a parameter has a sparse gradient.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr: float = group["lr"]
            eps: float = group["eps"]
            weight_decay: float = group["weight_decay"]
            eps_in_denominator = self._eps_in_denominator(group)

            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(f"{self._display_name} does not support sparse gradients")

                state = self.state[p]
                if len(state) == 0:
                    state["step"] = torch.tensor(0.0, dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                if group["amsgrad"] and "max_exp_avg_sq" not in state:
                    state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)

                grad = -p.grad if group["maximize"] else p.grad
                param = p
                exp_avg: Tensor = state["exp_avg"]
                exp_avg_sq: Tensor = state["exp_avg_sq"]
                max_exp_avg_sq: Tensor | None = state["max_exp_avg_sq"] if group["amsgrad"] else None
                if torch.is_complex(param):
                    # Treat real and imaginary parts as independent real parameters (as torch Adam).
                    param = torch.view_as_real(param)
                    grad = torch.view_as_real(grad)
                    exp_avg = torch.view_as_real(exp_avg)
                    exp_avg_sq = torch.view_as_real(exp_avg_sq)
                    if max_exp_avg_sq is not None:
                        max_exp_avg_sq = torch.view_as_real(max_exp_avg_sq)

                state["step"] += 1
                step = float(state["step"].item())

                if weight_decay != 0:
                    if group["decoupled_weight_decay"]:
                        param.mul_(1 - lr * weight_decay)
                    else:
                        grad = grad.add(param, alpha=weight_decay)

                exp_avg.lerp_(grad, 1 - beta1)
                # EAdam squares g_t, AdaMomentum the (already updated) momentum m_t;
                # both add ε to the second moment every step.
                squared = exp_avg if self._squares_momentum else grad
                exp_avg_sq.mul_(beta2).addcmul_(squared, squared, value=1 - beta2).add_(eps)

                if max_exp_avg_sq is not None:
                    torch.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
                    second_moment = max_exp_avg_sq
                else:
                    second_moment = exp_avg_sq

                bias_correction1 = 1 - beta1**step
                bias_correction2 = 1 - beta2**step
                denom = second_moment.sqrt() / math.sqrt(bias_correction2)
                if eps_in_denominator:
                    denom.add_(eps)
                param.addcdiv_(exp_avg, denom, value=-lr / bias_correction1)

        return loss
