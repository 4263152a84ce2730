"""A small stderr progress bar with running loss, rate and ETA (no tqdm dependency).

On a terminal the line is redrawn in place; in a log file (not a TTY) a plain line is written
at most every ``log_every_s`` seconds, so logs stay readable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


class ProgressBar:
    """``bar.update(n, loss=...)`` after each batch, ``bar.close()`` at the end."""

    def __init__(
        self,
        total: int,
        desc: str,
        *,
        start: int = 0,
        stream: TextIO | None = None,
        width: int = 24,
        log_every_s: float = 30.0,
        enabled: bool = True,
        show_loss: bool = True,
    ) -> None:
        self.total = max(total, 0)
        self.desc = desc
        self.count = start
        self.first = start  # batches done before this bar started (a resumed epoch)
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.log_every_s = log_every_s
        self.enabled = enabled
        self.show_loss = show_loss
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.t0 = time.monotonic()
        self.last_log = -float("inf")
        self.loss_sum = 0.0
        self.loss_n = 0

    @property
    def mean_loss(self) -> float | None:
        return self.loss_sum / self.loss_n if self.loss_n else None

    def eta_s(self) -> float | None:
        done = self.count - self.first
        if done <= 0:
            return None
        return (time.monotonic() - self.t0) / done * (self.total - self.count)

    def line(self) -> str:
        frac = self.count / self.total if self.total else 1.0
        filled = int(round(self.width * min(frac, 1.0)))
        bar = "#" * filled + "." * (self.width - filled)
        elapsed = time.monotonic() - self.t0
        done = self.count - self.first
        rate = f"{done / elapsed:.2f} it/s" if elapsed > 0 and done else "-- it/s"
        eta = self.eta_s()
        loss = "--" if self.mean_loss is None else f"{self.mean_loss:.4f}"
        left = "--" if eta is None else format_duration(eta)
        shown = f" loss {loss}" if self.show_loss else ""
        return (
            f"{self.desc} [{bar}] {self.count}/{self.total}{shown} {rate} "
            f"elapsed {format_duration(elapsed)} eta {left}"
        )

    def update(self, n: int = 1, *, loss: float | None = None) -> None:
        self.count += n
        if loss is not None:
            self.loss_sum += loss
            self.loss_n += 1
        if not self.enabled:
            return
        now = time.monotonic()
        if self.tty:
            self.stream.write("\r" + self.line())
            self.stream.flush()
        elif now - self.last_log >= self.log_every_s or self.count >= self.total:
            self.last_log = now
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()
