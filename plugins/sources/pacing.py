"""Frame pacing shared by the sources that pace themselves (phantom, in-memory replay)."""

from __future__ import annotations

import time


class Pacer:
    """Hold each frame until its due time; when late by more than a frame, start the schedule
    afresh instead of bursting to catch up."""

    def __init__(self, fps: float) -> None:
        if not fps > 0:
            raise ValueError(f"fps: expected a positive number, got {fps!r}")
        self.period = 1.0 / fps
        self._next_due: float | None = None

    def reset(self) -> None:
        self._next_due = None

    def wait(self) -> None:
        now = time.monotonic()
        if self._next_due is None or now - self._next_due > self.period:
            self._next_due = now
        else:
            time.sleep(max(0.0, self._next_due - now))
        self._next_due += self.period
