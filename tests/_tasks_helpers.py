"""Shared by the task tests (:mod:`test_tasks`, :mod:`test_train`)."""

from __future__ import annotations

#: The built-in tasks, in registration order.
NAMES = [
    "digits-mlp",
    "fashion-mnist-mlp",
    "fashion-mnist-alexnet",
    "fashion-mnist-vgg11",
    "fashion-mnist-resnet",
    "cifar10-vgg11",
    "cifar10-resnet",
    "ptb-lstm1",
    "ptb-lstm2",
    "es-en-transformer",
]
