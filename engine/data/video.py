"""Decode a video file into grey ``uint8`` frames: OpenCV first, Pillow where OpenCV cannot.

Every failure is a :class:`LuvnetError` naming the file and what was expected: missing,
empty (0 bytes), unsupported extension, not decodable, or truncated (fewer frames decoded
than the container declares).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from luvnet.engine.data.preprocess import to_gray_u8
from luvnet.engine.errors import LuvnetError

VIDEO_EXTENSIONS: tuple[str, ...] = (
    ".mp4", ".m4v", ".mov", ".avi", ".mpeg", ".mpg", ".mkv", ".webm", ".gif",
)  # fmt: skip


class Video(NamedTuple):
    """A decoded video; unpacks as ``frames, fps = read_video(path)``."""

    frames: np.ndarray  # [T, H, W] uint8 grey, T >= 1
    fps: float  # frames per second; 0.0 when the file does not say


def check_video_path(path: str | Path) -> Path:
    """The path, if it names a non-empty file with a video extension; else a LuvnetError."""
    path = Path(path)
    if path.suffix.lower() not in VIDEO_EXTENSIONS:
        raise LuvnetError(
            f"{path}: unsupported extension {path.suffix or '(none)'!r}; expected one of "
            f"{', '.join(VIDEO_EXTENSIONS)}"
        )
    if not path.is_file():
        raise LuvnetError(f"{path}: no such video file")
    if path.stat().st_size == 0:
        raise LuvnetError(f"{path}: empty file (0 bytes); expected a video")
    return path


def read_video(path: str | Path, max_frames: int | None = None) -> Video:
    """All frames (or the first ``max_frames``) of a video as grey uint8 [T, H, W]."""
    path = check_video_path(path)
    try:
        frames, fps, declared = _read_opencv(path, max_frames)
    except _Undecodable as cv_err:
        try:
            frames, fps, declared = _read_pillow(path, max_frames)
        except _Undecodable as pil_err:
            raise LuvnetError(
                f"{path}: not a readable video (OpenCV: {cv_err}; Pillow: {pil_err}); expected "
                f"{'/'.join(e.lstrip('.') for e in VIDEO_EXTENSIONS)} content"
            ) from None
    wanted = declared if max_frames is None else min(declared, max_frames)
    if _looks_truncated(len(frames), wanted):
        raise LuvnetError(
            f"{path}: truncated or corrupt video: decoded {len(frames)} of the {declared} "
            "frames its header declares"
        )
    return Video(_stack(path, frames), fps)


def iter_frames(path: str | Path) -> Iterator[np.ndarray]:
    """Grey uint8 [H, W] frames one at a time (OpenCV only; for long files and previews)."""
    path = check_video_path(path)
    cap = _open(path)
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                return
            yield to_gray_u8(frame)
    finally:
        cap.release()


def ffmpeg_name(path: str | Path) -> str:
    """The name to hand OpenCV's FFmpeg backend for a local file: always absolute.

    FFmpeg reads a relative ``P01:L1.mp4`` as protocol ``P01``; an absolute name starts with
    ``/``, which no protocol name can hold. (``%`` is only a pattern to OpenCV's image-sequence
    backend, so callers also pass ``cv2.CAP_FFMPEG``.)
    """
    return os.path.abspath(path)


class _Undecodable(Exception):
    pass


def _open(path: Path) -> cv2.VideoCapture:
    # CAP_FFMPEG explicitly: the default also tries the image-sequence backend, which would
    # treat a "%d" in a file name as a pattern.
    cap = cv2.VideoCapture(ffmpeg_name(path), cv2.CAP_FFMPEG)
    if not cap.isOpened():
        cap.release()
        raise LuvnetError(f"{path}: OpenCV cannot open it; expected a video file")
    return cap


def _read_opencv(path: Path, max_frames: int | None) -> tuple[list[np.ndarray], float, int]:
    cap = cv2.VideoCapture(ffmpeg_name(path), cv2.CAP_FFMPEG)
    try:
        if not cap.isOpened():
            raise _Undecodable("cannot open")
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        frames: list[np.ndarray] = []
        while max_frames is None or len(frames) < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(to_gray_u8(frame))
    finally:
        cap.release()
    if not frames:
        raise _Undecodable("opened but decoded no frame")
    # MPEG program streams only estimate their frame count from the bitrate.
    if path.suffix.lower() in (".mpeg", ".mpg"):
        declared = 0
    return frames, (fps if np.isfinite(fps) and fps > 0 else 0.0), max(declared, 0)


def _read_pillow(path: Path, max_frames: int | None) -> tuple[list[np.ndarray], float, int]:
    from PIL import Image, ImageSequence, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            durations: list[float] = []
            frames: list[np.ndarray] = []
            for frame in ImageSequence.Iterator(image):
                if max_frames is not None and len(frames) >= max_frames:
                    break
                frames.append(np.asarray(frame.convert("L"), dtype=np.uint8).copy())
                durations.append(float(frame.info.get("duration", 0) or 0))
            declared = int(getattr(image, "n_frames", len(frames)))
    except UnidentifiedImageError:
        raise _Undecodable("not an image sequence it knows") from None
    except (OSError, ValueError) as err:
        raise _Undecodable(str(err).replace(str(path), "file")) from None
    if not frames:
        raise _Undecodable("no frame")
    mean_ms = float(np.mean(durations)) if durations else 0.0
    return frames, (1000.0 / mean_ms if mean_ms > 0 else 0.0), declared


def _looks_truncated(decoded: int, declared: int) -> bool:
    # Headers can be off by a frame or two (edit lists, B-frames); a cut file loses many.
    return declared > 0 and decoded < declared - max(2, declared // 20)


def _stack(path: Path, frames: list[np.ndarray]) -> np.ndarray:
    shape = frames[0].shape
    for i, frame in enumerate(frames):
        if frame.shape != shape:
            raise LuvnetError(
                f"{path}: frame {i} is {frame.shape[1]}x{frame.shape[0]}, frame 0 is "
                f"{shape[1]}x{shape[0]}; expected one frame size per video"
            )
    return np.stack(frames)
