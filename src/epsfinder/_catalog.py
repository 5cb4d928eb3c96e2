"""Optimizers by name: ``make_optimizer("adam", params, lr=..., eps=..., beta2=...)``.

The names are what the CLI, ``estimate_range(optimizer="adam")`` and sweeps accept (case-insensitive). The
classes behind them are torch.optim's, pytorch_optimizer's (imported only when asked for) and epsfinder.optim's.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from epsfinder.errors import UnsupportedOptimizerError

__all__ = ["OPTIMIZERS", "OptimizerEntry", "make_optimizer", "optimizer_class", "optimizer_names"]


@dataclass(frozen=True)
class OptimizerEntry:
    """One named optimizer: where its class lives, fixed keyword arguments, and how β2 is passed."""

    path: str  # "module:Class"
    fixed: dict[str, Any] = field(default_factory=dict)
    #: how ``beta2`` maps to the constructor: "betas" (betas=(β1, β2[, ...])), "alpha" (RMSprop) or None.
    beta2: str | None = "betas"
    adaptive: bool = True
    extra: str | None = None  # pip extra that provides it
    description: str = ""


OPTIMIZERS: dict[str, OptimizerEntry] = {
    "adam": OptimizerEntry("torch.optim:Adam", description="Adam (torch.optim)"),
    "adamw": OptimizerEntry("torch.optim:AdamW", description="AdamW, decoupled weight decay (torch.optim)"),
    "amsgrad": OptimizerEntry("torch.optim:Adam", {"amsgrad": True}, description="Adam with amsgrad=True"),
    "adamw-amsgrad": OptimizerEntry("torch.optim:AdamW", {"amsgrad": True}, description="AdamW, amsgrad=True"),
    "nadam": OptimizerEntry("torch.optim:NAdam", description="NAdam (torch.optim)"),
    "radam": OptimizerEntry("torch.optim:RAdam", description="RAdam (torch.optim)"),
    "adamax": OptimizerEntry("torch.optim:Adamax", description="Adamax (torch.optim)"),
    "rmsprop": OptimizerEntry("torch.optim:RMSprop", beta2="alpha", description="RMSprop; β2 is its alpha"),
    "rmsprop-centered": OptimizerEntry(
        "torch.optim:RMSprop", {"centered": True}, beta2="alpha", description="RMSprop, centered=True"
    ),
    "adagrad": OptimizerEntry("torch.optim:Adagrad", beta2=None, description="Adagrad (torch.optim)"),
    "adabelief": OptimizerEntry(
        "pytorch_optimizer:AdaBelief", extra="optimizers", description="AdaBelief (pytorch_optimizer)"
    ),
    "diffgrad": OptimizerEntry(
        "pytorch_optimizer:DiffGrad", extra="optimizers", description="DiffGrad (pytorch_optimizer)"
    ),
    "adamod": OptimizerEntry("pytorch_optimizer:AdaMod", extra="optimizers", description="AdaMod (pytorch_optimizer)"),
    "madgrad": OptimizerEntry(
        "pytorch_optimizer:MADGRAD", beta2=None, extra="optimizers", description="MADGRAD (pytorch_optimizer)"
    ),
    "eadam": OptimizerEntry("epsfinder.optim:EAdam", description="EAdam, ε inside the EMA (epsfinder.optim)"),
    "adamomentum": OptimizerEntry(
        "epsfinder.optim:AdaMomentum", description="AdaMomentum, EMA of m² (epsfinder.optim)"
    ),
    "sgd": OptimizerEntry(
        "torch.optim:SGD", {"momentum": 0.9}, beta2=None, adaptive=False,
        description="SGD + momentum 0.9 (no adaptive term: for training and baselines only)",
    ),
}


def optimizer_names(*, adaptive_only: bool = False) -> list[str]:
    return sorted(n for n, e in OPTIMIZERS.items() if e.adaptive or not adaptive_only)


def _entry(name: str) -> OptimizerEntry:
    entry = OPTIMIZERS.get(name.lower())
    if entry is None:
        raise UnsupportedOptimizerError(
            f"unknown optimizer name {name!r}; choose one of: {', '.join(optimizer_names())}"
        )
    return entry


def optimizer_class(name: str) -> type[torch.optim.Optimizer]:
    """The class behind an optimizer name (imports optional packages on demand)."""
    entry = _entry(name)
    module, cls = entry.path.split(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except ImportError as err:
        raise ImportError(
            f"optimizer {name!r} needs the package {module!r}: pip install 'epsfinder[{entry.extra}]'"
        ) from err


def make_optimizer(
    name: str,
    params: Iterable[Any],
    *,
    lr: float | None = None,
    eps: float | None = None,
    beta2: float | None = None,
    betas: tuple[float, ...] | None = None,
    weight_decay: float | None = None,
    **kwargs: Any,
) -> torch.optim.Optimizer:
    """Build the optimizer called ``name`` on ``params``; unset hyperparameters keep the class defaults.

    ``beta2`` sets the second-moment decay whatever the class calls it (``betas[1]``, RMSprop's ``alpha``);
    passing it to an optimizer without one (Adagrad, MADGRAD, SGD) is an error.
    """
    entry = _entry(name)
    cls = optimizer_class(name)
    kw: dict[str, Any] = {**entry.fixed, **kwargs}
    if lr is not None:
        kw["lr"] = lr
    if eps is not None:
        if not entry.adaptive:
            raise ValueError(f"optimizer {name!r} has no ε; drop eps={eps}")
        kw["eps"] = eps
    if weight_decay is not None:
        kw["weight_decay"] = weight_decay
    if betas is not None:
        if entry.beta2 != "betas":
            raise ValueError(f"optimizer {name!r} takes no betas; got betas={betas}")
        kw["betas"] = tuple(betas)
    if beta2 is not None:
        if entry.beta2 is None:
            raise ValueError(f"optimizer {name!r} has no β2; drop beta2={beta2}")
        if not 0.0 <= beta2 < 1.0:
            raise ValueError(f"beta2 must lie in [0, 1), got beta2={beta2}")
        if entry.beta2 == "alpha":
            kw["alpha"] = beta2
        else:
            import inspect

            default = inspect.signature(cls.__init__).parameters["betas"].default
            current = list(kw.get("betas", default))
            current[1] = beta2
            kw["betas"] = tuple(current)
    return cls(params, **kw)
