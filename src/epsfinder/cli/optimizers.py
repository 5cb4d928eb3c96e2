"""``epsfinder optimizers``: the optimizers with a known adaptive term."""

from __future__ import annotations

import argparse

from epsfinder._catalog import OPTIMIZERS, optimizer_class
from epsfinder.terms import lookup


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("optimizers", help="list the supported optimizers and their adaptive terms")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    rows = []
    for name, entry in sorted(OPTIMIZERS.items()):
        try:
            cls = optimizer_class(name)
        except ImportError as err:
            rows.append((name, "-", "-", f"unavailable: {err}"))
            continue
        if not entry.adaptive:
            rows.append((name, "none", "-", entry.description))
            continue
        spec = lookup(cls)
        rows.append((name, spec.family, spec.formula, entry.description))
    widths = [max(len(r[i]) for r in [*rows, ("name", "family", "adaptive term A", "")]) for i in range(3)]
    print(f"{'name':<{widths[0]}}  {'family':<{widths[1]}}  {'adaptive term A':<{widths[2]}}  class")
    for r in rows:
        print(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}")
    print("\nYour own optimizer: epsfinder.register_term(YourOptimizer, fn, squared=False)")
    return 0
