"""The task protocol: what `estimate`, `train` and `sweep` need from a task, built-in or a user's own.

A *task* is a named recipe (data + model + loss + training settings + metric). Building it gives a
:class:`TaskSetup`, which holds live objects. Users implement :class:`Task` (any object with these attributes
and a ``build`` method works) and pass it wherever a task name is accepted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import nn

from epsfinder.errors import EpsfinderError

Metric = Literal["accuracy", "perplexity", "bleu", "loss"]
Direction = Literal["maximize", "minimize"]
Batch = Any
#: ``step_fn(model, batch) -> loss`` for batch layouts other than ``(inputs, targets)``.
StepFn = Callable[[nn.Module, Batch], torch.Tensor]


class PresetTooLargeError(EpsfinderError, MemoryError, ValueError):
    """A task preset needs more memory than the device has free; raised by ``build`` before any training.

    The message gives the estimate, the free memory, and what to do (a smaller preset, ``limit``, a smaller
    ``batch_size`` option, or another device). Subclasses :class:`MemoryError` and :class:`ValueError` (so the
    CLI reports it as a usage error, exit status 2).
    """


@dataclass
class TaskSetup:
    """A built task: live model, data and settings for one run.

    Attributes:
        name: task name.
        model: freshly initialised model (seeded), on ``device``.
        loss_fn: ``loss_fn(model(inputs), targets)``; used when ``step_fn`` is None.
        train_loader: re-iterable; one pass is one epoch of batches.
        evaluate: ``evaluate(model) -> float``, the task's metric on its test split.
        metric, direction: what ``evaluate`` returns and whether larger is better.
        epochs: the preset's number of training epochs.
        steps_per_epoch: ``len(train_loader)`` when known, else None.
        step_fn: optional ``step_fn(model, batch) -> loss`` for other batch layouts (e.g. a stateful LSTM).
        hparams: the preset's training settings: ``weight_decay``, ``batch_size``, ``clip_grad_norm``,
            ``lr_milestones`` (epochs where lr is multiplied by ``lr_gamma``), ``betas``, ...
        device: where the model lives.
        family: "classification", "language-modeling" or "translation".
    """

    name: str
    model: nn.Module
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    train_loader: Iterable[Batch]
    evaluate: Callable[[nn.Module], float]
    metric: Metric
    direction: Direction
    epochs: int
    steps_per_epoch: int | None = None
    step_fn: StepFn | None = None
    hparams: dict[str, Any] = field(default_factory=dict)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    family: str = "classification"


@runtime_checkable
class Task(Protocol):
    """What a task provides. ``build`` must be deterministic for a given ``seed``."""

    name: str
    family: str
    metric: Metric
    direction: Direction
    description: str

    def build(
        self,
        *,
        preset: str = "cpu",
        seed: int = 0,
        data_dir: str | None = None,
        device: str | torch.device = "cpu",
        limit: int | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> TaskSetup:
        """Build the task. ``limit`` caps the number of training examples (smoke runs, tests)."""
        ...

    def data_status(self) -> str | None:
        """None when the task's data is installed, else one line saying how to install it."""
        ...
