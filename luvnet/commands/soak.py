"""``python -m luvnet.commands.soak``: the real live stream for a long time, checked for leaks,
losses and miscounts (see :mod:`luvnet.bench.soak` for what is sampled and checked).

Usage::

    python -m luvnet.commands.soak --minutes 30 --source phantom --backbone mobilenet_v3_small
    python -m luvnet.commands.soak --minutes 10 --source file:scan.mp4 --loop --checkpoint DIR

Exit status 0 when every check passed, 1 when one failed, 2 for a usage error. SIGINT or
SIGTERM ends the run early; it still reports. The report is printed; ``--json`` also writes it
with every sample.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from luvnet.bench.soak import SoakSettings, passed, print_report, run_soak, write_report
from luvnet.commands.logs import configure_logging
from luvnet.commands.options import checked, device_name, frame_size
from luvnet.commands.signals import StopOnSignal
from luvnet.commands.stream import BACKENDS
from luvnet.engine.errors import LuvnetError
from luvnet.engine.runtime import command_line
from luvnet.streamer.stages import HEAD_MODES

HELP = "stream for a long time and check memory, sequence gaps and drop accounting"
PROG = "python -m luvnet.commands.soak"

log = logging.getLogger("luvnet.commands.soak")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--minutes", type=float, required=True, help="how long to stream")
    parser.add_argument("--source", default="phantom", help="phantom[:SEED] | file:PATH | ...")
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--checkpoint", type=Path, help="checkpoint directory")
    model.add_argument(
        "--backbone", default="mobilenet_v3_small", help="random-init LUV-Net on this trunk"
    )
    parser.add_argument("--image-size", type=int, default=256, help="with --backbone")
    parser.add_argument("--size", help="phantom/capture frame size HxW")
    parser.add_argument("--fps", type=float, help="phantom/capture frame rate")
    parser.add_argument("--loop", action="store_true", help="replay a file source forever")
    parser.add_argument(
        "--as-fast-as-possible",
        action="store_true",
        help="block policy: score every frame instead of pacing and dropping",
    )
    parser.add_argument("--device", default="auto", type=device_name, help="auto | cpu | cuda[:N]")
    parser.add_argument("--backend", default="eager", choices=BACKENDS)
    parser.add_argument("--head", default="auto", choices=("auto", *HEAD_MODES), dest="head_mode")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--sample-s", type=float, default=5.0, help="seconds between samples")
    parser.add_argument(
        "--warmup-s", type=float, default=60.0, help="growth is measured after this"
    )
    parser.add_argument(
        "--max-growth", type=float, default=0.02, help="allowed RSS growth after the warm-up"
    )
    parser.add_argument("--json", type=Path, dest="json_out", help="write the report here")


def run(args: argparse.Namespace) -> int:
    settings = SoakSettings(
        minutes=args.minutes,
        source=args.source,
        checkpoint=args.checkpoint,
        backbone=args.backbone,
        image_size=args.image_size,
        size=checked("--size", frame_size, args.size) if args.size is not None else None,
        fps=args.fps,
        loop=args.loop,
        realtime=not args.as_fast_as_possible,
        device=args.device,
        backend=args.backend,
        head_mode=args.head_mode,
        threads=args.threads,
        sample_s=args.sample_s,
        warmup_s=args.warmup_s,
        max_growth=args.max_growth,
    )
    with StopOnSignal() as signals:  # an early stop still reports
        report = run_soak(settings, signals.stop, command=command_line())
    print_report(report)
    if args.json_out:
        write_report(args.json_out, report)
    return 0 if passed(report) else 1


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    configure_logging("soak")
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except LuvnetError as err:
        log.error("%s", err)
        return 2


if __name__ == "__main__":
    sys.exit(main())
