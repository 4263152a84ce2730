"""``luvnet phantom``: write synthetic labelled lung-ultrasound videos, a manifest and a
contact sheet.

usage: luvnet phantom --out DIR [--videos N] [--seconds S] [--seed K] [--size HxW] [--fps F]
                      [--videos-per-patient M] [--probes paper|varied] [--look plain|varied]

See :mod:`luvnet.plugins.phantom.generate` for what is written and how video i is seeded.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from luvnet.commands.options import checked, frame_size
from luvnet.engine.errors import LuvnetError
from luvnet.engine.model.config import PATTERNS
from luvnet.plugins.phantom.generate import MANIFEST_NAME, PhantomSet, write_phantom_set
from luvnet.plugins.phantom.geometry import NATIVE_SIZE
from luvnet.plugins.phantom.video import DEFAULT_FPS

HELP = "write synthetic labelled lung-ultrasound videos"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage = (
        "luvnet phantom --out DIR [--videos N] [--seconds S] [--seed K] [--size HxW] [--fps F] "
        "[--videos-per-patient M] [--probes paper|varied] [--look plain|varied]"
    )
    add = parser.add_argument
    add("--out", required=True, type=Path, metavar="DIR", help="output folder (created)")
    add("--videos", type=int, default=8, metavar="N", help="number of videos")
    add("--seconds", type=float, default=6.0, metavar="S", help="length of each, seconds")
    add("--seed", type=int, default=0, metavar="K", help="seed of the set")
    add(
        "--size",
        default="x".join(map(str, NATIVE_SIZE)),
        metavar="HxW",
        help="frame size, even numbers; 924x1232 is the paper's scanner",
    )
    add("--fps", type=float, default=DEFAULT_FPS, metavar="F", help="frame rate")
    add(
        "--videos-per-patient",
        type=int,
        default=1,
        metavar="M",
        help="videos sharing one synthetic patient's anatomy",
    )
    add(
        "--probes",
        default="paper",
        metavar="KIND",
        help="paper: the paper's convex probe for every video; varied: each synthetic patient "
        "scanned with its own probe radius, field of view and depth",
    )
    add(
        "--look",
        default="plain",
        metavar="KIND",
        help="plain: the phantom's fixed rendering; varied: each video's lung gain, B-line "
        "and A-line brightness, rib shadows, dynamic range and blur drawn from its seed",
    )


def phantom_set(args: argparse.Namespace) -> PhantomSet:
    """The set asked for; the first bad value is one error naming its option.

    Checked here rather than by argparse types, so that the error is one
    ``luvnet phantom: error:`` line without the usage text.
    """
    spec = PhantomSet(
        out=args.out,
        videos=args.videos,
        seconds=args.seconds,
        seed=args.seed,
        size=checked("--size", frame_size, args.size),
        fps=args.fps,
        videos_per_patient=args.videos_per_patient,
        probes=args.probes,
        look=args.look,
    )
    problems = spec.problems()
    if problems:
        field, why = next(iter(problems.items()))
        raise LuvnetError(f"--{field.replace('_', '-')}: {why}")
    return spec


def run(args: argparse.Namespace) -> int:
    spec = phantom_set(args)
    share = write_phantom_set(spec)
    summary = ", ".join(f"{p} {s:.0%}" for p, s in zip(PATTERNS, share, strict=True))
    print(f"{spec.out / MANIFEST_NAME}: {spec.videos} videos; frames positive: {summary}")
    return 0
