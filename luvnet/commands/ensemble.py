"""``luvnet ensemble A.csv B.csv [...] --out DIR [--thresholds METRICS.json]``: average the
probabilities of several models scored on the same clips; see
:mod:`luvnet.engine.evaluation.ensemble`."""

from __future__ import annotations

import argparse
from pathlib import Path

from luvnet.engine.errors import LuvnetError
from luvnet.engine.evaluation.ensemble import (
    average,
    check_paths,
    format_table,
    member_aucs,
    stored_thresholds,
    write_ensemble,
)
from luvnet.engine.evaluation.predictions import read_predictions

HELP = "average several models' predictions on the same clips"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage = "luvnet ensemble A.csv B.csv [...] --out DIR [--thresholds METRICS.json]"
    parser.add_argument(
        "predictions", type=Path, nargs="+", help="predictions CSVs of the members (same clips)"
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="folder for predictions.csv and metrics.json"
    )
    parser.add_argument(
        "--thresholds",
        type=Path,
        default=None,
        help="metrics.json whose per-pattern thresholds to apply, e.g. the same ensemble's on "
        "the validation set (default: Youden's, fitted on these clips)",
    )


def run(args: argparse.Namespace) -> int:
    paths: list[Path] = args.predictions
    check_paths(paths, args.thresholds, args.out)
    members = [read_predictions(path) for path in paths]
    ensemble = average(members, paths)
    thresholds = None
    if args.thresholds is not None:
        thresholds = stored_thresholds(args.thresholds, ensemble.pattern_names)
    try:
        metrics = write_ensemble(args.out, ensemble, paths, thresholds)
    except OSError as err:
        raise LuvnetError(f"--out {args.out}: cannot write ({err.strerror})") from None
    print(format_table(metrics, member_aucs(members)))
    return 0
