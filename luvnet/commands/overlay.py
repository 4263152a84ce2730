"""``luvnet overlay``: the live video with a score bar per pattern, threshold marks and the
attention strip, written to an annotated mp4 (headless) or shown in a window.

Frames carry patient data and never leave the process, so the overlay is a sink inside the
streaming process (:class:`~luvnet.plugins.consumers.overlay.OverlayWriter`), not a network
subscriber: this command is ``luvnet stream`` with the overlay switched on.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from luvnet.commands import stream as stream_command
from luvnet.plugins.consumers.overlay import OverlayWriter, check_window_support

HELP = "live video with score bars and attention strip"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    stream_command.add_arguments(parser)
    parser.add_argument("--out", type=Path, help="annotated mp4 (default: a window)")


def run(args: argparse.Namespace) -> int:
    if args.out is None:
        check_window_support()
    return stream_command.stream(args, [OverlayWriter(args.out)])
