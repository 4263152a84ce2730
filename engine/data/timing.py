"""Frame timing: the rate a model was trained at, and decimation of faster sources to it.

One rule for training, evaluation and the live stream (docs/formats.md, "Time"):

* **Model rate.** ``luvnet train`` measures it from its videos' timestamps: the median over
  videos of each video's median frame interval, as frames per second
  (:func:`model_frame_rate`). It is stored in the checkpoint's config (``frame_rate``); a
  checkpoint without it has an unknown rate and nothing is decimated.
* **Decimation.** A source whose rate is at least ``decimate_above`` times the model rate
  (1.5 by default; 0 = never) is thinned by timestamp: a frame is kept when its presentation
  time is at least the last kept frame's plus one model interval, less a tolerance of
  :data:`TOLERANCE` intervals (timestamps rounded to a coarse time base jitter). So 60 fps
  becomes every second frame for a 30 fps model, and a variable-frame-rate file keeps its
  slow parts whole. A slower source is never padded with repeated frames.

:class:`Decimator` is the rule, one frame at a time (the stream); :func:`kept_indices` runs the
same object over a whole video's timestamps (the frame cache, hence training and evaluation).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from luvnet.engine.data.video import ffmpeg_name, forward_rate, is_dicom_file, read_video
from luvnet.engine.errors import LuvnetError

DEFAULT_DECIMATE_ABOVE = 1.5
TOLERANCE = 0.1  # of one model frame interval
RESTART_S = 0.5  # a packet this far behind the latest (and REORDER_FRAMES steps) is a new clock
REORDER_FRAMES = 17  # the most frames a decoder reorders (16 in the DPB), plus one


def median_rate(timestamps: Sequence[float] | np.ndarray) -> float:
    """Frames per second from the median step of increasing timestamps (seconds); 0.0 when
    fewer than two frames or no positive step (unknown)."""
    times = np.asarray(timestamps, dtype=np.float64)
    steps = np.diff(times)
    steps = steps[np.isfinite(steps) & (steps > 0)]
    return float(1.0 / np.median(steps)) if len(steps) else 0.0


def model_frame_rate(rates: Sequence[float]) -> float | None:
    """The model rate from per-video rates (each :func:`median_rate` of one video): the median
    of the known ones (> 0), to 3 decimals, or None when no video's rate is known."""
    known = [float(r) for r in rates if r and np.isfinite(r) and r > 0]
    return round(float(np.median(known)), 3) if known else None


def rate_record(rates: Sequence[float], timing: Timing, decimated: int) -> dict[str, object]:
    """A checkpoint's provenance entry: the rate, how it was measured, and how many of the
    fold's videos were decimated to it."""
    return {
        "fps": timing.model_fps,
        "rule": "median over videos of each video's median frame interval",
        "videos_measured": sum(1 for r in rates if r > 0),
        "decimate_above": timing.decimate_above,
        "decimated_videos": decimated,
    }


@dataclass(frozen=True)
class Timing:
    """What decides decimation: the model's rate (None = unknown: never decimate) and the
    factor over it at which a source is decimated (0 = never)."""

    model_fps: float | None = None
    decimate_above: float = DEFAULT_DECIMATE_ABOVE

    def __post_init__(self) -> None:
        factor = self.decimate_above
        if not (np.isfinite(factor) and (factor == 0 or factor >= 1)):
            raise LuvnetError(
                f"decimate_above: expected 0 (off) or a factor >= 1, got {self.decimate_above}"
            )
        if self.model_fps is not None and not (np.isfinite(self.model_fps) and self.model_fps > 0):
            raise LuvnetError(f"frame_rate: expected a positive frame rate, got {self.model_fps}")

    @property
    def active(self) -> bool:
        """Some source could be decimated (a known model rate and a factor)."""
        return self.model_fps is not None and self.decimate_above > 0

    def decimates(self, source_fps: float | None) -> bool:
        """A source at ``source_fps`` (None or 0 = unknown: no) is decimated to the model."""
        if not self.active or not source_fps or self.model_fps is None:
            return False
        return source_fps >= self.decimate_above * self.model_fps

    def describe(self, source_fps: float | None) -> str:
        """One phrase for logs and status: source rate, model rate, and what is done."""
        source = f"{source_fps:.2f} fps" if source_fps else "an unknown rate"
        if self.model_fps is None:
            return (
                f"source at {source}, model rate unknown (checkpoint without frame_rate): "
                "every frame used"
            )
        model = f"model trained at {self.model_fps:.2f} fps"
        if self.decimates(source_fps):
            return f"source at {source}, {model}: decimated to the model rate by timestamp"
        why = " (--decimate-above 0)" if self.decimate_above == 0 else ""
        return f"source at {source}, {model}: every frame used{why}"

    def to_dict(self) -> dict[str, float | None]:
        return {"model_fps": self.model_fps, "decimate_above": self.decimate_above}


class Decimator:
    """Keep or drop frames one at a time by timestamp (module docstring for the rule).

    ``interval_s`` None keeps every frame. ``keep(pts_s)`` is True for the first frame and for
    every frame at least one interval (less the tolerance) after the last kept one; a
    timestamp that goes backwards (a loop, a reconnect) restarts the count from that frame.
    """

    def __init__(self, interval_s: float | None) -> None:
        self.interval_s = interval_s
        self._last: float | None = None

    @classmethod
    def for_source(cls, timing: Timing, source_fps: float | None) -> Decimator:
        decimate = timing.decimates(source_fps) and timing.model_fps is not None
        return cls(1.0 / timing.model_fps if decimate and timing.model_fps else None)

    @property
    def active(self) -> bool:
        return self.interval_s is not None

    def reset(self) -> None:
        self._last = None

    def keep(self, pts_s: float) -> bool:
        if self.interval_s is None:
            return True
        last = self._last
        if last is None or pts_s < last or pts_s >= last + self.interval_s * (1 - TOLERANCE):
            self._last = pts_s
            return True
        return False


def kept_indices(
    timestamps: Sequence[float] | np.ndarray, timing: Timing, source_fps: float | None
) -> np.ndarray | None:
    """int64 indices of the frames a video keeps, or None when it is not decimated (every
    frame kept). ``source_fps``: the video's rate (the reader's ``Video.fps``)."""
    decimator = Decimator.for_source(timing, source_fps)
    if not decimator.active:
        return None
    keep = [i for i, t in enumerate(np.asarray(timestamps, dtype=np.float64)) if decimator.keep(t)]
    return np.asarray(keep, dtype=np.int64)


def mean_rate(timestamps: Sequence[float] | np.ndarray) -> float:
    """Frames per second over the span of each clock, ``(T - 1) / (t[-1] - t[0])`` for one
    (the reader's ``Video.fps``; :func:`~luvnet.engine.data.video.forward_rate`); 0.0 when
    unknown. Timestamps in presentation order, as :func:`probe_timestamps` gives them."""
    return forward_rate(timestamps)


def probe_timestamps(path: str | Path) -> np.ndarray | None:
    """A video file's frame times in seconds, sorted: from its packets (demuxed, not decoded:
    a few ms a file), or from its decoded frames where the container gives none (DICOM,
    Pillow); None when unreadable (the run's decoding names unreadable files)."""
    path = Path(path)
    try:
        if not is_dicom_file(path):
            with av.open(ffmpeg_name(path)) as container:
                stream = container.streams.video[0]
                base = stream.time_base
                pts = [p.pts for p in container.demux(stream) if p.pts is not None]
                if len(pts) > 1 and base is not None:
                    return _presentation_order(np.asarray(pts, dtype=np.float64) * float(base))
        return read_video(path).timestamps
    except (LuvnetError, av.FFmpegError, IndexError, OSError):
        return None


def _presentation_order(pts: np.ndarray) -> np.ndarray:
    """Packet times (decode order) in presentation order, clock by clock: B-frames reorder
    packets by a few frame steps, while a clock that restarts (recordings joined byte for
    byte) jumps back by more than :data:`RESTART_S` and :data:`REORDER_FRAMES` recent steps.
    Sorting the whole file would interleave the joined recordings and double their rate."""
    starts: list[int] = []
    latest, previous = float(pts[0]), float(pts[0])
    steps: deque[float] = deque(maxlen=REORDER_FRAMES)  # recent forward steps (s)
    for i, t in enumerate(pts[1:].tolist(), start=1):
        if t > previous:
            steps.append(t - previous)
        previous = t
        # H.264/HEVC reorder at most 16 frames, so a B-frame is never further behind (the
        # median step is the frame step: reordering makes a few long ones).
        reorder_s = REORDER_FRAMES * float(np.median(steps)) if steps else 0.0
        if t < latest - max(RESTART_S, reorder_s):
            starts.append(i)  # a new clock: the latest time is its own from here
            latest = t
        else:
            latest = max(latest, t)
    return np.concatenate([np.sort(piece) for piece in np.split(pts, starts)])


def video_rate(path: str | Path) -> float:
    """A video file's :func:`median_rate` (what the model rate is measured from); 0.0 when
    unknown. A DICOM file's rate is its header's (Frame Time Vector, Frame Time, Cine Rate):
    without one its frames are only nominally 1/30 s apart, which must not count as 30 fps."""
    path = Path(path)
    if is_dicom_file(path):
        return _dicom_rate(path)
    times = probe_timestamps(path)
    return 0.0 if times is None else median_rate(times)


def _dicom_rate(path: Path) -> float:
    try:
        from luvnet.engine.data.dicom import frame_timing, number_of_frames, read_header

        ds = read_header(path, pixels=False)
        times, fps = frame_timing(ds, number_of_frames(ds), path)
    except (ImportError, LuvnetError):
        return 0.0  # pydicom absent or the file unreadable: the run's decoding says which
    return median_rate(times) if fps > 0 else 0.0


def source_rate(path: str | Path) -> float:
    """A video file's :func:`mean_rate`, the rate decimation is decided on (the live ``file:``
    source's rate, equal to ``Video.fps`` of the reader); 0.0 when unknown."""
    times = probe_timestamps(path)
    return 0.0 if times is None else mean_rate(times)
