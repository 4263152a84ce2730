"""Frame pacing shared by the sources that pace themselves: at one rate (phantom, in-memory
replay) or by each frame's own timestamp (file replay)."""

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


class TimestampPacer:
    """Hold each frame until its own presentation time comes round on the wall clock, so a
    variable-frame-rate file replays with its own gaps (33 ms, then 200 ms), not one average.

    The schedule is anchored at the first frame. A step back in time or none (a loop's
    restart, a broken or repeated timestamp, a single-frame file looped) counts as the previous
    step, else ``default_step_s`` (never zero: a looped still image would otherwise be read
    as fast as the CPU allows); a jump forward longer than ``max_gap_s`` (a timestamp
    discontinuity) is held ``max_gap_s``. When late by more than a step, the schedule starts
    afresh at the late frame instead of bursting to catch up.
    """

    def __init__(self, *, max_gap_s: float = 2.0, default_step_s: float = 1 / 30) -> None:
        if not max_gap_s > 0:
            raise ValueError(f"max_gap_s: expected a positive number, got {max_gap_s!r}")
        if not default_step_s > 0:
            raise ValueError(f"default_step_s: expected a positive number, got {default_step_s!r}")
        self.max_gap_s = max_gap_s
        self.default_step_s = default_step_s
        self._last: tuple[float, float] | None = None  # (wall due, pts) of the previous frame
        self._step = 0.0

    def reset(self) -> None:
        self._last = None

    def wait(self, pts_s: float) -> None:
        """Sleep until the frame at ``pts_s`` (seconds, the file's clock) is due."""
        now = time.monotonic()
        if self._last is None:
            self._last = (now, pts_s)
            return
        last_due, last_pts = self._last
        step = pts_s - last_pts
        if step <= 0:
            step = self._step or self.default_step_s
        step = min(step, self.max_gap_s)
        self._step = step
        due = last_due + step
        if now - due > max(step, 0.05):
            due = now  # late: start afresh rather than burst
        elif due > now:
            time.sleep(due - now)
        self._last = (due, pts_s)
