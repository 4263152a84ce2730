"""``luvnet attention --checkpoint C --video V --out plot.png [--manifest M] [--clip I]``.

One panel per pattern: attention over the video's frames, the top-3 frames as thumbnails,
each clip's probability and, with ``--manifest``, the ground truth (see
:mod:`luvnet.engine.evaluation.attention_plot`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from luvnet.engine.errors import LuvnetError
from luvnet.engine.evaluation.attention_plot import plot_attention

HELP = "per-pattern attention curves for one video"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage = (
        "luvnet attention --checkpoint C --video V --out plot.png [--manifest M] [--clip I]"
    )
    parser.add_argument("--checkpoint", type=Path, required=True, help="checkpoint directory")
    parser.add_argument("--video", type=Path, required=True, help="video file")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument(
        "--manifest", type=Path, default=None, help="manifest listing the video (ground truth)"
    )
    parser.add_argument("--clip", type=int, default=None, help="only this clip (default: all)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda if any)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def run(args: argparse.Namespace) -> int:
    if args.threads is not None and args.threads < 1:
        raise LuvnetError(f"--threads: expected a positive integer, got {args.threads}")
    out: Path = args.out
    if out.suffix.lower() != ".png":
        raise LuvnetError(f"--out {out}: expected a .png file name")
    width, height = plot_attention(
        args.checkpoint,
        args.video,
        out,
        manifest=args.manifest,
        clip=args.clip,
        device=args.device,
        threads=args.threads,
    )
    print(f"wrote {out} ({width}x{height})")
    return 0
