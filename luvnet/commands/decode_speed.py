"""``python -m luvnet.commands.decode_speed DIR [--count N]``: the file reader against the
OpenCV reader it replaced, on the same files, side by side in one run (see
:mod:`luvnet.bench.decode_speed`; figures in bench/RESULTS.md)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from luvnet.bench.decode_speed import decode_report
from luvnet.commands.logs import configure_logging
from luvnet.commands.options import positive_int
from luvnet.engine.errors import LuvnetError

HELP = "decode speed of the file reader against OpenCV's, on the same files"
PROG = "python -m luvnet.commands.decode_speed"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", type=Path, metavar="DIR", help="folder of videos (recursive)")
    parser.add_argument("--count", type=positive_int, help="only the first N files, by path")


def run(args: argparse.Namespace) -> int:
    if not args.folder.is_dir():
        raise LuvnetError(f"{args.folder}: not a folder; expected a folder of videos")
    print(decode_report(args.folder, args.count))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=HELP)
    add_arguments(parser)
    configure_logging("decode_speed")
    try:
        return run(parser.parse_args(argv))
    except LuvnetError as err:
        log.error("%s", err)
        return 2


if __name__ == "__main__":
    sys.exit(main())
