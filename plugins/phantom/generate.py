"""``luvnet phantom``: write synthetic labelled lung-ultrasound videos, a manifest and a
contact sheet.

usage: luvnet phantom --out DIR [--videos N] [--seconds S] [--seed K] [--size HxW] [--fps F]
                      [--videos-per-patient M]

Writes ``DIR/phantom_0000.mp4`` ... (OpenCV, 'mp4v'), ``DIR/manifest.csv`` in the training
manifest format (engine/manifest.py): every pattern cell holds the exact frame ranges where the
pattern is visible (``12-40;88-120``, 0-based, inclusive) or ``0``; and ``DIR/contact_sheet.png``.

Videos of one synthetic patient (``--videos-per-patient``, default 1) share the chest wall,
ribs and image settings, so patient-level splits are meaningful; patient ids are
``phantom-K-PPPP`` (K the seed, P = i // M). Video i is independent of N and can be rebuilt:
``PhantomVideo([K, 2, i], size, fps, frames, anatomy=Anatomy.sample(default_rng([K, 1, P])))``.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import cv2
import numpy as np

from luvnet.engine.errors import LuvnetError
from luvnet.engine.model.config import PATTERNS
from luvnet.plugins.phantom.contact import choose_frames, contact_sheet, truth_label, write_png
from luvnet.plugins.phantom.geometry import MIN_SIDE, NATIVE_SIZE
from luvnet.plugins.phantom.scene import Anatomy
from luvnet.plugins.phantom.video import DEFAULT_FPS, PhantomVideo

MANIFEST_NAME = "manifest.csv"
CONTACT_SHEET_NAME = "contact_sheet.png"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage = (
        "luvnet phantom --out DIR [--videos N] [--seconds S] [--seed K] [--size HxW] [--fps F]"
    )
    add = parser.add_argument
    add("--out", required=True, type=Path, metavar="DIR", help="output folder (created)")
    add("--videos", type=int, default=8, metavar="N", help="number of videos (default 8)")
    add("--seconds", type=float, default=6.0, metavar="S", help="length of each (default 6)")
    add("--seed", type=int, default=0, metavar="K", help="seed of the set (default 0)")
    add(
        "--size",
        default="x".join(map(str, NATIVE_SIZE)),
        metavar="HxW",
        help="frame size, even numbers (default 924x1232, the paper's scanner)",
    )
    add("--fps", type=float, default=DEFAULT_FPS, metavar="F", help="frame rate (default 30)")
    add(
        "--videos-per-patient",
        type=int,
        default=1,
        metavar="M",
        help="videos sharing one synthetic patient's anatomy (default 1)",
    )


def parse_size(text: str) -> tuple[int, int]:
    h, sep, w = text.lower().partition("x")
    if not sep or not h.isdigit() or not w.isdigit():
        raise LuvnetError(f"--size: expected HxW such as 924x1232, got {text!r}")
    height, width = int(h), int(w)
    if height < MIN_SIDE or width < MIN_SIDE or height % 2 or width % 2:
        raise LuvnetError(
            f"--size: expected even height and width of at least {MIN_SIDE} (mp4v needs even "
            f"sizes), got {text!r}"
        )
    return height, width


def _check(args: argparse.Namespace) -> tuple[tuple[int, int], int]:
    size = parse_size(args.size)
    if args.videos < 1:
        raise LuvnetError(f"--videos: expected at least 1, got {args.videos}")
    if args.seed < 0:
        raise LuvnetError(f"--seed: expected a non-negative integer, got {args.seed}")
    if args.videos_per_patient < 1:
        raise LuvnetError(
            f"--videos-per-patient: expected at least 1, got {args.videos_per_patient}"
        )
    if not 0 < args.fps <= 240:
        raise LuvnetError(f"--fps: expected a frame rate in (0, 240], got {args.fps}")
    frames = round(args.seconds * args.fps)
    if frames < 1:
        raise LuvnetError(f"--seconds: expected a length of at least one frame, got {args.seconds}")
    return size, frames


def manifest_cell(ranges: list[tuple[int, int]]) -> str:
    """``0`` when absent, else ``a-b;c-d`` (0-based, inclusive)."""
    return ";".join(f"{a}-{b}" for a, b in ranges) if ranges else "0"


def plan_videos(args: argparse.Namespace, size: tuple[int, int], frames: int) -> list[PhantomVideo]:
    """Scenes and truth for the whole set; nothing is rendered yet."""
    anatomies: dict[int, Anatomy] = {}
    videos = []
    for i in range(args.videos):
        patient = i // args.videos_per_patient
        if patient not in anatomies:
            anatomies[patient] = Anatomy.sample(np.random.default_rng([args.seed, 1, patient]))
        videos.append(
            PhantomVideo([args.seed, 2, i], size, args.fps, frames, anatomy=anatomies[patient])
        )
    return videos


def _write_video(path: Path, video: PhantomVideo, keep: set[int]) -> dict[int, np.ndarray]:
    height, width = video.size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), video.fps, (width, height))
    if not writer.isOpened():
        raise LuvnetError(f"{path}: OpenCV cannot write an mp4v video here (check the folder)")
    kept = {}
    try:
        for i in range(len(video)):
            frame = video.frame(i)
            writer.write(frame)
            if i in keep:
                kept[i] = frame
    finally:
        writer.release()
    return kept


def run(args: argparse.Namespace) -> int:
    size, frames = _check(args)
    out: Path = args.out
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise LuvnetError(
            f"--out {str(out)!r}: cannot create the folder ({err.strerror})"
        ) from None
    videos = plan_videos(args, size, frames)
    tables = [v.truth for v in videos]
    names = [f"phantom_{i:04d}.mp4" for i in range(len(videos))]
    picks = choose_frames(tables, [v.coverage for v in videos])
    wanted = {pick for pick_list in picks.values() for pick in pick_list}
    kept: dict[tuple[int, int], np.ndarray] = {}
    rows = []
    for i, (video, name) in enumerate(zip(videos, names, strict=True)):
        keep = {f for v, f in wanted if v == i}
        for f, image in _write_video(out / name, video, keep).items():
            kept[(i, f)] = image
        video.release()
        ranges = video.truth_ranges()
        patient = f"phantom-{args.seed}-{i // args.videos_per_patient:04d}"
        rows.append([name, patient, *(manifest_cell(ranges[p]) for p in PATTERNS)])
        share = truth_label(video.truth.mean(axis=0) >= 0.5)
        print(f"{out / name}: {len(video)} frames, mostly {share}", file=sys.stderr, flush=True)
    with open(out / MANIFEST_NAME, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["video", "patient_id", *PATTERNS])
        writer.writerows(rows)
    write_png(out / CONTACT_SHEET_NAME, contact_sheet(picks, kept, tables, names))
    share = np.concatenate(tables).mean(axis=0)
    summary = ", ".join(f"{p} {s:.0%}" for p, s in zip(PATTERNS, share, strict=True))
    print(f"{out / MANIFEST_NAME}: {len(rows)} videos; frames positive: {summary}")
    return 0
