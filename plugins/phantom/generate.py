"""A set of synthetic labelled lung-ultrasound videos, a manifest and a contact sheet
(``luvnet phantom``).

Writes ``OUT/phantom_0000.mp4`` ... (OpenCV, 'mp4v'), ``OUT/manifest.csv`` in the training
manifest format (engine/manifest.py): every pattern cell holds the exact frame ranges where the
pattern is visible (``12-40;88-120``, 0-based, inclusive) or ``0``; and ``OUT/contact_sheet.png``.

Videos of one synthetic patient (``videos_per_patient``, default 1) share the chest wall,
ribs and image settings, so patient-level splits are meaningful; patient ids are
``phantom-K-PPPP`` (K the seed, P = i // M). Video i is independent of N and can be rebuilt:
``PhantomVideo([K, 2, i], size, fps, frames, anatomy=Anatomy.sample(default_rng([K, 1, P])))``,
with ``probe=Probe.sample(default_rng([K, 3, P]))`` when ``probes`` is ``varied`` (each
synthetic patient scanned with its own convex probe and depth; ``paper``, the default, keeps
the paper's scanner for every video) and ``look=LOOK`` (``plain``, the default, or ``varied``:
each video rendered through a look drawn from its scene's seed).
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from luvnet.engine.data.video import ffmpeg_name
from luvnet.engine.errors import LuvnetError
from luvnet.engine.files import atomic_open
from luvnet.engine.model.config import PATTERNS
from luvnet.plugins.phantom.contact import choose_frames, contact_sheet, truth_label, write_png
from luvnet.plugins.phantom.geometry import MIN_SIDE, NATIVE_SIZE, PAPER_PROBE, Probe
from luvnet.plugins.phantom.look import LOOKS
from luvnet.plugins.phantom.scene import Anatomy
from luvnet.plugins.phantom.video import DEFAULT_FPS, PhantomVideo

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.csv"
CONTACT_SHEET_NAME = "contact_sheet.png"
PROBES = ("paper", "varied")  # the paper's scanner for every video, or one probe per patient


@dataclass(frozen=True)
class PhantomSet:
    """What to generate; :meth:`problems` lists the values that cannot be."""

    out: Path
    videos: int = 8
    seconds: float = 6.0
    seed: int = 0
    size: tuple[int, int] = NATIVE_SIZE  # (height, width), even, each at least MIN_SIDE
    fps: float = DEFAULT_FPS
    videos_per_patient: int = 1
    probes: str = "paper"  # one of PROBES
    look: str = "plain"  # one of look.LOOKS

    @property
    def frames(self) -> int:
        """Frames per video."""
        return round(self.seconds * self.fps)

    def problems(self) -> dict[str, str]:
        """field -> what is wrong with its value; empty when the set can be generated."""
        height, width = self.size
        found = {}
        if height < MIN_SIDE or width < MIN_SIDE or height % 2 or width % 2:
            found["size"] = (
                f"expected even height and width of at least {MIN_SIDE} (mp4v needs even sizes), "
                f"got {height}x{width}"
            )
        if self.videos < 1:
            found["videos"] = f"expected at least 1, got {self.videos}"
        if self.seed < 0:
            found["seed"] = f"expected a non-negative integer, got {self.seed}"
        if self.videos_per_patient < 1:
            found["videos_per_patient"] = f"expected at least 1, got {self.videos_per_patient}"
        if self.probes not in PROBES:
            found["probes"] = f"expected one of {', '.join(PROBES)}, got {self.probes!r}"
        if self.look not in LOOKS:
            found["look"] = f"expected one of {', '.join(LOOKS)}, got {self.look!r}"
        if not 0 < self.fps <= 240:
            found["fps"] = f"expected a frame rate in (0, 240], got {self.fps}"
        elif self.frames < 1:
            found["seconds"] = f"expected a length of at least one frame, got {self.seconds}"
        return found


def manifest_cell(ranges: list[tuple[int, int]]) -> str:
    """``0`` when absent, else ``a-b;c-d`` (0-based, inclusive)."""
    return ";".join(f"{a}-{b}" for a, b in ranges) if ranges else "0"


def plan_videos(spec: PhantomSet) -> list[PhantomVideo]:
    """Scenes and truth for the whole set; nothing is rendered yet."""
    anatomies: dict[int, Anatomy] = {}
    videos = []
    for i in range(spec.videos):
        patient = i // spec.videos_per_patient
        if patient not in anatomies:
            anatomies[patient] = Anatomy.sample(np.random.default_rng([spec.seed, 1, patient]))
        probe = PAPER_PROBE
        if spec.probes == "varied":
            probe = Probe.sample(np.random.default_rng([spec.seed, 3, patient]))
        videos.append(
            PhantomVideo(
                [spec.seed, 2, i],
                spec.size,
                spec.fps,
                spec.frames,
                anatomy=anatomies[patient],
                probe=probe,
                look=spec.look,
            )
        )
    return videos


def _write_video(path: Path, video: PhantomVideo, keep: set[int]) -> dict[int, np.ndarray]:
    height, width = video.size
    fourcc = cv2.VideoWriter.fourcc(*"mp4v")
    writer = cv2.VideoWriter(ffmpeg_name(path), fourcc, video.fps, (width, height))
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


def write_phantom_set(spec: PhantomSet) -> np.ndarray:
    """Render and write the set (module docstring); returns the share of frames positive per
    pattern [P], over the whole set.

    Raises:
        LuvnetError: a value :meth:`PhantomSet.problems` names, a folder that cannot be
            created, or a video OpenCV cannot write.
    """
    problems = spec.problems()
    if problems:
        raise LuvnetError("; ".join(f"{field}: {why}" for field, why in problems.items()))
    out = spec.out
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise LuvnetError(
            f"--out {str(out)!r}: cannot create the folder ({err.strerror})"
        ) from None
    videos = plan_videos(spec)
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
        patient = f"phantom-{spec.seed}-{i // spec.videos_per_patient:04d}"
        rows.append([name, patient, *(manifest_cell(ranges[p]) for p in PATTERNS)])
        share = truth_label(video.truth.mean(axis=0) >= 0.5)
        log.info("%s: %d frames, mostly %s", out / name, len(video), share)
    with atomic_open(out / MANIFEST_NAME, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["video", "patient_id", *PATTERNS])
        writer.writerows(rows)
    write_png(out / CONTACT_SHEET_NAME, contact_sheet(picks, kept, tables, names))
    return np.concatenate(tables).mean(axis=0)
