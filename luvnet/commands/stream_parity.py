"""``python -m luvnet.commands.stream_parity MANIFEST --out DIR [--count N]``: the live stream
against ``luvnet evaluate`` on the same videos (see :mod:`luvnet.bench.stream_parity`; figures
in docs/results.md). Writes ``DIR/parity.json`` and prints one summary line."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from luvnet.bench.stream_parity import stream_parity
from luvnet.commands.logs import configure_logging
from luvnet.commands.options import positive_int
from luvnet.engine.errors import LuvnetError

HELP = "score the same videos with the live stream and with evaluate, and compare"
PROG = "python -m luvnet.commands.stream_parity"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("manifest", type=Path, metavar="MANIFEST", help="manifest CSV of videos")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--checkpoint", type=Path, help="checkpoint directory (default: the demo model)"
    )
    parser.add_argument("--count", type=positive_int, help="only the first N videos")
    parser.add_argument("--cache", type=Path, help="frame cache folder (default $LUVNET_CACHE)")
    parser.add_argument(
        "--threads", type=positive_int, default=1, help="torch CPU threads (default 1)"
    )


def run(args: argparse.Namespace) -> int:
    report = stream_parity(
        args.manifest,
        args.out,
        checkpoint=args.checkpoint,
        count=args.count,
        cache=args.cache,
        threads=args.threads,
    )
    print(report.summary())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=HELP)
    add_arguments(parser)
    configure_logging("stream_parity")
    try:
        return run(parser.parse_args(argv))
    except LuvnetError as err:
        log.error("%s", err)
        return 2


if __name__ == "__main__":
    sys.exit(main())
