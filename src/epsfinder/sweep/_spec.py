"""Grid specifications for sweeps: value lists, log-even ranges and the authors' literature grids.

Pure parsing, no Optuna. The same syntax serves ``--lr``, ``--eps`` and ``--beta2``:

- a list ``1e-8,1e-6,1e-4``;
- a range ``lo:hi[:k]``: ``k`` values per decade (default 1), log-evenly spaced from ``lo`` to ``hi`` with both
  ends included. ``1e-4:1e-1`` gives ``1e-4, 1e-3, 1e-2, 1e-1``; ``1e-4:1e-1:3`` gives the ten values
  ``10^(-4 + i/3)``. When ``hi/lo`` is not a whole number of ``1/k`` decades, the spacing shrinks so that the
  ends stay exact (``ceil(k · decades)`` intervals). For β2 a range spaces ``1 − β2`` log-evenly, so
  ``0.9:0.9999`` gives ``0.9, 0.99, 0.999, 0.9999``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = [
    "EPS_PAPER_GRIDS",
    "LR_PAPER_GRIDS",
    "log_range",
    "paper_eps_grid",
    "paper_lr_grid",
    "parse_values",
]

#: Optimizers whose ε is compared with a squared-gradient quantity (NOTES §3), when the term registry is silent.
_SQUARED_NAMES = frozenset({"adabelief", "eadam", "adamomentum"})
#: Optimizers the paper gives literature grids for (NOTES §5), per unit family.
_PAPER_OPTIMIZERS = {"magnitude": ("adam", "rmsprop"), "squared": ("adabelief", "adamomentum")}


def _decades(lo_exp: int, hi_exp: int, step: int) -> list[float]:
    return [float(f"1e{e}") for e in range(lo_exp, hi_exp + 1, step)]


#: The authors' ε grids (NOTES §5), keyed by (task kind, unit family).
EPS_PAPER_GRIDS: dict[tuple[str, str], list[float]] = {
    ("image", "magnitude"): _decades(-8, -1, 1),
    ("image", "squared"): _decades(-16, -4, 2),
    ("lm", "magnitude"): _decades(-9, -3, 1),
    ("lm", "squared"): _decades(-20, -8, 2),
}
#: The authors' learning-rate grids (NOTES §5), keyed by task kind.
LR_PAPER_GRIDS: dict[str, list[float]] = {
    "image": [2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2],
    "lm": [1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 1e-1],
}


def _nice(x: float) -> float:
    """Round to 12 significant digits so that ``10**-3`` prints as ``0.001``, not ``0.0010000000000000002``."""
    return float(f"{x:.12g}")


def log_range(lo: float, hi: float, per_decade: int = 1) -> list[float]:
    """Log-evenly spaced values from ``lo`` to ``hi``, both included, at least ``per_decade`` per decade.

    >>> log_range(1e-4, 1e-1)
    [0.0001, 0.001, 0.01, 0.1]
    >>> log_range(1e-2, 1e-1, 2)
    [0.01, 0.0316227766017, 0.1]

    Raises:
        ValueError: ``lo`` or ``hi`` not positive and finite, ``lo > hi``, or ``per_decade < 1``.
    """
    for name, v in (("lo", lo), ("hi", hi)):
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"a log range needs positive finite ends, got {name}={v!r}")
    if lo > hi:
        raise ValueError(f"inverted range: lo={lo:g} is above hi={hi:g}; write the smaller value first ({hi:g}:{lo:g})")
    if int(per_decade) != per_decade or per_decade < 1:
        raise ValueError(f"values per decade must be a whole number >= 1, got {per_decade!r}")
    if lo == hi:
        return [lo]
    a, b = math.log10(lo), math.log10(hi)
    n = max(1, math.ceil((b - a) * per_decade - 1e-9))
    values = [lo] + [_nice(10 ** (a + (b - a) * i / n)) for i in range(1, n)] + [hi]
    # Rounding to 12 digits cannot reorder values at most 1/k decade apart, but guard anyway.
    return sorted(set(values))


def _number(text: str, what: str, spec: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise ValueError(
            f"malformed {what} value {spec!r}: {text.strip()!r} is not a number; write a list like 1e-4,1e-3 or a "
            "range lo:hi[:values-per-decade] like 1e-4:1e-1:3"
        ) from None
    if not math.isfinite(v):
        raise ValueError(f"malformed {what} value {spec!r}: {text.strip()!r} is not finite")
    return v


def _check_value(v: float, what: str, beta: bool) -> None:
    if beta:
        if not 0.0 <= v < 1.0:
            raise ValueError(f"{what} values must lie in [0, 1), got {v!r}")
    elif not v > 0:
        raise ValueError(f"{what} values must be positive, got {v!r}")


def parse_values(spec: str | float | Sequence[float], *, what: str = "value", beta: bool = False) -> list[float]:
    """Parse a list ``a,b,c``, a range ``lo:hi[:per-decade]``, a single number or a sequence of numbers.

    Args:
        spec: the specification (see the module docstring).
        what: the option's name, for error messages (``"--lr"``, ``"--eps"``, ``"--beta2"``).
        beta: values are decay rates in [0, 1); a range then spaces ``1 − β`` log-evenly.

    Returns:
        the values, sorted ascending, without duplicates.

    Raises:
        ValueError: malformed text, an empty list, an inverted or empty range, or a value out of bounds; the
            message names the offending value and the expected syntax.
    """
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        values = [float(spec)]
    elif isinstance(spec, str):
        text = spec.strip()
        if not text:
            raise ValueError(f"empty {what} specification; write a list like 1e-4,1e-3 or a range like 1e-4:1e-1")
        if ":" in text:
            parts = text.split(":")
            if len(parts) not in (2, 3) or any(not p.strip() for p in parts):
                raise ValueError(
                    f"malformed {what} range {spec!r}: write lo:hi or lo:hi:values-per-decade, e.g. 1e-4:1e-1:3"
                )
            lo, hi = _number(parts[0], what, spec), _number(parts[1], what, spec)
            k = 1
            if len(parts) == 3:
                kf = _number(parts[2], what, spec)
                if kf != int(kf) or kf < 1:
                    raise ValueError(
                        f"malformed {what} range {spec!r}: values per decade must be a whole number >= 1, got "
                        f"{parts[2].strip()!r}"
                    )
                k = int(kf)
            if lo > hi:
                raise ValueError(
                    f"inverted {what} range {spec!r}: lo={lo:g} is above hi={hi:g}; write {parts[1].strip()}:"
                    f"{parts[0].strip()}" + (f":{k}" if len(parts) == 3 else "")
                )
            _check_value(lo, what, beta)
            _check_value(hi, what, beta)
            if beta:
                # Space 1 − β log-evenly (1 − hi is the smaller gap); keep both ends exact.
                gaps = log_range(1.0 - hi, 1.0 - lo, k)
                values = [hi] + [_nice(1.0 - g) for g in gaps[1:-1]] + ([lo] if lo != hi else [])
            else:
                values = log_range(lo, hi, k)
        else:
            items = text.split(",")
            if any(not it.strip() for it in items):
                raise ValueError(f"malformed {what} list {spec!r}: an item is empty; write e.g. 1e-8,1e-6,1e-4")
            values = [_number(it, what, spec) for it in items]
    else:
        try:
            values = [float(v) for v in spec]
        except (TypeError, ValueError):
            raise ValueError(f"{what} must be a specification string or a sequence of numbers, got {spec!r}") from None
        if not values:
            raise ValueError(f"empty {what} list; give at least one value")
        for v in values:
            if not math.isfinite(v):
                raise ValueError(f"{what} values must be finite, got {v!r}")
    for v in values:
        _check_value(v, what, beta)
    return sorted(set(values))


def task_kind(task_family: str) -> tuple[str, str | None]:
    """Which literature grid a task family uses: ``("image" | "lm", note or None)``."""
    if task_family == "classification":
        return "image", None
    if task_family == "language-modeling":
        return "lm", None
    if task_family == "translation":
        return "lm", "the paper gives no grid for translation; using its language-modeling (PTB) grid"
    return "image", f"no literature grid for task family {task_family!r}; using the image-classification grid"


def unit_family(optimizer: str) -> str:
    """``"magnitude"`` or ``"squared"`` (NOTES §3) for an optimizer name, from the term registry if possible."""
    try:
        from epsfinder._catalog import optimizer_class
        from epsfinder.terms import lookup

        return lookup(optimizer_class(optimizer)).family
    except Exception:  # optional package missing or no term: fall back on the names the paper discusses
        return "squared" if optimizer.lower() in _SQUARED_NAMES else "magnitude"


def paper_eps_grid(optimizer: str, task_family: str) -> tuple[list[float], list[str]]:
    """The authors' ε grid for an optimizer and task family (NOTES §5), with notes on any substitution."""
    kind, note = task_kind(task_family)
    family = unit_family(optimizer)
    notes = [note] if note else []
    if optimizer.lower() not in _PAPER_OPTIMIZERS[family]:
        names = " and ".join(_PAPER_OPTIMIZERS[family])
        notes.append(
            f"the paper gives no ε grid for {optimizer}; using its grid for {names} (same unit family, {family})"
        )
    return list(EPS_PAPER_GRIDS[(kind, family)]), notes


def paper_lr_grid(optimizer: str, task_family: str) -> tuple[list[float], list[str]]:
    """The authors' learning-rate grid for a task family (NOTES §5), with notes on any substitution."""
    kind, note = task_kind(task_family)
    notes = [note] if note else []
    if optimizer.lower() not in ("adam", "rmsprop"):
        notes.append(f"the paper lists learning-rate grids for Adam and RMSprop only; using them for {optimizer}")
    return list(LR_PAPER_GRIDS[kind]), notes


def describe(values: Sequence[Any]) -> str:
    """``1e-08, 1e-06`` style text for messages."""
    return ", ".join("default" if v is None else f"{v:g}" for v in values)
