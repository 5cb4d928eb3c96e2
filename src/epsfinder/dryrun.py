"""``estimate_range``: the authors' dry pass (Algorithm 2) over one epoch, weights untouched.

For each mini-batch: forward, backward, ``optimizer.step()`` (so the optimizer's own moment update runs, with
its coupled weight decay), then every parameter is copied back to its initial value. Only the optimizer state
advances. The adaptive term is read at the last step (and, for the histogram method, at a few earlier steps
to show its drift) and reduced to an :class:`~epsfinder.EpsilonRange`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from epsfinder._catalog import make_optimizer, optimizer_class
from epsfinder._progress import progress
from epsfinder._util import to_device
from epsfinder.estimate import METHODS, EpsilonRange
from epsfinder.probe import EpsilonProbe, Schedule, at_steps, per_epoch
from epsfinder.terms import lookup

__all__ = ["estimate_range"]

log = logging.getLogger("epsfinder")

StepFn = Callable[[nn.Module, Any], torch.Tensor]
#: ε used in the dry pass for optimizers that add ε into their state, unless one is given (see ``estimate_range``).
PROBE_EPS = 1e-30


def _build_optimizer(
    optimizer: str | type | torch.optim.Optimizer, params: list[torch.Tensor], kwargs: dict[str, Any]
) -> torch.optim.Optimizer:
    if isinstance(optimizer, torch.optim.Optimizer):
        if kwargs:
            raise ValueError(
                f"optimizer is already built, so these hyperparameters cannot apply: {sorted(kwargs)}; pass a name "
                "or a class instead, or set them on the optimizer"
            )
        return optimizer
    if isinstance(optimizer, str):
        return make_optimizer(optimizer, params, **kwargs)
    if isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer):
        return optimizer(params, **kwargs)
    raise TypeError(
        f"optimizer must be a name (e.g. 'adam'), an optimizer class or an optimizer, got {optimizer!r}"
    )


def estimate_range(
    model: nn.Module,
    loss_fn: Callable[[Any, Any], torch.Tensor] | None,
    loader: Iterable[Any],
    optimizer: str | type | torch.optim.Optimizer = "adam",
    *,
    method: str = "histogram",
    steps: int | None = None,
    step_fn: StepFn | None = None,
    percentiles: tuple[float, float] = (2.0, 98.0),
    clip_grad_norm: float | None = None,
    schedule: Schedule | None = None,
    device: str | torch.device | None = None,
    progress_bar: bool = True,
    **optimizer_kwargs: Any,
) -> EpsilonRange:
    """Estimate ε's search range with the paper's dry pass (Algorithm 2): one epoch, weights untouched.

    >>> model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    >>> data = [(torch.randn(32, 8), torch.randint(0, 3, (32,))) for _ in range(10)]
    >>> r = estimate_range(model, nn.functional.cross_entropy, data, "adam", betas=(0.9, 0.999),
    ...                    progress_bar=False)
    >>> r.lower <= r.upper
    True

    Args:
        model: the model; its weights and buffers are the same after the call as before.
        loss_fn: ``loss_fn(model(inputs), targets)`` for ``(inputs, targets)`` batches (unused with ``step_fn``).
        loader: any iterable of batches; one pass (or ``steps`` batches) is the first epoch.
        optimizer: a name (``"adam"``, ``"rmsprop"``, ``"adabelief"``, ... see ``epsfinder optimizers``), an
            optimizer class, or a built optimizer on ``model``'s parameters (its state then advances).
        method: ``"histogram"`` (default, streaming) or ``"paper"`` (the authors' sort).
        steps: number of batches; default one pass over ``loader``.
        step_fn: ``step_fn(model, batch) -> loss`` for other batch layouts (e.g. a stateful LSTM).
        percentiles: the low and high percentiles, in percent.
        clip_grad_norm: clip the gradient norm as in training (the moments see clipped gradients).
        schedule: which steps to snapshot (default: four per epoch for ``"histogram"``, the last step only for
            ``"paper"``); the last step is always taken.
        device: move batches there (default: the device of the model's first parameter).
        progress_bar: show a progress bar over the pass.
        **optimizer_kwargs: hyperparameters for the optimizer (``betas``, ``beta2``, ``eps``, ``weight_decay``,
            ``lr``, ...). ``lr`` does not change the estimate, since weights are restored after every step; nor does
            ``eps``, except that for optimizers adding ε into their state (AdaBelief, EAdam, AdaMomentum) the term
            is resolved only down to ``1e-6·ε``: their pass uses ``eps=1e-30`` unless you set one.

    Returns:
        the :class:`EpsilonRange` at the last step.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got method={method!r}")
    if step_fn is None and loss_fn is None:
        raise ValueError("pass loss_fn (for (inputs, targets) batches) or step_fn(model, batch) -> loss")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (all have requires_grad=False): nothing to probe")
    try:
        length: int | None = len(loader)  # type: ignore[arg-type]
    except TypeError:
        length = None
    if length == 0:
        raise ValueError("the loader is empty: it yields no batch, so no step can be taken")
    if steps is not None:
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got steps={steps}")
        if length is not None and steps > length:
            raise ValueError(
                f"the loader is shorter than steps: it has {length} batches, steps={steps}; lower steps or pass a "
                "longer loader"
            )
    total = steps if steps is not None else length
    kwargs = dict(optimizer_kwargs)
    if not isinstance(optimizer, torch.optim.Optimizer) and "eps" not in kwargs:
        cls = optimizer_class(optimizer) if isinstance(optimizer, str) else optimizer
        if isinstance(cls, type) and lookup(cls).eps_in_state:
            # The ε-free term does not depend on ε (weights are fixed), but reading it back subtracts the ε the
            # state absorbed, which resolves A only down to 1e-6·ε: probe with a tiny ε.
            kwargs["eps"] = PROBE_EPS
    opt = _build_optimizer(optimizer, params, kwargs)
    dev = torch.device(device) if device is not None else params[0].device

    if schedule is None:
        schedule = per_epoch(total, 4) if (total and method == "histogram") else at_steps(total or -1)
    probe = EpsilonProbe(opt, model=model, schedule=schedule, steps_per_epoch=total, method=method,
                         percentiles=percentiles)
    initial = [p.detach().clone() for p in params]
    buffers = {k: b.detach().clone() for k, b in model.named_buffers()}
    was_training = model.training
    model.train()
    taken = 0
    try:
        for batch in progress(loader, total=total, desc=f"estimate ({probe.spec.name})", enabled=progress_bar):
            if steps is not None and taken >= steps:
                break
            batch = to_device(batch, dev)
            opt.zero_grad(set_to_none=True)
            if step_fn is not None:
                loss = step_fn(model, batch)
            else:
                inputs, targets = batch
                loss = loss_fn(model(inputs), targets)  # type: ignore[misc]
            loss.backward()
            if clip_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
            opt.step()
            with torch.no_grad():
                torch._foreach_copy_(params, initial)
            taken += 1
        if taken == 0:
            raise ValueError("the loader is empty: it yielded no batch, so no step can be taken")
        if steps is not None and taken < steps:
            raise ValueError(
                f"the loader is shorter than steps: it yielded {taken} batches, steps={steps}"
            )
        probe.steps_per_epoch = taken
        if not probe.snapshots or probe.snapshots[-1].step != taken:
            probe.snapshot()
        return probe.result(probe.snapshots[-1])
    finally:
        probe.detach()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            for k, b in model.named_buffers():
                if k in buffers:
                    b.copy_(buffers[k])
        model.train(was_training)
