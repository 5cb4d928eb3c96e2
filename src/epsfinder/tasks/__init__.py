"""The paper's experiments as built-in tasks on real offline data, and the loop that trains them.

>>> from epsfinder.tasks import get_task, train_task
>>> setup = get_task("fashion-mnist-mlp").build(preset="cpu", seed=0)          # doctest: +SKIP
>>> r = train_task("digits-mlp", optimizer="adam", lr=1e-3, eps=1e-8, epochs=2)  # doctest: +SKIP

Tasks (``epsfinder tasks`` lists them with their data status): ``digits-mlp``, ``fashion-mnist-mlp``,
``fashion-mnist-alexnet``, ``fashion-mnist-vgg11``, ``fashion-mnist-resnet``, ``cifar10-vgg11``,
``cifar10-resnet``, ``ptb-lstm1``, ``ptb-lstm2``, ``es-en-transformer``. Each has a ``cpu`` preset (thin models,
few epochs: minutes per epoch on two cores) and a ``paper`` preset (the paper's sizes and epochs); see
:mod:`epsfinder.tasks.builtin` and ``docs/tasks.md``.
"""

from __future__ import annotations

from epsfinder.tasks.base import PresetTooLargeError, Task, TaskSetup
from epsfinder.tasks.registry import get_task, list_tasks, register_task, task_names, unregister_task
from epsfinder.tasks.train import TrainResult, train_task

__all__ = [
    "PresetTooLargeError",
    "Task",
    "TaskSetup",
    "TrainResult",
    "get_task",
    "list_tasks",
    "register_task",
    "task_names",
    "train_task",
    "unregister_task",
]
