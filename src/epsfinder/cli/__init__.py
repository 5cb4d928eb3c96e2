"""Command-line interface: ``epsfinder <command> ...``. Thin: parses, calls the library, prints.

Each subcommand lives in its own module here with ``register(subparsers)`` which adds its parser and sets
``func`` (``func(args) -> int`` exit status).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from epsfinder.errors import EpsfinderError

# Modules holding subcommands, in the order `epsfinder --help` lists them.
_COMMAND_MODULES = ("estimate", "optimizers", "tasks", "train", "sweep", "report")


class CliError(Exception):
    """An error whose message is shown to the user as is (exit status 2)."""


def build_parser() -> argparse.ArgumentParser:
    from epsfinder import __version__

    parser = argparse.ArgumentParser(
        prog="epsfinder",
        description="Find the search range of Adam's epsilon from gradient magnitude histograms.",
    )
    parser.add_argument("--version", action="version", version=f"epsfinder {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(f"epsfinder.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"epsfinder.cli.{name}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (CliError, EpsfinderError, ValueError, FileNotFoundError, ImportError) as err:
        if args.verbose:
            raise
        print(f"epsfinder {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
