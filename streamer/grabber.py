"""The grabber thread: reads the source, keeps the newest frame in a single slot.

Backpressure is an explicit choice (style §8):

- ``latest`` (live sources): capacity 1, drop-oldest. A frame the pipeline had not taken when
  the next one arrived is counted in ``dropped``. The stream never falls behind the probe.
- ``block`` (as-fast-as-possible replays): capacity 1, the reader waits until the pipeline
  takes the frame, so a file is scored frame by frame and nothing is dropped.

A frame read after :meth:`FrameGrabber.stop` was called is discarded uncounted: it is neither
captured nor dropped (so ``captured == taken + dropped + left in the slot`` holds).

A failing open or read reopens the source with exponential backoff and says so (``state`` and
``last_error``); each reconnect increments ``generation`` so the pipeline can reset its window.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import numpy as np

from luvnet.streamer.frame_source import FrameSource, SourceEnded, SourceError

log = logging.getLogger(__name__)

DROP_POLICIES = ("latest", "block")


@dataclass(frozen=True)
class GrabbedFrame:
    image: np.ndarray
    index: int  # frames captured since start, 0-based: gaps are frames dropped by the slot
    capture_ns: int  # time.monotonic_ns() when the read returned
    generation: int  # increments after every reconnect
    truth: dict[str, bool] | None
    fps: float | None = None  # the source's nominal frame rate when it knows it
    pts_s: float | None = None  # presentation time (s, the source's clock) when it gives one
    region: tuple[int, int, int, int] | None = None  # imaging region (x, y, w, h) it declares


class FrameGrabber:
    """Owns the source on a daemon thread; ``get()`` hands the newest frame to the pipeline."""

    def __init__(
        self,
        source: FrameSource,
        *,
        policy: str = "latest",
        backoff_initial_s: float = 0.1,
        backoff_max_s: float = 5.0,
    ) -> None:
        if policy not in DROP_POLICIES:
            raise ValueError(f"policy: expected one of {DROP_POLICIES}, got {policy!r}")
        self.source = source
        self.policy = policy
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.captured = 0
        self.dropped = 0
        self.reconnects = 0
        self.generation = 0
        self.state = "starting"
        self.last_error: str | None = None
        self._slot: GrabbedFrame | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="luvnet-grabber", daemon=True)

    # -- pipeline side
    def start(self) -> FrameGrabber:
        self._thread.start()
        return self

    @property
    def finished(self) -> bool:
        """The source ended (or failed for good) and the slot is empty."""
        with self._cond:
            return self.state in ("ended", "error") and self._slot is None

    def get(self, timeout_s: float = 0.1) -> GrabbedFrame | None:
        with self._cond:
            if self._slot is None:
                self._cond.wait(timeout_s)
            frame, self._slot = self._slot, None
            self._cond.notify_all()
            return frame

    def stop(self, timeout_s: float = 1.0) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        if self.state not in ("ended", "error"):
            self.state = "ended"  # stopped on request: the stream is over either way
        self.source.close()

    # -- grabber thread
    def _put(self, frame: GrabbedFrame) -> bool:
        """Hand ``frame`` over; False when the grabber is stopping and it was not taken."""
        with self._cond:
            if self.policy == "block":
                while self._slot is not None and not self._stop.is_set():
                    self._cond.wait(0.1)
            if self._stop.is_set():
                # Read while the stream was stopping (a stop, --max-frames reached): nobody
                # will take it, and it was never in the race for the slot, so it is neither
                # captured nor dropped. Counting it was the one "drop" of an
                # --as-fast-as-possible run.
                return False
            if self._slot is not None:  # latest wins
                self.dropped += 1
            self._slot = frame
            self.captured += 1
            self._cond.notify_all()
            return True

    def _open_with_backoff(self) -> bool:
        delay = self.backoff_initial_s
        while not self._stop.is_set():
            try:
                self.source.open()
                if self.state == "reconnecting":
                    log.warning("%s: reconnected", self.source.name)
                self.state = "running"
                return True
            except SourceError as err:
                self._fail(str(err), delay)
            except Exception as err:  # noqa: BLE001 - third-party sources may raise anything
                self._fail(f"{self.source.name}: {type(err).__name__}: {err}", delay)
            if self.state == "error":
                return False
            self._stop.wait(delay)
            delay = min(delay * 2, self.backoff_max_s)
        return False

    def _fail(self, message: str, retry_in_s: float) -> None:
        self.last_error = message
        if not getattr(self.source, "retry_open", True):
            # Not logged here: the run's owner ends on it and says it once, as its last line.
            log.debug("%s", message)
            self._end("error")
            return
        self.state = "reconnecting"
        log.warning("%s; retrying in %.1f s", message, retry_in_s)

    def _run(self) -> None:
        if not self._open_with_backoff():
            return
        # Grows while a reopened source fails again before its first frame (a camera that
        # accepts connections but sends nothing): no reconnect storm, no log flood.
        retry_s = self.backoff_initial_s
        while not self._stop.is_set():
            try:
                frame = self.source.read()
            except SourceEnded:
                self._end("ended")
                return
            except Exception as err:  # noqa: BLE001 - reconnect on any read failure
                message = (
                    str(err)
                    if isinstance(err, SourceError)
                    else (f"{self.source.name}: {type(err).__name__}: {err}")
                )
                self.source.close()
                self._fail(message, retry_s)
                if self.state == "error":
                    return
                self.reconnects += 1
                self._stop.wait(retry_s)
                retry_s = min(retry_s * 2, self.backoff_max_s)
                if not self._open_with_backoff():
                    return
                self.generation += 1
                continue
            retry_s = self.backoff_initial_s
            grabbed = GrabbedFrame(
                image=frame.image,
                index=self.captured,
                capture_ns=time.monotonic_ns(),
                generation=self.generation,
                truth=frame.truth,
                fps=self.source.fps,
                pts_s=_pts(frame.meta),
                region=_region(frame.meta),
            )
            if not self._put(grabbed):
                return

    def _end(self, state: str) -> None:
        with self._cond:
            self.state = state
            self._cond.notify_all()
        self.source.close()


def _pts(meta: dict[str, object]) -> float | None:
    value = meta.get("pts_s")
    return float(value) if isinstance(value, int | float) else None


def _region(meta: dict[str, object]) -> tuple[int, int, int, int] | None:
    value = meta.get("region")
    if isinstance(value, tuple) and len(value) == 4 and all(isinstance(v, int) for v in value):
        return (value[0], value[1], value[2], value[3])
    return None
