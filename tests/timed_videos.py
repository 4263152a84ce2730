"""Videos with chosen timestamps, losslessly encoded (FFV1 in Matroska), for the timing tests.

Every frame decodes to exactly the pixels written, so a 60 fps file decimated to 30 fps can be
compared frame for frame with the 30 fps file of the same even frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

TIME_BASE = Fraction(1, 1000)


def scan_frames(count: int, size: tuple[int, int] = (120, 160), seed: int = 0) -> np.ndarray:
    """[T, H, W] uint8: changing speckle in a fan-shaped box, a static label, black around
    (what the sector detection looks for)."""
    rng = np.random.default_rng(seed)
    h, w = size
    out = np.zeros((count, h, w), np.uint8)
    out[:, h // 6 : h - 4, w // 5 : w - w // 5] = rng.integers(
        0, 255, (count, h - 4 - h // 6, w - 2 * (w // 5)), dtype=np.uint8
    )
    out[:, 2:10, 2:20] = 255  # a static label outside the fan
    return out


def write_timed(path: Path, frames: np.ndarray, times_s: Sequence[float], rate: int = 30) -> Path:
    """Grey ``frames`` [T, H, W] at presentation times ``times_s`` (ms precision); ``rate`` is
    the container's nominal rate, which the readers must not trust."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=rate)
        stream.height, stream.width = frames.shape[1:]
        stream.pix_fmt = "gray"
        stream.time_base = TIME_BASE
        stream.codec_context.time_base = TIME_BASE
        for image, t in zip(frames, times_s, strict=True):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="gray")
            frame.pts = round(t * 1000)
            frame.time_base = TIME_BASE
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def write_at_rate(path: Path, frames: np.ndarray, fps: float) -> Path:
    return write_timed(path, frames, [i / fps for i in range(len(frames))])
