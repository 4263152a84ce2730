"""``luvnet bench``: per-stage and end-to-end latency of the live pipeline, side by side.

Cached vs naive encoding, incremental head vs window rerun, each requested backend and,
with ``--paced``, the paced live pipeline; see :mod:`luvnet.bench.run`. Speed is reported,
never asserted.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from luvnet.bench.run import BenchSettings, print_report, run_bench
from luvnet.bench.serving import ServeBenchSettings
from luvnet.commands.options import (
    checked,
    device_name,
    frame_size,
    nonnegative_int,
    positive_int,
)
from luvnet.engine.errors import LuvnetError
from luvnet.streamer.stages import HEAD_MODES

HELP = "latency of the pipeline stages, cached vs naive, backends"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "mode",
        nargs="?",
        default="pipeline",
        choices=("pipeline", "serve"),
        help="pipeline: the stages, cached vs naive, backends; serve: N paced streams through "
        "`luvnet serve` against N independent `luvnet stream` processes (--streams)",
    )
    parser.add_argument(
        "--streams",
        default="1,2,4,8",
        help="serve: comma list of stream counts, e.g. 1,2,4,8",
    )
    parser.add_argument(
        "--repeats",
        type=positive_int,
        default=1,
        help="serve: runs of each side per stream count, alternating which side goes first; "
        "each side's median run is reported",
    )
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--backbone", default="densenet161", help="random-init LUV-Net trunk")
    model.add_argument("--checkpoint", type=Path, help="benchmark this checkpoint instead")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--source", default="phantom:0", help="frames to feed (URI)")
    parser.add_argument("--size", default="924x1232", help="phantom frame size HxW")
    parser.add_argument("--frames", type=positive_int, default=60, help="measured frames per mode")
    parser.add_argument(
        "--warmup", type=nonnegative_int, default=10, help="unmeasured frames first"
    )
    parser.add_argument(
        "--naive-frames", type=positive_int, default=5, help="measured naive frames"
    )
    parser.add_argument("--device", default="auto", type=device_name, help="auto | cpu | cuda[:N]")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "fp16"))
    parser.add_argument("--backends", default="eager", help="comma list: eager,inductor,...")
    parser.add_argument("--paced", default="", help="comma list of fps for paced runs, e.g. 30,60")
    parser.add_argument("--paced-seconds", type=float, default=10.0)
    parser.add_argument(
        "--paced-backends",
        default=None,
        help="comma list of loaded backends to run paced (default: all of --backends)",
    )
    parser.add_argument(
        "--paced-source",
        default="replay",
        choices=("replay", "live"),
        help="replay: --source's frames decoded beforehand and replayed from memory at the "
        "pace, as a capture card delivers them; live: the source itself, paced",
    )
    parser.add_argument(
        "--paced-head",
        default="incremental",
        choices=HEAD_MODES,
        help="head stage of the paced pipeline: incremental state, or the backend's compiled "
        "head rerun over the window",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", type=Path, dest="json_out", help="write every figure here")
    parser.add_argument("--plot", type=Path, help="latency CDFs per mode (PNG)")


def names(text: str) -> tuple[str, ...]:
    """A comma list: ``eager, inductor`` -> ("eager", "inductor"); empty items dropped."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def frame_rates(text: str) -> tuple[float, ...]:
    """``--paced``: a comma list of frame rates."""
    try:
        return tuple(float(part) for part in names(text))
    except ValueError:
        raise LuvnetError(f"--paced: expected a comma list of frame rates, got {text!r}") from None


def settings_from_args(args: argparse.Namespace) -> BenchSettings:
    return BenchSettings(
        backbone=args.backbone,
        checkpoint=args.checkpoint,
        image_size=args.image_size,
        source=args.source,
        size=checked("--size", frame_size, args.size),
        frames=args.frames,
        warmup=args.warmup,
        naive_frames=args.naive_frames,
        device=args.device,
        precision=args.precision,
        backends=names(args.backends),
        paced_fps=frame_rates(args.paced),
        paced_seconds=args.paced_seconds,
        paced_backends=names(args.paced_backends) if args.paced_backends is not None else None,
        paced_source=args.paced_source,
        paced_head=args.paced_head,
        threads=args.threads,
    )


def stream_counts(text: str) -> tuple[int, ...]:
    """``--streams``: a comma list of positive stream counts."""
    try:
        counts = tuple(int(part) for part in names(text))
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1:
        raise LuvnetError(f"--streams: expected a comma list of positive integers, got {text!r}")
    return counts


def serve_settings_from_args(args: argparse.Namespace) -> ServeBenchSettings:
    """``luvnet bench serve``: the demo model unless --checkpoint; --size defaults to 480x640."""
    size = args.size if args.size != "924x1232" else "480x640"
    return ServeBenchSettings(
        streams=stream_counts(args.streams),
        checkpoint=args.checkpoint,
        source=args.source,
        size=checked("--size", frame_size, size),
        seconds=args.paced_seconds,
        device=args.device,
        repeats=args.repeats,
    )


def run(args: argparse.Namespace) -> int:
    if args.mode == "serve":
        # Ray is imported only for this mode (luvnet[serve]).
        from luvnet.bench.serving import print_serve_report, run_serve_bench

        result = run_serve_bench(serve_settings_from_args(args))
        print_serve_report(result.report)
    else:
        result = run_bench(settings_from_args(args))
        print_report(result.report)
    if args.json_out:
        result.write_json(args.json_out)
    if args.plot:
        result.plot(args.plot)
    return 0
