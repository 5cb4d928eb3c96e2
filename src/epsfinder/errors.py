"""Exceptions raised by epsfinder. Every message names the offending value and what to do."""

from __future__ import annotations

__all__ = ["EpsfinderError", "NoSnapshotError", "UnsupportedOptimizerError"]


class EpsfinderError(Exception):
    """Base class of epsfinder's own errors."""


class UnsupportedOptimizerError(EpsfinderError, ValueError):
    """The optimizer has no known adaptive term (e.g. SGD) or its name is unknown."""


class NoSnapshotError(EpsfinderError, RuntimeError):
    """A result was asked for before any snapshot of the optimizer state was taken."""
