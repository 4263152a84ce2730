"""Frames held in memory, replayed at a fixed rate: what a capture card hands over.

The paced bench measures the pipeline, grab to publish. A live phantom renders its next
scene on a worker thread of the same process, which competes for the interpreter lock and
would charge the renderer's cost to preprocessing; a capture card delivers a finished frame.
"""

from __future__ import annotations

import numpy as np

from luvnet.plugins.sources.pacing import Pacer
from luvnet.streamer.frame_source import SourceFrame


class ReplaySource:
    """Cycles ``frames`` forever at ``fps``, paced like a live source."""

    retry_open = False

    def __init__(self, frames: list[np.ndarray], fps: float, name: str = "replay") -> None:
        if not frames:
            raise ValueError("replay: expected at least one frame")
        self.name = f"{name}@{fps:g}fps"
        self._frames = frames
        self._fps = fps
        self._pacer = Pacer(fps)
        self._next = 0

    @property
    def fps(self) -> float:
        return self._fps

    def open(self) -> None:
        self._pacer.reset()

    def read(self) -> SourceFrame:
        image = self._frames[self._next % len(self._frames)]
        self._next += 1
        self._pacer.wait()
        return SourceFrame(image=image)

    def close(self) -> None:
        pass
