"""What a running stream tells the person who started it, on its logger (stderr for the CLI).

One line a second with the newest frame's scores and the rates::

    [   3.0s] frame 89  A 0.91* B 0.12  C 0.05  E 0.33  | 28.7 fps scored of 30.0, 31 dropped

followed by ``(newest frame wins)`` once frames were dropped. ``*`` marks a score at or above
the checkpoint's threshold; the letters are explained once, in :func:`legend`. The first time
frames are dropped, one line says why (the grabber keeps only the newest frame, by design) and
how fast this machine scores against the source's rate; the summary at the end says how the
stream ended and repeats the drop figures.
"""

from __future__ import annotations

import logging
import statistics
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from luvnet.streamer.protocol import ScoreMessage, StatusMessage

log = logging.getLogger(__name__)

# The four patterns of the paper, one letter each (E: pleural effusion, P reads as "pleural").
SHORT_NAMES = {"a_lines": "A", "b_lines": "B", "consolidation": "C", "pleural_effusion": "E"}
COMPUTE_STAGES = ("preprocess", "embed", "head", "postprocess")
RATE_WINDOW = 120  # frames whose compute time estimates this machine's scoring rate
DROP_REASON = "the grabber keeps only the newest frame and the scores stay live"
EVERY_FRAME_HINT = "--as-fast-as-possible scores every frame of a file or the phantom"


def short_name(pattern: str) -> str:
    return SHORT_NAMES.get(pattern, pattern)


def legend(patterns: tuple[str, ...]) -> str:
    """The key to the per-second line: ``A = a_lines, ...; * = at or above its threshold``."""
    names = ", ".join(f"{short_name(p)} = {p}" for p in patterns if short_name(p) != p)
    key = f"{names}; " if names else ""
    return f"scores once a second ({key}* = at or above the model's threshold)"


def score_text(msg: ScoreMessage) -> str:
    """``frame 89  A 0.91* B 0.12  C 0.05  E 0.33``."""
    flags = msg.flags
    scores = " ".join(
        f"{short_name(p)} {msg.scores[p]:.2f}{'*' if flags[p] else ' '}" for p in msg.patterns
    )
    return f"frame {msg.frame}  {scores}"


def progress_line(status: StatusMessage, score: ScoreMessage | None, *, final: bool = False) -> str:
    """The once-a-second line: newest scores (if any), rates, drops, state when not running
    (``final``: not at all, the summary says how the stream ended)."""
    scores = score_text(score) if score is not None else "no frame scored yet"
    line = (
        f"[{status.uptime_s:6.1f}s] {scores} | {status.output_fps:4.1f} fps scored of "
        f"{status.input_fps:.1f}, {status.frames_dropped} dropped"
    )
    if status.frames_dropped:
        line += " (newest frame wins)"
    if status.state != "running" and not final:
        line += f" | source {status.state}"
    if status.last_error:
        line += f" | last error: {status.last_error}"
    return line


@dataclass(frozen=True)
class ScoringRate:
    """How fast this machine scores: the median compute time of the recent frames."""

    frame_ms: float  # preprocess + embed + head + postprocess, median

    @property
    def fps(self) -> float:
        return 1000.0 / max(self.frame_ms, 1e-6)

    def __str__(self) -> str:
        return f"{self.fps:.1f} fps ({self.frame_ms:.1f} ms a frame)"


class StreamProgress:
    """Fed every message the stream publishes; logs the lines above.

    Args:
        status_lines: log the once-a-second line (the drop explanation and the summary are
            logged either way).
    """

    def __init__(self, *, status_lines: bool = True) -> None:
        self.status_lines = status_lines
        # The source's nominal frame rate (None: unknown), used until a few seconds are measured.
        self.nominal_fps: Callable[[], float | None] = lambda: None
        self.last_score: ScoreMessage | None = None
        self.last_status: StatusMessage | None = None
        self._compute_ms: deque[float] = deque(maxlen=RATE_WINDOW)
        self._input_fps: deque[float] = deque(maxlen=RATE_WINDOW)
        self._drops_explained = False
        self._legend_shown = False
        self._shown_frame: int | None = None  # the frame of the last line logged

    def rate(self) -> ScoringRate | None:
        """This machine's scoring rate so far; None before the first frame."""
        if not self._compute_ms:
            return None
        return ScoringRate(statistics.median(self._compute_ms))

    def __call__(self, msg: ScoreMessage | StatusMessage) -> None:
        if isinstance(msg, ScoreMessage):
            if self.status_lines and not self._legend_shown:
                self._legend_shown = True
                log.info("%s", legend(msg.patterns))
            self.last_score = msg
            self._compute_ms.append(sum(msg.latency_ms.get(k, 0.0) for k in COMPUTE_STAGES))
            return
        self.last_status = msg
        if msg.state == "running" and msg.input_fps > 0:
            self._input_fps.append(msg.input_fps)
        if msg.state in ("ended", "error"):
            return  # the final status: :meth:`finish` reports it
        # The first status goes out before any frame could be scored: not worth a line.
        starting = self.last_score is None and msg.uptime_s < 0.5 and msg.state == "running"
        if self.status_lines and not starting:
            log.info("%s", progress_line(msg, self.last_score))
            self._shown_frame = self.last_score.frame if self.last_score else None
        if msg.frames_dropped and not self._drops_explained:
            self._drops_explained = True
            log.info("frames dropped: %s", self.drop_explanation(msg))

    def source_fps(self, status: StatusMessage) -> float:
        """The source's frame rate: the median of the per-second input rates seen running, or
        its nominal rate while fewer than three were (the first second starts late)."""
        nominal = self.nominal_fps()
        if len(self._input_fps) < 3 and nominal:
            return nominal
        return statistics.median(self._input_fps) if self._input_fps else status.input_fps

    def drop_explanation(self, status: StatusMessage) -> str:
        """Why frames are dropped: by design, and this machine's rate against the source's."""
        rate, source_fps = self.rate(), self.source_fps(status)
        if rate is None:
            return f"{DROP_REASON} (by design; {EVERY_FRAME_HINT})"
        if rate.fps < source_fps * 0.95:
            return (
                f"the source sends {source_fps:.1f} fps and this machine scores about {rate}, "
                f"so {DROP_REASON} (by design; {EVERY_FRAME_HINT})"
            )
        return (
            f"this machine scores about {rate}, faster than the source's {source_fps:.1f} fps, "
            f"but some frames took longer (warm-up, a busy CPU); {DROP_REASON} (by design)"
        )

    def finish(self, ending: str, published: int) -> str:
        """Log the last line and the summary (how it ended, frames, drops); returns the summary."""
        final = self.last_status
        newer = self.last_score is not None and self.last_score.frame != self._shown_frame
        if final is not None and self.status_lines and newer:
            log.info("%s", progress_line(final, self.last_score, final=True))
        summary = f"{ending}: {published} frames scored"
        if final is not None:
            summary += f" in {final.uptime_s:.1f} s"
            captured, dropped = final.frames_captured, final.frames_dropped
            if dropped:
                share = 100.0 * dropped / max(captured, 1)
                summary += (
                    f"; {dropped} of {captured} frames dropped ({share:.0f}%): "
                    f"{self.drop_explanation(final)}"
                )
            else:
                summary += ", none dropped"
                if (rate := self.rate()) is not None:
                    summary += f"; this machine scores about {rate}"
        log.info("%s", summary)
        return summary
