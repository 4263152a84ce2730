"""Video files (through the one file reader, PyAV), capture devices and network streams (OpenCV).

Habits from docs/model.md, "Known pitfalls": V4L2 forced on Linux devices, CAP_PROP_BUFFERSIZE = 1,
open/read timeouts on network sources. Pacing of file replays lives here (by each frame's own
timestamp); drop accounting lives in the grabber.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import cv2

from luvnet.engine.data.timing import source_rate
from luvnet.engine.data.video import VideoFile
from luvnet.engine.errors import LuvnetError
from luvnet.plugins.sources.pacing import TimestampPacer
from luvnet.streamer.frame_source import SourceEnded, SourceError, SourceFrame, SourceOptions


class _OpenCVSource:
    """Shared open/read/close over a cv2.VideoCapture; subclasses say how to open it."""

    name = "opencv"
    retry_open = True

    def __init__(self, options: SourceOptions) -> None:
        self.options = options
        self._capture: cv2.VideoCapture | None = None
        self._fps: float | None = options.fps

    @property
    def fps(self) -> float | None:
        return self._fps

    def _create(self) -> cv2.VideoCapture:
        raise NotImplementedError

    def open(self) -> None:
        self.close()
        capture = self._create()
        if not capture.isOpened():
            capture.release()
            raise SourceError(f"{self.name}: cannot open{self._why_not_open()}")
        reported = capture.get(cv2.CAP_PROP_FPS)
        if reported and 0 < reported < 1000:
            self._fps = reported
        self._capture = capture

    def _why_not_open(self) -> str:
        """The likely cause of a failed open, as ``" (...)"``, or ``""`` when unknown."""
        return ""

    def _read_image(self):
        if self._capture is None:
            raise SourceError(f"{self.name}: read before open")
        ok, image = self._capture.read()
        return image if ok and image is not None and image.size else None

    def read(self) -> SourceFrame:
        image = self._read_image()
        if image is None:
            raise SourceError(f"{self.name}: read failed")
        return SourceFrame(image=image)

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


class FileSource:
    """A video file through the one file reader (:class:`VideoFile`, PyAV), replayed at its own
    timestamps (or as fast as possible), optionally looped.

    Each frame keeps its true size and carries its presentation time in ``meta["pts_s"]``
    (seconds, the file's clock) and its index in the pass in ``meta["file_frame"]``. A packet
    that does not decode is skipped (logged), not the end of the stream. ``--loop`` rewinds
    to the first frame, verified by timestamp (the reader reopens the file when a seek lands
    elsewhere).
    """

    retry_open = False  # a missing or undecodable file does not heal by waiting

    def __init__(self, path: str | Path, options: SourceOptions) -> None:
        self.options = options
        self.path = Path(path)
        self.name = f"file:{self.path}"
        self._video: VideoFile | None = None
        self._fps: float | None = options.fps
        self._pacer = TimestampPacer()
        self._index = 0

    @property
    def fps(self) -> float | None:
        return self._fps

    def open(self) -> None:
        self.close()
        if not self.path.is_file():
            raise SourceError(f"{self.name}: no such file")
        try:
            # By content, whatever the name: a replay of a video named .txt still plays.
            self._video = VideoFile(self.path, skip_corrupt=True, any_extension=True)
        except LuvnetError as err:
            raise SourceError(self._named(err)) from None
        # The rate decimation to the model's is decided on: the timestamps' mean, as the
        # reader's Video.fps gives evaluation (a container's nominal rate can be anything).
        rate = source_rate(self.path) if self._fps is None else 0.0
        if rate > 0 or self._video.fps > 0:
            self._fps = rate or self._video.fps
        if not self.options.realtime or self._fps is None:
            self._fps = self._fps or 30.0
        self._pacer.default_step_s = 1.0 / self._fps  # a frame without a step of its own
        self._pacer.reset()
        self._index = 0

    def read(self) -> SourceFrame:
        if self._video is None:
            raise SourceError(f"{self.name}: read before open")
        try:
            frame = self._video.read()
            if frame is None:
                if not self.options.loop or self._index == 0:
                    raise SourceEnded(self.name)
                self._video.rewind()
                self._index = 0
                frame = self._video.read()
        except LuvnetError as err:
            raise SourceError(self._named(err)) from None
        if frame is None:
            raise SourceEnded(self.name)
        if self.options.realtime:
            self._pacer.wait(frame.pts_s)
        self._index += 1
        meta: dict[str, object] = {"file_frame": self._index - 1, "pts_s": frame.pts_s}
        if self._video.region is not None:  # a DICOM file's imaging region: the crop
            meta["region"] = self._video.region
        return SourceFrame(image=frame.image, meta=meta)

    def close(self) -> None:
        if self._video is not None:
            self._video.close()
            self._video = None

    def _named(self, err: LuvnetError) -> str:
        # The reader's messages start with the path; the source's name says "file:" first.
        message = str(err)
        return (
            f"file:{message}" if message.startswith(str(self.path)) else f"{self.name}: {message}"
        )


class DeviceSource(_OpenCVSource):
    """A capture card or webcam: V4L2 on Linux, newest frame only (buffer size 1)."""

    def __init__(self, device: int | str, options: SourceOptions) -> None:
        super().__init__(options)
        fourcc = options.fourcc
        if fourcc is not None and (len(fourcc) != 4 or not fourcc.isascii()):
            # Refused here, not at open: a bad code would fail every reconnect, forever.
            raise ValueError(f"fourcc: expected 4 ASCII characters such as MJPG, got {fourcc!r}")
        self.device = device
        self.name = f"device:{device}"

    def _create(self) -> cv2.VideoCapture:
        backend = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
        capture = cv2.VideoCapture(self.device, backend)
        capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        if self.options.fourcc:
            capture.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*self.options.fourcc))
        if self.options.size:
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self.options.size[0])
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, self.options.size[1])
        if self.options.fps:
            capture.set(cv2.CAP_PROP_FPS, self.options.fps)
        return capture

    def _why_not_open(self) -> str:
        if not sys.platform.startswith("linux"):
            return ""
        node = Path(f"/dev/video{self.device}" if isinstance(self.device, int) else self.device)
        if not node.exists():
            present = sorted(str(p) for p in Path("/dev").glob("video*"))
            found = ", ".join(present) if present else "none"
            return f" ({node} does not exist; capture devices here: {found})"
        if not os.access(node, os.R_OK | os.W_OK):
            return f" ({node}: permission denied; add this user to the 'video' group)"
        return f" ({node} exists but did not open: busy in another program, or not a camera?)"


class NetworkSource(_OpenCVSource):
    """rtsp://, http(s)://, udp:// streams through FFmpeg, with open and read timeouts."""

    def __init__(self, url: str, options: SourceOptions) -> None:
        super().__init__(options)
        self.url = url
        self.name = re.sub(r"//[^/@]*@", "//***@", url)  # never echo credentials

    def _create(self) -> cv2.VideoCapture:
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            int(self.options.open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            int(self.options.read_timeout_s * 1000),
        ]
        return cv2.VideoCapture(self.url, cv2.CAP_FFMPEG, params)


def open_file(spec: str, options: SourceOptions) -> FileSource:
    return FileSource(spec, options)


def open_device(spec: str, options: SourceOptions) -> DeviceSource:
    spec = spec.removeprefix("/dev/video")
    return DeviceSource(int(spec) if spec.isdigit() else spec, options)


def open_network(spec: str, options: SourceOptions) -> NetworkSource:
    return NetworkSource(spec, options)
