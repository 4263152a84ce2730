"""Decode speed: the one file reader (PyAV) against the OpenCV reader it replaced, side by side.

``python -m luvnet.bench.decode_speed DIR [COUNT]`` decodes up to COUNT video files of DIR (all
by default, in name order) to grey uint8 stacks with both readers, alternating which goes first
per file so neither gains from the other warming a cache, each file's bytes read once before so
both find it in the page cache. It prints the median seconds per file of each, their ratio and
the totals (bench/RESULTS.md, "Decoding files"). Speed is never asserted by a test.

The OpenCV reader is kept here, as it was (git history: engine/data/video.py before PyAV), and
only here: it is a baseline, not a second reader.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from luvnet.engine.data.preprocess import to_gray_u8
from luvnet.engine.data.video import VIDEO_EXTENSIONS, read_video


def read_video_opencv(path: Path) -> np.ndarray:
    """The replaced reader's decoding: OpenCV's FFmpeg backend, frame by frame, to grey."""
    cap = cv2.VideoCapture(os.path.abspath(path), cv2.CAP_FFMPEG)
    frames: list[np.ndarray] = []
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(to_gray_u8(frame))
    finally:
        cap.release()
    if not frames:
        raise RuntimeError(f"{path}: OpenCV decoded no frame")
    return np.stack(frames)


@dataclass(frozen=True)
class DecodeComparison:
    files: int
    frames: int  # decoded by the new reader, all files
    same_count: int  # files where both readers decoded the same number of frames
    opencv_s: list[float]  # seconds per file
    pyav_s: list[float]

    def lines(self) -> list[str]:
        old, new = float(np.median(self.opencv_s)), float(np.median(self.pyav_s))
        return [
            f"files {self.files}, frames {self.frames}, same frame count in {self.same_count}",
            f"median per file: OpenCV {old * 1000:.1f} ms, PyAV {new * 1000:.1f} ms, "
            f"OpenCV / PyAV {old / new:.2f}x",
            f"total: OpenCV {sum(self.opencv_s):.2f} s, PyAV {sum(self.pyav_s):.2f} s, "
            f"OpenCV / PyAV {sum(self.opencv_s) / sum(self.pyav_s):.2f}x",
        ]


def compare_readers(paths: list[Path]) -> DecodeComparison:
    """Decode each file with both readers, alternating the order; seconds per file each."""
    for path in paths:
        path.read_bytes()  # into the page cache, for both
    opencv_s: list[float] = []
    pyav_s: list[float] = []
    frames = same = 0
    for i, path in enumerate(paths):
        runs = {}
        for reader in ("opencv", "pyav") if i % 2 == 0 else ("pyav", "opencv"):
            start = time.perf_counter()
            if reader == "opencv":
                count = len(read_video_opencv(path))
            else:
                count = len(read_video(path).frames)
            runs[reader] = (time.perf_counter() - start, count)
        opencv_s.append(runs["opencv"][0])
        pyav_s.append(runs["pyav"][0])
        frames += runs["pyav"][1]
        same += runs["opencv"][1] == runs["pyav"][1]
    return DecodeComparison(len(paths), frames, same, opencv_s, pyav_s)


def decode_report(folder: Path, count: int | None = None) -> str:
    """Both readers over the videos under ``folder`` (the first ``count``, sorted by path):
    the machine, then :meth:`DecodeComparison.lines`."""
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS)
    result = compare_readers(paths[:count] if count else paths)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    return f"{machine}; OpenCV {cv2.__version__}\n" + "\n".join(result.lines())
