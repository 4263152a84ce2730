"""``luvnet report RUN [RUN ...] [--split val|test] [--out table.md]``: the paper's Table 1.

One row per training run directory, one column per pattern AUC plus micro and macro AUC, each
cell the mean ± sample standard deviation over the folds; see
:mod:`luvnet.engine.evaluation.report` for the run layout and the cells.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from luvnet.engine.errors import LuvnetError
from luvnet.engine.evaluation.report import format_table, load_run, write_table

HELP = "cross-validation table of a run, as Markdown"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage = "luvnet report RUN [RUN ...] [--split val|test] [--out table.md]"
    parser.add_argument("runs", type=Path, nargs="+", metavar="RUN", help="training run directory")
    parser.add_argument("--split", choices=("val", "test"), default="val", help="default: val")
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown here")


def run(args: argparse.Namespace) -> int:
    split: str = args.split
    table = format_table([load_run(path, split) for path in args.runs], split)
    print(table)
    if args.out is not None:
        try:
            write_table(args.out, table)
        except OSError as err:
            raise LuvnetError(f"--out {args.out}: cannot write ({err.strerror})") from None
    return 0
