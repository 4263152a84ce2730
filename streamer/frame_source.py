"""The one interface every frame source implements.

A source is opened, read frame by frame, and closed. Sources never pace themselves unless
``SourceOptions.realtime`` asks for it; the grabber thread owns timing and drop accounting.
Third-party sources register a factory in the entry-point group ``luvnet.sources`` under
their URI scheme; the factory receives the part of the URI after ``scheme:``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


class SourceError(RuntimeError):
    """A source failed to open or read; the message names the source and what went wrong."""


class SourceEnded(Exception):
    """The source has no more frames (end of file, phantom frame budget reached)."""


@dataclass(frozen=True)
class SourceOptions:
    """Options common to every source; a source ignores what does not apply to it."""

    realtime: bool = True  # pace reads at the source's frame rate (files, phantom)
    loop: bool = False  # restart a finite source at its end instead of ending
    size: tuple[int, int] | None = None  # requested (height, width) where the source can choose
    fps: float | None = None  # requested frame rate where the source can choose
    fourcc: str | None = None  # capture devices only
    open_timeout_s: float = 5.0  # network sources
    read_timeout_s: float = 5.0  # network sources


@dataclass
class SourceFrame:
    """One frame as the source produced it.

    ``image`` is HxWx3 uint8 BGR (OpenCV order) or HxW grey; other dtypes/channel counts are
    allowed and normalised by preprocessing. ``truth`` is the per-pattern ground truth when the
    source knows it (the synthetic phantom), keyed by pattern name.
    """

    image: np.ndarray
    truth: dict[str, bool] | None = None
    meta: dict[str, object] = field(default_factory=dict)


@runtime_checkable
class FrameSource(Protocol):
    """What the grabber needs from a source."""

    name: str  # human-readable, used in status messages and errors
    # False for sources that cannot come back by retrying (a file that will not open);
    # the grabber then reports state "error" instead of reconnecting with backoff.
    retry_open: bool

    @property
    def fps(self) -> float | None:
        """Nominal frame rate, or None when unknown."""
        ...

    def open(self) -> None:
        """Open (or reopen after a failure). Raises SourceError."""
        ...

    def read(self) -> SourceFrame:
        """Next frame. Raises SourceEnded at the end, SourceError on failure."""
        ...

    def close(self) -> None:
        """Release the underlying device or file; safe to call twice."""
        ...
