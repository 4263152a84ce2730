"""``luvnet stream``: run the live pipeline and publish a score for every frame.

With no arguments: the synthetic phantom, the demo model, ``tcp://127.0.0.1:5555``. Once a
second it logs the newest frame's scores and the rates; frames that arrive faster than this
machine scores are dropped by design (the newest frame wins), which it explains once.
Ctrl-C (a stop by the user) or SIGTERM (a requested stop) ends it within a second, closes the
socket and says which. Exit codes: 0 when the source ended or the stream was stopped (Ctrl-C
too: the user got what they asked for; only during the first seconds' imports does Ctrl-C give
the shell's 130), 1 when the source failed for good (a file that cannot be decoded; live
sources reconnect instead), 2 for a configuration error.
"""

from __future__ import annotations

import argparse
import logging
import signal
from pathlib import Path

from luvnet.commands.logs import ROOT, on_terminal
from luvnet.commands.options import (
    add_decimate_argument,
    crop_box,
    device_name,
    fourcc,
    frame_size,
    nonnegative_float,
    positive_float,
    positive_int,
    source_uri,
    stream_id,
    topic_prefix,
    video_out,
    zmq_endpoint,
)
from luvnet.commands.signals import StopOnSignal, StopRequested
from luvnet.plugins.consumers.overlay import OverlayWriter
from luvnet.streamer import progress as stream_progress
from luvnet.streamer import run as stream_run
from luvnet.streamer.compose import StreamSettings
from luvnet.streamer.pipeline import log as pipeline_log
from luvnet.streamer.protocol import DEFAULT_ENDPOINT, DEFAULT_TOPIC_PREFIX, stream_id_of
from luvnet.streamer.publisher import PublisherOptions
from luvnet.streamer.stages import HEAD_MODES

HELP = "run the live pipeline and publish scores over ZeroMQ"
BACKENDS = ("eager", "auto", "inductor", "tensorrt", "onnxruntime")

log = logging.getLogger(__name__)


def add_publisher_arguments(parser: argparse.ArgumentParser) -> None:
    """The publishing options of ``luvnet stream`` (and any other producer command)."""
    group = parser.add_argument_group("publishing")
    group.add_argument(
        "--bind",
        default=DEFAULT_ENDPOINT,
        type=zmq_endpoint,
        metavar="ENDPOINT",
        help="ZeroMQ PUB address, e.g. tcp://[::1]:5555 for IPv6 loopback",
    )
    group.add_argument(
        "--allow-remote", action="store_true", help="allow a bind address other hosts can reach"
    )
    group.add_argument(
        "--curve-keys", type=Path, metavar="DIR", help="encrypt and admit only authorised keys"
    )
    group.add_argument(
        "--topic-prefix",
        default=DEFAULT_TOPIC_PREFIX,
        type=topic_prefix,
        help="topic prefix, e.g. luvnet.ward3; topics are PREFIX[.STREAM_ID].KIND "
        "(docs/protocol.md)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--source",
        default="phantom",
        type=source_uri,
        help="phantom[:SEED] | file:PATH | device:N | /dev/videoN | rtsp://... | http://...",
    )
    parser.add_argument(
        "--checkpoint", type=Path, help="checkpoint directory (default: the demo model)"
    )
    parser.add_argument(
        "--device", default="auto", type=device_name, help="auto | cpu | cuda | cuda:N"
    )
    parser.add_argument("--backend", default="eager", choices=BACKENDS)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "fp16"))
    parser.add_argument(
        "--head",
        default="auto",
        choices=("auto", *HEAD_MODES),
        dest="head_mode",
        help="auto: the compiled head over the window on CUDA, the incremental state elsewhere",
    )
    parser.add_argument(
        "--as-fast-as-possible",
        action="store_true",
        help="do not pace files/phantom at their frame rate; score every frame (no drops)",
    )
    parser.add_argument("--loop", action="store_true", help="replay a file forever")
    parser.add_argument(
        "--max-frames", type=positive_int, help="stop after N frames scored and published"
    )
    parser.add_argument("--crop", type=crop_box, metavar="X,Y,W,H", help="fixed sector box")
    add_decimate_argument(parser)
    parser.add_argument(
        "--size", type=frame_size, metavar="HxW", help="requested capture/phantom size"
    )
    parser.add_argument("--fps", type=positive_float, help="requested capture/phantom frame rate")
    parser.add_argument(
        "--fourcc", type=fourcc, help="capture device pixel format, 4 characters, e.g. MJPG"
    )
    parser.add_argument(
        "--stream-id",
        type=stream_id,
        help="name of this stream in its messages and topic, e.g. bed1 (default: the last word "
        "of a dotted --topic-prefix, else 'default')",
    )
    parser.add_argument(
        "--overlay", type=video_out, metavar="OUT.mp4", help="also write annotated video"
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no per-second line of scores and rates"
    )
    parser.add_argument(
        "--wait-subscriber",
        type=nonnegative_float,
        default=0.0,
        metavar="S",
        help="before the first frame, wait up to S seconds for a subscriber (PUB keeps no history)",
    )
    add_publisher_arguments(parser)


def settings_from_args(args: argparse.Namespace) -> StreamSettings:
    options = {"size": args.size, "fps": args.fps, "fourcc": args.fourcc}
    return StreamSettings(
        source=args.source,
        checkpoint=args.checkpoint,
        device=args.device,
        backend=args.backend,
        precision=args.precision,
        head_mode=args.head_mode,
        realtime=not args.as_fast_as_possible,
        drop_policy=getattr(args, "drop_policy", None),  # `luvnet overlay` of a file: "block"
        loop=args.loop,
        max_frames=args.max_frames,
        crop_box=args.crop,
        decimate_above=args.decimate_above,
        # Not given: the stream a dotted --topic-prefix names (luvnet.ward3 -> ward3).
        stream_id=args.stream_id or stream_id_of(args.topic_prefix),
        source_options={k: v for k, v in options.items() if v is not None},
    )


def publisher_options(args: argparse.Namespace) -> PublisherOptions:
    return PublisherOptions(
        bind=args.bind,
        topic_prefix=args.topic_prefix,
        allow_remote=args.allow_remote,
        curve_keys=args.curve_keys,
    )


def stopped_by(signum: int | None) -> str:
    """Who stopped the stream, as the user sees it: Ctrl-C is theirs, SIGTERM a request (a
    service manager, ``kill``)."""
    if signum == signal.SIGINT:
        return "by the user (Ctrl-C)"
    if signum == signal.SIGTERM:
        return "on request (SIGTERM)"
    return "on request"


def stream(args: argparse.Namespace, sinks: list[OverlayWriter]) -> int:
    """Run the stream of ``args`` with ``sinks`` (closed here); the command's exit status.

    A signal during start-up (model load, a compile of minutes, ``--wait-subscriber``) ends
    it at once with 0; afterwards it stops the loop within a frame, and the summary follows.
    """
    # The library's INFO lines (backend choice, sector crop) were never shown by the stream;
    # its own progress lines (this module, streamer.run, streamer.progress) are.
    logging.getLogger(ROOT).setLevel(logging.WARNING)
    for name in (__name__, stream_run.__name__, stream_progress.__name__, pipeline_log.name):
        logging.getLogger(name).setLevel(logging.INFO)
    try:
        with StopOnSignal(interrupt_until_started=True) as signals:
            outcome = stream_run.run_stream(
                settings_from_args(args),
                publisher_options(args),
                stop=signals.stop,
                sinks=sinks,
                wait_subscriber_s=args.wait_subscriber,
                status_lines=not args.quiet,
                on_started=signals.started,
                stop_reason=lambda: f"stopped {stopped_by(signals.signum)}",
                announce_startup=on_terminal(),
            )
    except StopRequested as stop:
        log.info("stopped during start-up, %s", stopped_by(stop.signum))
        return 0
    finally:
        for sink in sinks:
            sink.close()
    return outcome.exit_status


def run(args: argparse.Namespace) -> int:
    sinks = [OverlayWriter(args.overlay)] if args.overlay else []
    return stream(args, sinks)
