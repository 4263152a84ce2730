"""``luvnet stream``: run the live pipeline and publish a score for every frame.

With no arguments: the synthetic phantom, the demo model, ``tcp://127.0.0.1:5555``.
Ctrl-C or SIGTERM stops within a second and closes the socket. Exit codes: 0 when the source
ended or the stream was stopped, 1 when the source failed for good (a file that cannot be
decoded; live sources reconnect instead), 2 for a configuration error.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from luvnet.engine.errors import LuvnetError
from luvnet.streamer.compose import StreamSettings, compose_stream
from luvnet.streamer.protocol import ScoreMessage, StatusMessage
from luvnet.streamer.publisher import add_publisher_arguments, open_publisher
from luvnet.streamer.stages import HEAD_MODES

BACKENDS = ("eager", "auto", "inductor", "tensorrt", "onnxruntime")


def _box(text: str) -> tuple[int, int, int, int]:
    parts = text.split(",")
    if len(parts) != 4 or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"expected X,Y,W,H in pixels, got {text!r}")
    x, y, w, h = (int(p) for p in parts)
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"width and height must be positive, got {text!r}")
    return x, y, w, h


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--source",
        default="phantom",
        help="phantom[:SEED] | file:PATH | device:N | /dev/videoN | rtsp://... | http://...",
    )
    parser.add_argument("--checkpoint", type=Path, help="checkpoint directory (default: demo)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
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
        "--max-frames", type=_positive, help="stop after N frames scored and published"
    )
    parser.add_argument("--crop", type=_box, metavar="X,Y,W,H", help="fixed sector box")
    parser.add_argument("--size", metavar="HxW", help="requested capture/phantom size")
    parser.add_argument("--fps", type=float, help="requested capture/phantom frame rate")
    parser.add_argument("--fourcc", help="capture device pixel format, e.g. MJPG")
    parser.add_argument("--stream-id", default="default")
    parser.add_argument(
        "--overlay", type=Path, metavar="OUT.mp4", help="also write annotated video"
    )
    parser.add_argument("--quiet", action="store_true", help="no per-second status line")
    parser.add_argument(
        "--wait-subscriber",
        type=float,
        default=0.0,
        metavar="S",
        help="before the first frame, wait up to S seconds for a subscriber (PUB keeps no history)",
    )
    add_publisher_arguments(parser)


def parse_size(text: str | None) -> tuple[int, int] | None:
    """``--size HxW`` (shared by the stream, bench and soak commands); None stays None."""
    if text is None:
        return None
    h, sep, w = text.lower().partition("x")
    if not sep or not h.isdigit() or not w.isdigit() or int(h) < 1 or int(w) < 1:
        raise LuvnetError(f"--size: expected HxW such as 924x1232, got {text!r}")
    return int(h), int(w)


def settings_from_args(args: argparse.Namespace) -> StreamSettings:
    options = {"size": parse_size(args.size), "fps": args.fps, "fourcc": args.fourcc}
    return StreamSettings(
        source=args.source,
        checkpoint=args.checkpoint,
        device=args.device,
        backend=args.backend,
        precision=args.precision,
        head_mode=args.head_mode,
        realtime=not args.as_fast_as_possible,
        loop=args.loop,
        max_frames=args.max_frames,
        crop_box=args.crop,
        stream_id=args.stream_id,
        source_options={k: v for k, v in options.items() if v is not None},
    )


def _print_status(msg: StatusMessage) -> None:
    error = f"  last error: {msg.last_error}" if msg.last_error else ""
    print(
        f"[{msg.uptime_s:7.1f}s] {msg.state:12s} in {msg.input_fps:5.1f} fps  "
        f"out {msg.output_fps:5.1f} fps  published {msg.frames_published}  "
        f"dropped {msg.frames_dropped}  {msg.backend}/{msg.device}{error}",
        file=sys.stderr,
        flush=True,
    )


class _StopDuringStartup(BaseException):
    """SIGTERM/Ctrl-C before the loop: unwinds model load, compile and --wait-subscriber, which
    never look at the stop flag (a CPU compile takes minutes). BaseException, so that no
    ``except Exception`` on the way (a backend falling back to the next one) swallows it."""


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="luvnet stream: %(message)s")
    stop = threading.Event()
    starting = [True]

    # In the loop, SIGTERM and Ctrl-C only set a flag: it is noticed within one frame or 50 ms.
    def on_signal(*_: object) -> None:
        stop.set()
        if starting[0]:
            starting[0] = False  # a second signal must not interrupt the unwinding
            raise _StopDuringStartup

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    try:
        return _run(args, stop, starting)
    except _StopDuringStartup:
        print("luvnet stream: stopped during start-up", file=sys.stderr)
        return 0


def _run(args: argparse.Namespace, stop: threading.Event, starting: list[bool]) -> int:
    settings = settings_from_args(args)
    sinks = []
    if args.overlay or getattr(args, "overlay_window", False):
        from luvnet.plugins.consumers.overlay import OverlayWriter

        sinks.append(OverlayWriter(args.overlay))
    with open_publisher(args) as publisher:
        last_status: list[StatusMessage] = []

        def publish(msg: ScoreMessage | StatusMessage) -> None:
            publisher.publish(msg)
            if isinstance(msg, StatusMessage):
                last_status[:] = [msg]
                if not args.quiet:
                    _print_status(msg)

        pipeline = compose_stream(settings, publish, sinks)
        if args.wait_subscriber > 0 and not publisher.wait_for_subscriber(args.wait_subscriber):
            print("luvnet stream: no subscriber yet; starting anyway", file=sys.stderr)
        print(
            f"luvnet stream: {settings.source} -> {publisher.endpoint} "
            f"(model {pipeline.identity.model_id}, {pipeline.identity.backend} on "
            f"{pipeline.identity.device})\nluvnet stream: backend {pipeline.identity.detail}",
            file=sys.stderr,
            flush=True,
        )
        starting[0] = False
        published = pipeline.run(stop)
    for sink in sinks:
        sink.close()
    state = last_status[0].state if last_status else "unknown"
    print(f"luvnet stream: {published} frames scored, source {state}", file=sys.stderr)
    if state == "error":
        print(f"luvnet stream: error: {last_status[0].last_error}", file=sys.stderr)
        return 1
    return 0
