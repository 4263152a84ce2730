# Over 400 lines because the one file reader keeps its backends (PyAV, DICOM, Pillow) and their
# error wording in one place.
"""The one file reader: every video file path (training, evaluation, attention plots, ``file:``
replay and ``--loop``) decodes here, on PyAV (FFmpeg's libraries).

What decodes is the truth, not what a container's header declares: the first video stream is
decoded (audio, data and cover-art streams are ignored), each frame at its true size with its
presentation timestamp in seconds. "Truncated or corrupt" is said only when decoding itself
fails. ``.dcm`` files go to :mod:`luvnet.engine.data.dicom`; a file FFmpeg cannot decode at all
(animated WebP, say) gets one more try with Pillow. Capture devices and network streams are not
files: OpenCV reads them (plugins/sources/capture.py; docs/formats.md, "Readers").

Every failure is a one-line :class:`LuvnetError` naming the file and what was expected.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from luvnet.engine.data.preprocess import to_gray_u8
from luvnet.engine.errors import LuvnetError

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS: tuple[str, ...] = (
    ".mp4", ".m4v", ".mov", ".avi", ".mpeg", ".mpg", ".mkv", ".webm", ".gif",
    ".ts", ".m2ts", ".mts", ".dcm",
)  # fmt: skip
DICOM_EXTENSIONS: tuple[str, ...] = (".dcm",)
# A timestamp-less frame follows the previous one by the stream's rate, or by this.
_FALLBACK_FPS = 30.0


def forward_rate(timestamps: Sequence[float] | np.ndarray) -> float:
    """Frames per second as the mean of the forward steps of presentation timestamps
    (seconds, in presentation order); 0.0 when unknown.

    A step back or a repeat is a restarted clock (recordings joined byte for byte, a looped
    capture), not time: over one clock this is ``(T - 1) / (t[-1] - t[0])``, and two joined
    40 fps recordings stay 40 fps instead of reading as one 80 fps span.
    """
    steps = np.diff(np.asarray(timestamps, dtype=np.float64))
    forward = steps[np.isfinite(steps) & (steps > 0)]
    span = float(forward.sum())
    return len(forward) / span if span > 0 else 0.0


class DecodedFrame(NamedTuple):
    """One frame as decoded: ``image`` HxWx3 uint8 BGR (OpenCV's order) or HxW uint8 grey;
    ``pts_s`` its presentation time in seconds on the file's own clock (the first frame need
    not be at 0: MPEG-TS files often start at 1.4 s)."""

    image: np.ndarray
    pts_s: float


class _FramesFps(NamedTuple):
    frames: np.ndarray  # [T, H, W] uint8 grey, T >= 1
    fps: float  # frames per second; 0.0 when unknown


class Video(_FramesFps):
    """A decoded video; unpacks as ``frames, fps = read_video(path)``.

    Also ``timestamps``: float64 [T], each frame's presentation time in seconds (the file's
    clock; variable-frame-rate files have uneven steps), and ``region``: the imaging region
    ``(x, y, width, height)`` a DICOM file declares, else None.
    """

    timestamps: np.ndarray
    region: tuple[int, int, int, int] | None

    def __new__(
        cls,
        frames: np.ndarray,
        fps: float,
        timestamps: np.ndarray | None = None,
        region: tuple[int, int, int, int] | None = None,
    ) -> Video:
        self = super().__new__(cls, frames, fps)
        if timestamps is None:  # evenly spaced at fps (or 1/30 s when fps is unknown)
            timestamps = np.arange(len(frames), dtype=np.float64) / (fps or _FALLBACK_FPS)
        self.timestamps = np.asarray(timestamps, dtype=np.float64)
        self.region = region
        return self

    def __getnewargs__(self) -> tuple[Any, ...]:  # pickling keeps the extra fields
        return (self.frames, self.fps, self.timestamps, self.region)


def check_video_path(path: str | Path, *, any_extension: bool = False) -> Path:
    """The path, if it names a non-empty file with a video extension (or DICOM content, of any
    name, as archives export it); else a LuvnetError. ``any_extension``: leave the content to
    decide (the live ``file:`` source streams a video named ``.txt``)."""
    path = Path(path)
    known = any_extension or path.suffix.lower() in VIDEO_EXTENSIONS or is_dicom_file(path)
    if not known:
        raise LuvnetError(
            f"{path}: unsupported extension {path.suffix or '(none)'!r}; expected one of "
            f"{', '.join(VIDEO_EXTENSIONS)}, or a DICOM file"
        )
    if not path.is_file():
        raise LuvnetError(f"{path}: no such video file")
    if path.stat().st_size == 0:
        raise LuvnetError(f"{path}: empty file (0 bytes); expected a video")
    return path


def is_dicom_file(path: Path) -> bool:
    """A ``.dcm`` name, or, under a name that is not a video's, the DICOM preamble's ``DICM``
    mark at byte 128."""
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        return path.suffix.lower() in DICOM_EXTENSIONS
    try:
        with path.open("rb") as file:
            return file.read(132)[128:] == b"DICM"
    except OSError:
        return False


def ffmpeg_name(path: str | Path) -> str:
    """The name to hand FFmpeg (PyAV, OpenCV's writers) for a local file: always absolute.

    FFmpeg reads a relative ``P01:L1.mp4`` as protocol ``P01``; an absolute name starts with
    ``/``, which no protocol name can hold. (``%`` is only a pattern to OpenCV's image-sequence
    backend, so OpenCV callers also pass ``cv2.CAP_FFMPEG``.)
    """
    return os.path.abspath(path)


def read_video(path: str | Path, max_frames: int | None = None) -> Video:
    """All frames (or the first ``max_frames``) of a video as grey uint8 [T, H, W].

    Raises LuvnetError when the file is missing, empty, not a video, when decoding fails
    part-way ("truncated or corrupt"), or when the frame size changes part-way (a clip needs
    one size; :func:`iter_frames` reads such a file at its true sizes).
    """
    with VideoFile(path, max_frames=max_frames) as video:
        frames: list[np.ndarray] = []
        times: list[float] = []
        for frame in _frames_or_error(video, max_frames):
            grey = to_gray_u8(frame.image)
            if frames and grey.shape != frames[0].shape:
                (h0, w0), (h, w) = frames[0].shape, grey.shape
                raise LuvnetError(
                    f"{video.path}: frame {len(frames)} is {w}x{h}, frame 0 is {w0}x{h0}; "
                    "expected one frame size per video (two recordings joined?): cut it at "
                    "the change, or stream it, which restarts its window there"
                )
            frames.append(grey)
            times.append(frame.pts_s)
        timestamps = np.asarray(times, dtype=np.float64)
        return Video(np.stack(frames), video.rate_of(timestamps), timestamps, video.region)


def iter_frames(path: str | Path) -> Iterator[np.ndarray]:
    """Grey uint8 [H, W] frames one at a time, each at its true size (for long files, previews
    and files whose frame size changes). Raises LuvnetError like :func:`read_video`."""
    with VideoFile(path) as video:
        for frame in _frames_or_error(video):
            yield to_gray_u8(frame.image)


def _frames_or_error(video: VideoFile, max_frames: int | None = None) -> Iterator[DecodedFrame]:
    count = 0
    while max_frames is None or count < max_frames:
        try:
            frame = video.read()
        except _DecodeFailed as err:
            raise LuvnetError(
                f"{video.path}: truncated or corrupt video: decoding failed after {count} "
                f"frames (FFmpeg: {err}); expected a complete file: copy or export it again"
            ) from None
        if frame is None:
            return
        count += 1
        yield frame


class _DecodeFailed(Exception):
    """FFmpeg (or Pillow) could not decode: the reason, without the file name."""


class VideoFile:
    """An open video file, decoded frame by frame in presentation order.

    ``read()`` gives the next :class:`DecodedFrame`, or None at the end; ``rewind()`` goes back
    to the first frame and verifies it by timestamp. With ``skip_corrupt`` a packet that fails
    to decode is skipped (counted in ``skipped``, logged) instead of raising, as a live replay
    wants; ``any_extension`` as for :func:`check_video_path`. ``fps`` is the container's
    nominal rate (0.0 when unknown); ``region`` is a DICOM file's imaging region. Opening
    raises LuvnetError when nothing decodes.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        max_frames: int | None = None,
        skip_corrupt: bool = False,
        any_extension: bool = False,
    ) -> None:
        self.path = check_video_path(path, any_extension=any_extension)
        self.skip_corrupt = skip_corrupt
        self.skipped = 0
        self.region: tuple[int, int, int, int] | None = None
        self._frames: _AVFrames | _ListFrames
        if is_dicom_file(self.path):
            self._frames = _dicom_frames(self.path, max_frames)
            self.region = self._frames.region
        else:
            self._frames = self._open_any(max_frames)
        first = self._frames.read()
        if first is None:
            self.close()
            raise LuvnetError(f"{self.path}: opened but holds no frame; expected a video")
        self._first: DecodedFrame | None = first
        self.first_pts_s = first.pts_s

    @property
    def fps(self) -> float:
        return self._frames.fps

    def rate_of(self, timestamps: np.ndarray) -> float:
        """Frames per second from decoded timestamps (:func:`forward_rate`), else the nominal
        rate."""
        if isinstance(self._frames, _ListFrames) and self._frames.fps > 0:
            return self._frames.fps  # DICOM and Pillow: the file's declared timing
        return forward_rate(timestamps) or self.fps

    def read(self) -> DecodedFrame | None:
        if self._first is not None:
            frame, self._first = self._first, None
            return frame
        while True:
            try:
                return self._frames.read()
            except _DecodeFailed as err:
                if not self.skip_corrupt:
                    raise
                self.skipped += 1
                if self.skipped <= 3:  # a damaged file must not flood the log
                    log.warning("%s: skipped a packet that does not decode (%s)", self.path, err)

    def rewind(self) -> None:
        """Back to the first frame, verified by its timestamp: a seek that lands elsewhere (an
        MPEG program stream restarting at frame 12) is undone by reopening the file."""
        self._first = None
        if isinstance(self._frames, _ListFrames):
            self._frames.index = 0
        else:
            self._frames.seek_start()
        try:
            first = self.read()
            if first is None or first.pts_s != self.first_pts_s:
                log.debug("%s: seek did not land on the first frame; reopening", self.path)
                self._frames.close()
                self._frames = _AVFrames(self.path)
                first = self.read()
        except _DecodeFailed as err:
            first, why = None, str(err)
        else:
            why = f"the first frame was at {self.first_pts_s:.3f} s, now {first and first.pts_s}"
        if first is None or first.pts_s != self.first_pts_s:
            raise LuvnetError(
                f"{self.path}: cannot restart at the first frame ({why}); expected a file that "
                "does not change while it is read"
            )
        self._first = first

    def close(self) -> None:
        self._frames.close()

    def __enter__(self) -> VideoFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open_any(self, max_frames: int | None) -> _AVFrames | _ListFrames:
        """PyAV, else Pillow when FFmpeg cannot decode even the first frame."""
        try:
            frames = _AVFrames(self.path)
        except _DecodeFailed as err:
            av_error = str(err)
        else:
            try:
                first = frames.read()
            except _DecodeFailed as err:
                av_error = str(err)
            else:
                if first is not None:
                    frames.push_back(first)
                    return frames
                av_error = "opened but decoded no frame"
            frames.close()
        try:
            return _pillow_frames(self.path, max_frames)
        except _DecodeFailed as pil_error:
            raise LuvnetError(
                f"{self.path}: not a readable video (FFmpeg: {av_error}; Pillow: {pil_error}); "
                f"expected {'/'.join(e.lstrip('.') for e in VIDEO_EXTENSIONS)} content"
            ) from None


def _why(err: BaseException) -> str:
    """FFmpeg's reason without its errno and file name: one short phrase."""
    return str(getattr(err, "strerror", None) or err).replace("\n", " ")


class _AVFrames:
    """The first (non-cover-art) video stream of a file through PyAV, packet by packet, so a
    packet that fails to decode can be skipped without losing the rest."""

    def __init__(self, path: Path) -> None:
        try:
            self.container: Any = av.open(ffmpeg_name(path))
        except av.FFmpegError as err:
            raise _DecodeFailed(_why(err)) from None
        streams = [s for s in self.container.streams.video if not _is_cover_art(s)]
        if not streams:
            self.container.close()
            raise _DecodeFailed("no video stream")
        self.stream: Any = streams[0]
        self.stream.thread_type = "AUTO"  # frame and slice threads, as OpenCV's FFmpeg uses
        rate = self.stream.average_rate or self.stream.guessed_rate
        self.fps = float(rate) if rate and 0 < float(rate) < 1000 else 0.0
        self._step = 1.0 / (self.fps or _FALLBACK_FPS)
        self._last_pts: float | None = None
        self._pending: deque[DecodedFrame] = deque()
        self._packets: Iterator[Any] = self.container.demux(self.stream)
        self._ended = False
        # One converter for the file, one thread: a converter per frame (``to_ndarray``) starts
        # its thread pool each time, which made decoding about 3x slower than OpenCV's.
        self._to_bgr = VideoReformatter()

    def read(self) -> DecodedFrame | None:
        while not self._pending:
            if self._ended:
                return None
            try:
                packet = next(self._packets)
                decoded = packet.decode()
            except StopIteration:
                self._ended = True
                continue
            except av.FFmpegError as err:
                raise _DecodeFailed(_why(err)) from None
            for frame in decoded:
                bgr = self._to_bgr.reformat(frame, format="bgr24", threads=1).to_ndarray()
                self._pending.append(DecodedFrame(_upright(bgr, frame), self._pts(frame)))
        return self._pending.popleft()

    def push_back(self, frame: DecodedFrame) -> None:
        self._pending.appendleft(frame)

    def seek_start(self) -> None:
        self._pending.clear()
        self._last_pts, self._ended = None, False
        try:
            self.container.seek(0)  # also flushes the decoder
        except av.FFmpegError as err:
            log.debug("seek to the start failed (%s)", _why(err))
        self._packets = self.container.demux(self.stream)

    def close(self) -> None:
        self.container.close()

    def _pts(self, frame: Any) -> float:
        if frame.time is not None:
            pts = float(frame.time)
        elif frame.pts is not None and self.stream.time_base is not None:
            pts = float(frame.pts * self.stream.time_base)
        else:  # no timestamp at all: one step after the previous frame
            pts = 0.0 if self._last_pts is None else self._last_pts + self._step
        self._last_pts = pts
        return pts


def _upright(image: np.ndarray, frame: Any) -> np.ndarray:
    """The frame as it is meant to be seen: a display matrix's rotation (a phone recording of
    the scanner's screen, held upright) applied in quarter turns, as FFmpeg's own player and
    OpenCV's reader do; PyAV hands frames over as stored."""
    turns = round(float(getattr(frame, "rotation", 0) or 0) / 90) % 4  # counter-clockwise
    return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


def _is_cover_art(stream: Any) -> bool:
    return bool(stream.disposition & av.stream.Disposition.attached_pic)


class _ListFrames:
    """Frames already in memory (DICOM, Pillow), with their timing."""

    def __init__(
        self,
        images: list[np.ndarray],
        timestamps: np.ndarray,
        fps: float,
        region: tuple[int, int, int, int] | None = None,
    ) -> None:
        self.images, self.timestamps, self.fps, self.region = images, timestamps, fps, region
        self.index = 0

    def read(self) -> DecodedFrame | None:
        if self.index >= len(self.images):
            return None
        self.index += 1
        return DecodedFrame(self.images[self.index - 1], float(self.timestamps[self.index - 1]))

    def close(self) -> None:
        pass


def _dicom_frames(path: Path, max_frames: int | None) -> _ListFrames:
    try:
        from luvnet.engine.data.dicom import read_dicom
    except ImportError as err:
        raise LuvnetError(
            f"{path}: DICOM support is not installed ({err.name or err}); "
            "expected it for .dcm files: pip install luvnet[dicom]"
        ) from None
    dicom = read_dicom(path, max_frames)
    timestamps = np.asarray(dicom.timestamps, dtype=np.float64)
    return _ListFrames(list(dicom.frames), timestamps, float(dicom.fps), dicom.region)


def _pillow_frames(path: Path, max_frames: int | None) -> _ListFrames:
    from PIL import Image, ImageSequence, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            durations: list[float] = []
            frames: list[np.ndarray] = []
            for frame in ImageSequence.Iterator(image):
                if max_frames is not None and len(frames) >= max_frames:
                    break
                frames.append(np.asarray(frame.convert("L"), dtype=np.uint8).copy())
                durations.append(float(frame.info.get("duration", 0) or 0) / 1000.0)
    except UnidentifiedImageError:
        raise _DecodeFailed("not an image sequence it knows") from None
    except (OSError, ValueError) as err:
        raise _DecodeFailed(str(err).replace(str(path), "file")) from None
    if not frames:
        raise _DecodeFailed("no frame")
    mean_s = float(np.mean(durations))
    step = mean_s if mean_s > 0 else 1.0 / _FALLBACK_FPS
    starts = np.concatenate([[0.0], np.cumsum([d if d > 0 else step for d in durations[:-1]])])
    return _ListFrames(frames, starts.astype(np.float64), 1.0 / mean_s if mean_s > 0 else 0.0)
