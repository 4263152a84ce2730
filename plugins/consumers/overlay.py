"""The overlay sink: the live video with a score bar per pattern, threshold marks and the
attention strip, written to an annotated mp4 (headless) or shown in a window.

Frames carry patient data and never leave the process, so the overlay is a sink inside the
streaming process (``luvnet stream --overlay OUT.mp4``, ``luvnet overlay``), not a network
subscriber.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import cv2
import numpy as np

from luvnet.engine.data.video import ffmpeg_name
from luvnet.engine.errors import LuvnetError
from luvnet.streamer.grabber import GrabbedFrame
from luvnet.streamer.protocol import ScoreMessage

LABELS = {
    "a_lines": "A-lines",
    "b_lines": "B-lines",
    "consolidation": "Consolidation",
    "pleural_effusion": "Effusion",
}
log = logging.getLogger(__name__)

DEFAULT_FPS = 30.0  # when the source does not say its frame rate
PANEL_WIDTH = 360
BAR_COLOURS = [(80, 200, 255), (255, 170, 60), (90, 220, 120), (220, 110, 240)]  # BGR


def _to_bgr(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8:
        scale = 255.0 / max(float(np.max(image)), 1.0)
        image = np.clip(image.astype(np.float32) * scale, 0, 255).astype(np.uint8)
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def render(image: np.ndarray, msg: ScoreMessage, height: int = 480) -> np.ndarray:
    """Video on the left, a panel on the right: bars, threshold ticks, attention strip."""
    frame = _to_bgr(image)
    width = max(1, round(frame.shape[1] * height / frame.shape[0]))
    frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
    panel = np.full((height, PANEL_WIDTH, 3), 24, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(
        panel,
        f"frame {msg.frame}  window {msg.fill}/{msg.window}",
        (12, 26),
        font,
        0.5,
        (220, 220, 220),
        1,
        cv2.LINE_AA,
    )
    row_h = (height - 60) // max(1, len(msg.patterns))
    bar_x0, bar_x1 = 12, PANEL_WIDTH - 12
    for i, pattern in enumerate(msg.patterns):
        top = 44 + i * row_h
        score, threshold = msg.scores[pattern], msg.thresholds[pattern]
        flagged = score >= threshold
        colour = BAR_COLOURS[i % len(BAR_COLOURS)]
        label = f"{LABELS.get(pattern, pattern)}  {score:.2f}" + ("  *" if flagged else "")
        cv2.putText(
            panel,
            label,
            (bar_x0, top + 16),
            font,
            0.55,
            colour if flagged else (170, 170, 170),
            1,
            cv2.LINE_AA,
        )
        y0, y1 = top + 24, top + 44
        cv2.rectangle(panel, (bar_x0, y0), (bar_x1, y1), (70, 70, 70), 1)
        fill_x = bar_x0 + round(score * (bar_x1 - bar_x0))
        cv2.rectangle(panel, (bar_x0, y0), (fill_x, y1), colour, -1)
        tick = bar_x0 + round(threshold * (bar_x1 - bar_x0))
        cv2.line(panel, (tick, y0 - 4), (tick, y1 + 4), (255, 255, 255), 2)
        # Attention strip: one cell per window slot, brightness = min-max normalised weight.
        curve = msg.attention[i, : msg.fill].astype(np.float32)
        span = float(curve.max() - curve.min())
        norm = (curve - curve.min()) / span if span > 0 else np.zeros_like(curve)
        s0, s1 = y1 + 6, y1 + 18
        cell = (bar_x1 - bar_x0) / msg.window
        for t, value in enumerate(norm):
            x = bar_x0 + round(t * cell)
            shade = tuple(int(c * (0.15 + 0.85 * value)) for c in colour)
            cv2.rectangle(panel, (x, s0), (bar_x0 + round((t + 1) * cell) - 1, s1), shade, -1)
    # Sinks run before the publisher's stamp is visible here: measure capture -> now.
    e2e = (time.monotonic_ns() - msg.capture_ns) / 1e6
    cv2.putText(
        panel,
        f"latency {e2e:.1f} ms  {msg.backend}/{msg.device}",
        (12, height - 12),
        font,
        0.45,
        (160, 160, 160),
        1,
        cv2.LINE_AA,
    )
    return np.hstack([frame, panel])


class OverlayWriter:
    """A pipeline sink: annotates each scored frame and appends it to a video file, and/or
    shows it in a window (``window=True``, an OpenCV build with GUI support).

    The video plays at ``fps``, by default the source's own rate (``GrabbedFrame.fps``, else
    30). Frames the stream dropped (scoring slower than a live source) are missing from it; the
    writer counts them from the gaps in the frame numbers and warns once, when closed.
    """

    def __init__(
        self,
        path: Path | None,
        *,
        window: bool = False,
        fps: float | None = None,
        height: int = 480,
    ) -> None:
        if path is None and not window:
            raise LuvnetError("overlay: give a video file to write, or ask for a window")
        self.path = path
        self.window = window
        self.fps = fps
        self.height = height
        self._writer: cv2.VideoWriter | None = None
        self.frames_written = 0  # frames annotated (written and/or shown)
        self.frames_seen = 0  # frames the source gave up to the last one annotated
        if path is not None and not path.parent.exists():
            raise LuvnetError(f"--overlay {path}: folder {path.parent} does not exist")

    def __call__(self, frame: GrabbedFrame, msg: ScoreMessage) -> None:
        annotated = render(frame.image, msg, self.height)
        if self.window:
            cv2.imshow("luvnet overlay", annotated)
            cv2.waitKey(1)
        if self.path is not None:
            if self._writer is None:
                self.fps = self.fps or frame.fps or DEFAULT_FPS
                size = (annotated.shape[1], annotated.shape[0])
                writer = cv2.VideoWriter(
                    ffmpeg_name(self.path), cv2.VideoWriter.fourcc(*"mp4v"), self.fps, size
                )
                if not writer.isOpened():
                    raise LuvnetError(f"--overlay {self.path}: cannot write a video there")
                self._writer = writer
            self._writer.write(annotated)
        self.frames_written += 1
        self.frames_seen = max(self.frames_seen, frame.index + 1)

    @property
    def frames_missing(self) -> int:
        """Frames the source gave that the stream dropped before scoring them."""
        return self.frames_seen - self.frames_written

    def summary(self) -> str:
        """One line: what was written where, at what rate."""
        if not self.frames_written:
            return "overlay: no frame was scored; nothing written"
        where = f"to {self.path} at {self.fps or DEFAULT_FPS:g} fps" if self.path else "shown"
        return f"overlay: {self.frames_written} frames {where}"

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            if self.frames_missing:
                log.warning(
                    "overlay %s has %d of %d frames: %d were dropped because scoring was slower "
                    "than the source; for a file, pass --as-fast-as-possible to keep every frame",
                    self.path,
                    self.frames_written,
                    self.frames_seen,
                    self.frames_missing,
                )


def check_window_support() -> None:
    """Raise LuvnetError when this OpenCV build cannot open a window (a headless build)."""
    try:
        cv2.namedWindow("luvnet overlay")
    except cv2.error:
        raise LuvnetError(
            "overlay --window: this OpenCV build has no window support (the headless build); "
            "write a video with --out FILE.mp4 instead"
        ) from None
    cv2.destroyWindow("luvnet overlay")
