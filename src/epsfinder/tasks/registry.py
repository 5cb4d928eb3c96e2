"""Task registry: names → :class:`~epsfinder.tasks.base.Task` objects (the ten built-ins plus a user's own)."""

from __future__ import annotations

from epsfinder.tasks.base import Task

__all__ = ["get_task", "list_tasks", "register_task", "task_names", "unregister_task"]

_REGISTRY: dict[str, Task] = {}


def _ensure_builtins() -> None:
    if not _REGISTRY:
        from epsfinder.tasks.builtin import BUILTIN_TASKS

        for task in BUILTIN_TASKS:
            _REGISTRY.setdefault(task.name, task)


def task_names() -> list[str]:
    """Registered task names, built-ins first, in registration order."""
    _ensure_builtins()
    return list(_REGISTRY)


def list_tasks() -> list[Task]:
    """Every registered task, built-ins first (the order ``epsfinder tasks`` prints)."""
    _ensure_builtins()
    return list(_REGISTRY.values())


def get_task(name_or_task: str | Task) -> Task:
    """The task called ``name_or_task``; a :class:`Task` object passes through unchanged.

    Raises:
        ValueError: no task has that name (the message lists the registered names).
        TypeError: the argument is neither a name nor an object with the Task attributes and ``build``.
    """
    if isinstance(name_or_task, str):
        _ensure_builtins()
        task = _REGISTRY.get(name_or_task)
        if task is None:
            raise ValueError(
                f"unknown task {name_or_task!r}; choose one of: {', '.join(_REGISTRY)} (or register your own with "
                "epsfinder.tasks.register_task)"
            )
        return task
    if isinstance(name_or_task, Task):
        return name_or_task
    raise TypeError(
        f"expected a task name or a Task (name, family, metric, direction, description, build(), data_status()), "
        f"got {type(name_or_task).__name__}"
    )


def register_task(task: Task, *, replace: bool = False) -> Task:
    """Add a user's task so that names work everywhere (``train_task``, ``epsfinder train --task``, sweeps).

    Args:
        task: any object with the :class:`Task` attributes and methods.
        replace: allow replacing a registered task of the same name.

    Returns:
        ``task`` (so it can be used as a decorator on an instance factory's result).

    Raises:
        TypeError: ``task`` lacks the Task attributes or methods.
        ValueError: the name is taken and ``replace`` is False.
    """
    if not isinstance(task, Task):
        missing = [a for a in ("name", "family", "metric", "direction", "description", "build", "data_status")
                   if not hasattr(task, a)]
        raise TypeError(f"{task!r} is not a Task: it lacks {', '.join(missing)}")
    _ensure_builtins()
    if task.name in _REGISTRY and not replace and _REGISTRY[task.name] is not task:
        raise ValueError(f"a task named {task.name!r} is already registered; pick another name or pass replace=True")
    _REGISTRY[task.name] = task
    return task


def unregister_task(name: str) -> None:
    """Remove a registered task (mostly for tests); unknown names are ignored."""
    _ensure_builtins()
    _REGISTRY.pop(name, None)
