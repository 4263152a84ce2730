"""engine.video: decoding real files of each container, and every way a file can be bad."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from luvnet.engine.data.video import iter_frames, read_video
from luvnet.engine.errors import LuvnetError

H, W = 48, 64
LEVELS = [20, 60, 100, 140, 180, 220, 250, 30, 90, 160]  # frame t is flat grey LEVELS[t]


def flat_frames(count: int) -> list[np.ndarray]:
    return [np.full((H, W), LEVELS[t % len(LEVELS)], np.uint8) for t in range(count)]


def write_cv(path: Path, fourcc: str, count: int = 10, fps: float = 25.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (W, H))
    assert writer.isOpened(), f"OpenCV cannot write {path.name} with {fourcc}"
    for frame in flat_frames(count):
        writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    writer.release()
    return path


def write_animation(path: Path, count: int = 10, fmt: str = "GIF", **kwargs: object) -> Path:
    images = [Image.fromarray(f) for f in flat_frames(count)]
    images[0].save(
        path, format=fmt, save_all=True, append_images=images[1:], duration=40, loop=0, **kwargs
    )
    return path


def assert_levels(frames: np.ndarray, count: int, tol: float = 6.0) -> None:
    assert frames.shape == (count, H, W) and frames.dtype == np.uint8, frames.shape
    means = frames.reshape(count, -1).mean(axis=1)
    expected = np.array([LEVELS[t % len(LEVELS)] for t in range(count)], float)
    assert np.abs(means - expected).max() <= tol, f"means {means.round(1)} vs {expected}"


@pytest.mark.parametrize(
    ("name", "fourcc"),
    [("a.mp4", "mp4v"), ("a.avi", "MJPG"), ("a.mov", "mp4v"), ("a.mpeg", "PIM1")],
)
def test_reads_containers(tmp_path: Path, name: str, fourcc: str) -> None:
    frames, fps = read_video(write_cv(tmp_path / name, fourcc))
    assert_levels(frames, 10)
    assert fps == pytest.approx(25.0)


def test_reads_gif(tmp_path: Path) -> None:
    frames, fps = read_video(write_animation(tmp_path / "a.gif"))
    assert_levels(frames, 10, tol=0.5)
    assert fps == pytest.approx(25.0)


def test_pillow_reads_what_opencv_cannot(tmp_path: Path) -> None:
    # Animated WebP content under a .gif name: OpenCV opens it but decodes no frame.
    path = write_animation(tmp_path / "webp-inside.gif", fmt="WEBP", lossless=True)
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    assert not cap.read()[0], "precondition: OpenCV should fail on this file"
    cap.release()
    frames, fps = read_video(path)
    assert_levels(frames, 10, tol=0.5)
    assert fps == pytest.approx(25.0)


@pytest.mark.parametrize("name", ["one.mp4", "one.avi"])
def test_one_frame_video(tmp_path: Path, name: str) -> None:
    fourcc = "mp4v" if name.endswith("mp4") else "MJPG"
    frames, _ = read_video(write_cv(tmp_path / name, fourcc, count=1))
    assert_levels(frames, 1)


def test_one_frame_gif(tmp_path: Path) -> None:
    path = tmp_path / "one.gif"
    Image.fromarray(flat_frames(1)[0]).save(path)
    assert_levels(read_video(path).frames, 1, tol=0.5)


def test_max_frames_and_iterator_agree(tmp_path: Path) -> None:
    path = write_cv(tmp_path / "a.avi", "MJPG")
    assert_levels(read_video(path, max_frames=4).frames, 4)
    streamed = np.stack(list(iter_frames(path)))
    np.testing.assert_array_equal(streamed, read_video(path).frames)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _cut(source: Path, target: Path, keep: float) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * keep)])
    return target


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda d: d / "missing.mp4", "no such video file"),
        (lambda d: _write(d / "zero.mp4", b""), "empty file (0 bytes)"),
        (lambda d: _write(d / "text.mp4", b"not a video " * 50), "not a readable video"),
        (lambda d: _cut(write_cv(d / "a.mp4", "mp4v"), d / "cut.mp4", 0.5), "not a readable"),
        (lambda d: _cut(write_cv(d / "a.avi", "MJPG", 40), d / "cut.avi", 0.6), "truncated"),
        (lambda d: write_cv(d / "a.avi", "MJPG").rename(d / "a.txt"), "unsupported extension"),
        (lambda d: d / "noext", "unsupported extension '(none)'"),
    ],
    ids=["missing", "zero-bytes", "not-video", "cut-mp4", "cut-avi", "txt-ext", "no-ext"],
)
def test_bad_files(tmp_path: Path, make: Callable[[Path], Path], fragment: str) -> None:
    path = make(tmp_path)
    with pytest.raises(LuvnetError) as err:
        read_video(path)
    message = str(err.value)
    assert message.startswith(str(path)), message
    assert fragment in message and "\n" not in message, message
    if fragment not in ("no such video file", "truncated"):
        assert "expected" in message, message


def test_iter_frames_rejects_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "text.avi"
    path.write_text("nope")
    with pytest.raises(LuvnetError, match="OpenCV cannot open it"):
        next(iter_frames(path))
