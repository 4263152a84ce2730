"""``luvnet overlay``: the live video with a score bar per pattern, threshold marks and the
attention strip, written to an annotated video (``--out``, default ``overlay.mp4``) and/or
shown in a window (``--window``, an OpenCV build with GUI support).

Frames carry patient data and never leave the process, so the overlay is a sink inside the
streaming process (:class:`~luvnet.plugins.consumers.overlay.OverlayWriter`), not a network
subscriber: this command is ``luvnet stream`` with the overlay switched on. Writing a file
from a file or the phantom scores every frame (the replay waits for the model instead of
dropping frames), so the video has every frame of the source, at the source's frame rate.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from luvnet.commands import stream as stream_command
from luvnet.commands.options import video_out
from luvnet.plugins.consumers.overlay import OverlayWriter, check_window_support
from luvnet.streamer.sources import split_uri

HELP = "live video with score bars and attention strip"
DEFAULT_OUT = Path("overlay.mp4")
FINITE_SCHEMES = ("file", "phantom")  # sources that can wait for the model

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    stream_command.add_arguments(parser)
    parser.add_argument(
        "--out",
        type=video_out,
        metavar="FILE.mp4",
        help=f"annotated video to write (default {DEFAULT_OUT}, or none with --window)",
    )
    parser.add_argument(
        "--window",
        action="store_true",
        help="show the overlay in a window (needs an OpenCV build with GUI support)",
    )


def run(args: argparse.Namespace) -> int:
    if args.window:
        check_window_support()
    out = args.out if args.out is not None or args.window else DEFAULT_OUT
    writer = OverlayWriter(out, window=args.window)
    if out is not None and split_uri(args.source)[0] in FINITE_SCHEMES:
        args.drop_policy = "block"  # a file's overlay holds every frame: wait, never drop
    status = stream_command.stream(args, [writer])
    log.setLevel(logging.INFO)  # `stream` quiets the luvnet loggers except its own
    log.info("%s", writer.summary())
    return status
