"""Phantom rendering speed on one core (``python -m luvnet.commands.phantom_speed``).

Renders frames of a few scenes (all four patterns present) at the native 924 x 1232 and at
256 x 256 with ``cv2.setNumThreads(1)``, and prints median and p99 milliseconds per frame,
frames per second, and the one-off cost of building a scene's textures (done on a worker
thread by the live source, so it does not stall a paced stream).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import cv2
import numpy as np

from luvnet.plugins.phantom.video import PhantomVideo

SIZES: tuple[tuple[int, int], ...] = ((924, 1232), (256, 256))
ALL_PATTERNS = {"a_lines": True, "b_lines": True, "consolidation": True, "pleural_effusion": True}


def measure(size: tuple[int, int], frames: int, scenes: int) -> dict[str, float]:
    per_frame: list[float] = []
    builds: list[float] = []
    for seed in range(scenes):
        video = PhantomVideo(seed, size=size, num_frames=frames, present=ALL_PATTERNS)
        start = time.perf_counter()
        video.renderer  # noqa: B018 - the scene's one-off texture build
        builds.append(time.perf_counter() - start)
        video.frame(0)  # warm-up
        for i in range(frames):
            start = time.perf_counter()
            video.frame(i)
            per_frame.append(time.perf_counter() - start)
    ms = np.array(per_frame) * 1e3
    return {
        "median_ms": float(np.median(ms)),
        "p99_ms": float(np.percentile(ms, 99)),
        "fps": float(1e3 / np.median(ms)),
        "build_ms": float(np.median(builds) * 1e3),
    }


def render_speed(frames: int, scenes: int) -> Iterator[tuple[tuple[int, int], dict[str, float]]]:
    """(size, :func:`measure` figures) at each of :data:`SIZES` in turn, with one OpenCV thread."""
    cv2.setNumThreads(1)
    for size in SIZES:
        yield size, measure(size, frames, scenes)
