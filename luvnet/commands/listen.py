"""``luvnet listen``: a live text view of the score stream (see luvnet.plugins.consumers.listen).

Usage: ``luvnet listen [--endpoint tcp://127.0.0.1:5555] [--topic-prefix P] [--curve-keys DIR
[--client NAME]] [--count N] [--timeout S]``. Ctrl-C or SIGTERM ends it cleanly with 0; no
message for ``--timeout`` seconds is an error (2, one line).
"""

from __future__ import annotations

import argparse

from luvnet.commands._subscriber_options import add_subscriber_arguments, subscriber_options
from luvnet.commands.options import positive_float, positive_int
from luvnet.commands.signals import StopOnSignal
from luvnet.plugins.consumers.listen import listen

HELP = "live text view of scores, latency and drops"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_subscriber_arguments(parser)
    parser.add_argument(
        "--count", type=positive_int, metavar="N", help="exit after N score messages"
    )
    parser.add_argument(
        "--timeout",
        type=positive_float,
        metavar="S",
        help="fail when no message arrives for S seconds (default: wait forever)",
    )


def run(args: argparse.Namespace) -> int:
    with StopOnSignal() as signals:
        listen(
            subscriber_options(args), stop=signals.stop, count=args.count, timeout_s=args.timeout
        )
    return 0
