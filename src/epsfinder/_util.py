"""Small helpers shared by the core and the task layer."""

from __future__ import annotations

from typing import Any

import torch


def to_device(x: Any, device: torch.device | str | None) -> Any:
    """Move the tensors of a batch (a tensor, or lists, tuples and dicts of them) to ``device``."""
    if device is None:
        return x
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, (list, tuple)):
        return type(x)(to_device(v, device) for v in x)
    if isinstance(x, dict):
        return {k: to_device(v, device) for k, v in x.items()}
    return x
