"""``python -m luvnet.commands.phantom_speed``: phantom rendering speed on one core.

Renders frames of a few scenes (all four patterns present) at the native 924 x 1232 and at
256 x 256 with one OpenCV thread, and prints median and p99 milliseconds per frame, frames
per second, and the one-off cost of building a scene's textures (see
:mod:`luvnet.bench.phantom_speed`).
"""

from __future__ import annotations

import argparse
import sys

from luvnet.bench.phantom_speed import render_speed

HELP = "phantom rendering speed on one core"
PROG = "python -m luvnet.commands.phantom_speed"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frames", type=int, default=150, help="frames per scene")
    parser.add_argument("--scenes", type=int, default=3, help="scenes per size")


def run(args: argparse.Namespace) -> int:
    print(f"phantom render, one OpenCV thread, {args.scenes} scenes x {args.frames} frames")
    for (height, width), r in render_speed(args.frames, args.scenes):
        print(
            f"{height}x{width}: median {r['median_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  "
            f"{r['fps']:.0f} fps  (scene build {r['build_ms']:.0f} ms)"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
