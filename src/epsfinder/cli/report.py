"""``epsfinder report DIR``: write DIR/report.html from DIR/result.json and/or DIR/sweep.json."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="write an HTML page with the ε range, tables and figures of a run",
        description="Write DIR/report.html, one self-contained page (figures embedded, no scripts, no external "
        "requests) from DIR/result.json (`epsfinder estimate --out DIR`) and/or DIR/sweep.json "
        "(`epsfinder sweep --out DIR`). Needs matplotlib: pip install 'epsfinder[plot]'.",
    )
    p.add_argument("directory", metavar="DIR", help="folder holding result.json and/or sweep.json")
    p.add_argument("--format", choices=("svg", "png"), default="svg", dest="figure_format",
                   help="format of the embedded figures (default: svg)")
    p.add_argument("--figures", action="store_true", help="also save every figure as PNG and SVG in DIR/figures/")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from epsfinder.report import write_report

    path = write_report(args.directory, figure_format=args.figure_format, save_figures=args.figures)
    print(path)
    return 0
