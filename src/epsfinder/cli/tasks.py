"""``epsfinder tasks``: list the built-in tasks, their presets, and whether their data is installed."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "tasks",
        help="list the built-in tasks and whether their data is installed",
        description=(
            "List every registered task: name, family, metric (and whether it is maximised or minimised), "
            "presets, and data status (installed, or the command that installs the data)."
        ),
    )
    parser.add_argument("-l", "--long", action="store_true", help="also print each task's description and presets")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run)


def _rows() -> list[dict[str, Any]]:
    from epsfinder.tasks import list_tasks
    from epsfinder.tasks.builtin import BuiltinTask, describe_preset

    rows = []
    for task in list_tasks():
        presets = list(getattr(task, "presets", ()) or ())
        try:
            status = task.data_status()
        except Exception as err:  # a user's task must not break the listing
            status = f"unknown ({err})"
        rows.append(
            {
                "name": task.name,
                "family": task.family,
                "metric": task.metric,
                "direction": task.direction,
                "presets": presets,
                "data": "installed" if status is None else "missing",
                "install": status,
                "description": task.description,
                "preset_details": (
                    {p: describe_preset(task, p) for p in presets} if isinstance(task, BuiltinTask) else {}
                ),
            }
        )
    return rows


def run(args: argparse.Namespace) -> int:
    rows = _rows()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = ("TASK", "FAMILY", "METRIC", "PRESETS", "DATA")
    table = [
        (r["name"], r["family"], f"{r['metric']} ({'max' if r['direction'] == 'maximize' else 'min'})",
         ",".join(r["presets"]) or "-", r["data"])
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *table)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    print(fmt.format(*header).rstrip())
    for r, cells in zip(rows, table):
        print(fmt.format(*cells).rstrip())
        if args.long:
            print(f"    {r['description']}")
            for preset, detail in r["preset_details"].items():
                print(f"    {preset}: {detail}")
        if r["install"]:
            print(f"    to install: {r['install']}")
    return 0
