"""``luvnet compare A.csv B.csv [--cluster clip|video|patient] [--json OUT]``: paired DeLong
test per pattern, plain or clustered.

Both files are predictions CSVs of two models on the same clips; see
:mod:`luvnet.engine.evaluation.compare` for the checks and the JSON written by ``--json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from luvnet.engine.errors import LuvnetError
from luvnet.engine.evaluation.compare import (
    CLUSTERS,
    align,
    compare,
    format_table,
    write_comparison,
)
from luvnet.engine.evaluation.predictions import read_predictions

HELP = "paired DeLong test between two prediction files"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage = "luvnet compare A.csv B.csv [--cluster clip|video|patient] [--json OUT]"
    parser.add_argument("a", type=Path, help="predictions CSV of model A")
    parser.add_argument("b", type=Path, help="predictions CSV of model B (same clips)")
    parser.add_argument(
        "--cluster",
        choices=CLUSTERS,
        default="clip",
        help="count each clip as independent (clip, the paper's DeLong test), or each video's "
        "or patient's clips as one draw (Obuchowski's clustered test)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")


def run(args: argparse.Namespace) -> int:
    path_a: Path = args.a
    path_b: Path = args.b
    a, b = read_predictions(path_a), read_predictions(path_b)
    results = compare(a, b, align(a, b, path_a, path_b), args.cluster)
    print(format_table(results, path_a, path_b, a.clips, args.cluster))
    if args.json is not None:
        try:
            write_comparison(args.json, path_a, path_b, len(a.clips), results, args.cluster)
        except OSError as err:
            raise LuvnetError(f"--json {args.json}: cannot write ({err.strerror})") from None
    return 0
