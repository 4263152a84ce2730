"""``luvnet record``: append every message of the score stream to a JSON Lines file.

Usage: ``luvnet record --out FILE [--endpoint tcp://127.0.0.1:5555] [--curve-keys DIR
[--client NAME]] [--count N] [--duration S] [--timeout S]``. The file's format:
luvnet.plugins.consumers.record. It ends with 0 when the stream ends (its final status; not
with ``--follow``), after
N scores or S seconds, or on Ctrl-C or SIGTERM (file flushed and closed); with 2 and one line
when no message came for ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from luvnet.commands._subscriber_options import add_subscriber_arguments, subscriber_options
from luvnet.commands.options import positive_float, positive_int
from luvnet.commands.signals import StopOnSignal
from luvnet.plugins.consumers.record import record

HELP = "append every message to a file, report seq gaps"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, metavar="FILE", help="JSON Lines file")
    add_subscriber_arguments(parser)
    parser.add_argument(
        "--count", type=positive_int, metavar="N", help="stop after N score messages"
    )
    parser.add_argument("--duration", type=positive_float, metavar="S", help="stop after S seconds")
    parser.add_argument(
        "--timeout",
        type=positive_float,
        metavar="S",
        help="fail when no message arrives for S seconds (default: wait forever)",
    )
    parser.add_argument(
        "--follow",
        action="store_true",
        help="keep recording after the stream ends (across publisher restarts) until Ctrl-C, "
        "--count or --duration",
    )


def run(args: argparse.Namespace) -> int:
    with StopOnSignal() as signals:
        record(
            args.out,
            subscriber_options(args),
            stop=signals.stop,
            count=args.count,
            duration_s=args.duration,
            timeout_s=args.timeout,
            follow=args.follow,
        )
    return 0
