"""``luvnet covid-blues-manifest --data DIR --out manifest.csv``: a manifest for COVID-BLUES.

The videos are read in place; A-lines and B-lines come from ``severity.csv``, consolidation and
pleural effusion are left unknown (see :mod:`luvnet.engine.data.covid_blues`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from luvnet.engine.data.covid_blues import build_rows
from luvnet.engine.data.manifest import read_manifest, write_manifest
from luvnet.engine.errors import LuvnetError

HELP = "build a manifest for the COVID-BLUES videos"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage = "luvnet covid-blues-manifest --data DIR --out manifest.csv"
    parser.add_argument(
        "--data",
        type=Path,
        default=Path("../shared/data/covid-blues"),
        help="the COVID-BLUES folder (severity.csv, lus_videos/)",
    )
    parser.add_argument("--out", type=Path, required=True, help="manifest CSV to write")


def run(args: argparse.Namespace) -> int:
    rows = build_rows(args.data)
    out: Path = args.out
    if out.is_dir():
        raise LuvnetError(f"--out {out}: is a folder; expected a CSV file path")
    if not out.parent.is_dir():
        raise LuvnetError(f"--out {out}: folder {out.parent} does not exist")
    write_manifest(out, rows)
    manifest = read_manifest(out)  # what we wrote must pass the same validation as any input
    print(f"wrote {len(manifest)} videos of {len(manifest.patients())} patients to {out}")
    return 0
