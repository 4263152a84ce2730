"""OpenCV-backed sources: video files, capture devices and network streams.

Habits from docs/model.md, "Known pitfalls": V4L2 forced on Linux devices, CAP_PROP_BUFFERSIZE = 1,
open/read timeouts on network sources. Pacing of file replays lives here; drop accounting lives in
the grabber.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import cv2

from luvnet.engine.data.video import ffmpeg_name
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


class FileSource(_OpenCVSource):
    """A video file replayed at its own frame rate (or as fast as possible), optionally looped."""

    retry_open = False  # a missing or undecodable file does not heal by waiting

    def __init__(self, path: str | Path, options: SourceOptions) -> None:
        super().__init__(options)
        self.path = Path(path)
        self.name = f"file:{self.path}"
        self._start_ns = 0
        self._index = 0

    def _create(self) -> cv2.VideoCapture:
        if not self.path.is_file():
            raise SourceError(f"{self.name}: no such file")
        # FFmpeg first, by absolute name: a relative "P01:L1.mp4" would be read as protocol
        # "P01", and the default backend order reaches the image-sequence reader, to which a
        # "%03d" in a name is a pattern. Other backends only for names without "%".
        capture = cv2.VideoCapture(ffmpeg_name(self.path), cv2.CAP_FFMPEG)
        if capture.isOpened() or "%" in self.path.name:
            return capture
        capture.release()
        return cv2.VideoCapture(ffmpeg_name(self.path))

    def open(self) -> None:
        super().open()
        if not self.options.realtime or self._fps is None:
            self._fps = self._fps or 30.0
        self._start_ns, self._index = time.monotonic_ns(), 0
        # A file OpenCV "opens" but cannot decode (wrong extension, truncated) fails here.
        assert self._capture is not None  # set by super().open(), which raises otherwise
        if self._capture.get(cv2.CAP_PROP_FRAME_COUNT) == 0 and self._read_probe() is None:
            self.close()
            raise SourceError(f"{self.name}: not a decodable video")

    def _read_probe(self):
        image = self._read_image()
        assert self._capture is not None  # _read_image raises before open
        self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
        return image

    def read(self) -> SourceFrame:
        image = self._read_image()
        if image is None:
            if not self.options.loop or self._index == 0:
                raise SourceEnded(self.name)
            assert self._capture is not None  # _read_image raises before open
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            self._start_ns, self._index = time.monotonic_ns(), 0
            image = self._read_image()
            if image is None:
                raise SourceEnded(self.name)
        if self.options.realtime and self._fps:
            due = self._start_ns + int(self._index * 1e9 / self._fps)
            delay = due - time.monotonic_ns()
            if delay > 0:
                time.sleep(delay / 1e9)
        self._index += 1
        return SourceFrame(image=image, meta={"file_frame": self._index - 1})


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
