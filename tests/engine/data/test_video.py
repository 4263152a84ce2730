"""engine.data.video, the one file reader (PyAV): decoding real files of each container, their
timestamps, what decodes over what a header declares, and every way a file can be bad.

Files are written by OpenCV, Pillow and PyAV itself (PyAV muxing sets each frame's timestamp,
adds audio tracks, writes edit lists). The handed cases of ../shared/cases/video are in
tests/reliability/test_video_cases.py.
"""

from __future__ import annotations

import logging
import pickle
import sys
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from PIL import Image

from luvnet.engine.data import video as video_module
from luvnet.engine.data.video import VideoFile, iter_frames, read_video
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


def test_pillow_reads_what_ffmpeg_cannot(tmp_path: Path) -> None:
    # Animated WebP content under a .gif name: FFmpeg opens it but decodes no frame.
    path = write_animation(tmp_path / "webp-inside.gif", fmt="WEBP", lossless=True)
    with av.open(str(path)) as container, pytest.raises(av.FFmpegError):
        next(container.decode(video=0))  # precondition: FFmpeg fails on this file
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
    with pytest.raises(LuvnetError, match="text.avi: not a readable video"):
        next(iter_frames(path))


# --------------------------------------------------------------------------- PyAV-written files


def write_av(
    path: Path,
    codec: str,
    pts: list[int],
    *,
    time_base: Fraction = Fraction(1, 1000),
    audio_s: float = 0.0,
    size: tuple[int, int] = (H, W),
    pix_fmt: str = "yuv420p",
    first_level: int = 0,
    options: dict[str, str] | None = None,
) -> Path:
    """Frame i (flat grey LEVELS[first_level + i]) at ``pts[i]`` in ``time_base`` units, plus
    ``audio_s`` seconds of silence (Opus in Matroska/WebM, AAC elsewhere)."""
    with av.open(str(path), "w") as container:
        video = container.add_stream(codec, rate=25)
        video.width, video.height, video.pix_fmt = size[1], size[0], pix_fmt
        video.time_base = video.codec_context.time_base = time_base
        video.options = options or {}
        # Every stream is added before the first packet: the header is written then.
        matroska = path.suffix in (".mkv", ".webm")
        audio = (
            container.add_stream("libopus" if matroska else "aac", rate=48000) if audio_s else None
        )
        for i, p in enumerate(pts):
            level = LEVELS[(first_level + i) % len(LEVELS)]
            frame = av.VideoFrame.from_ndarray(np.full((*size, 3), level, np.uint8), "bgr24")
            frame.pts, frame.time_base = p, time_base
            container.mux(video.encode(frame))
        container.mux(video.encode())
        if audio is not None:
            for start in range(0, int(audio_s * 48000), 960):
                chunk = av.AudioFrame.from_ndarray(np.zeros((1, 960), np.int16), "s16", "mono")
                chunk.sample_rate, chunk.pts, chunk.time_base = 48000, start, Fraction(1, 48000)
                container.mux(audio.encode(chunk))
            container.mux(audio.encode())
    return path


def opencv_counts(path: Path) -> tuple[int, int]:
    """(frames OpenCV's header says, frames it decodes): the old reader's two numbers."""
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    declared, decoded = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), 0
    while cap.read()[0]:
        decoded += 1
    cap.release()
    return declared, decoded


def test_timestamps_ride_along_without_breaking_unpacking(tmp_path: Path) -> None:
    video = read_video(write_cv(tmp_path / "a.avi", "MJPG"))
    frames, fps = video
    assert frames is video.frames and fps == pytest.approx(25.0)
    np.testing.assert_allclose(video.timestamps, np.arange(10) / 25.0)
    assert video.timestamps.dtype == np.float64 and video.region is None
    again = pickle.loads(pickle.dumps(video))
    np.testing.assert_array_equal(again.timestamps, video.timestamps)


@pytest.mark.parametrize(
    ("name", "codec"), [("a.mkv", "libx264"), ("a.webm", "libvpx"), ("a.mp4", "libx264")]
)
def test_audio_longer_than_video_is_a_whole_video(tmp_path: Path, name: str, codec: str) -> None:
    # 20 frames (0.8 s) and 3 s of audio: Matroska headers give duration x fps = 75 frames.
    path = write_av(tmp_path / name, codec, [i * 40 for i in range(20)], audio_s=3.0)
    video = read_video(path)
    assert_levels(video.frames, 20)
    assert video.fps == pytest.approx(25.0)
    np.testing.assert_allclose(video.timestamps, np.arange(20) * 0.04, atol=1e-6)
    assert sum(1 for _ in iter_frames(path)) == 20


def test_mov_edit_list_presents_what_it_says(tmp_path: Path) -> None:
    # Negative start timestamps make the muxer write an edit list that hides 5 of 20 samples:
    # the header declares 20, a player shows 15. The old reader called this "truncated".
    path = write_av(
        tmp_path / "edit.mov", "libx264", [i - 5 for i in range(20)], time_base=Fraction(1, 25)
    )
    assert opencv_counts(path) == (20, 15), "precondition: an edit list hiding 5 samples"
    video = read_video(path)
    means = video.frames.reshape(15, -1).mean(axis=1)
    expected = [LEVELS[t % len(LEVELS)] for t in range(5, 20)]
    assert np.abs(means - expected).max() <= 6, means.round()
    np.testing.assert_allclose(video.timestamps, np.arange(15) / 25.0, atol=1e-6)


def test_variable_frame_rate_keeps_each_frames_time(tmp_path: Path) -> None:
    pts_ms = [i * 40 for i in range(10)] + [400 + i * 250 for i in range(10)]
    path = write_av(tmp_path / "vfr.mkv", "libx264", pts_ms)
    video = read_video(path)
    assert_levels(video.frames, 20)
    np.testing.assert_allclose(video.timestamps, np.array(pts_ms) / 1000.0, atol=1e-6)
    assert video.fps == pytest.approx(19 / 2.65)  # the mean step of what decoded
    head = read_video(path, max_frames=10)
    assert head.fps == pytest.approx(25.0) and len(head.timestamps) == 10


@pytest.mark.parametrize(
    ("name", "codec", "pix_fmt"),
    [
        ("b.mov", "mpeg4", "yuv420p"),
        ("b.avi", "mjpeg", "yuvj420p"),
        ("b.ts", "mpeg2video", "yuv420p"),
        ("b.m2ts", "libx264", "yuv420p"),
        ("b.mpg", "mpeg1video", "yuv420p"),
        ("b.gif", "gif", "rgb8"),
    ],
)
def test_pyav_written_containers(tmp_path: Path, name: str, codec: str, pix_fmt: str) -> None:
    tb = Fraction(1, 100) if codec == "gif" else Fraction(1, 25)
    step = 4 if codec == "gif" else 1
    path = write_av(
        tmp_path / name, codec, [i * step for i in range(12)], time_base=tb, pix_fmt=pix_fmt
    )
    video = read_video(path)
    assert_levels(video.frames, 12, tol=8.0)
    steps = np.diff(video.timestamps)
    np.testing.assert_allclose(steps, 0.04, atol=1e-6)
    assert video.fps == pytest.approx(25.0)


@pytest.mark.parametrize("degrees", [90, -90, 180])
def test_a_display_rotation_is_applied_as_ffmpeg_and_opencv_show_it(
    tmp_path: Path, degrees: int
) -> None:
    """A phone recording of the scanner's screen is stored sideways with a display matrix:
    frames come upright (FFmpeg's autorotate, OpenCV's default), not as stored."""
    stored = np.zeros((4, 48, 64), np.uint8)
    stored[:, 2:12, 2:20] = 255  # a bright mark in the stored frame's top-left corner
    path = tmp_path / "phone.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.height, stream.width = stored.shape[1:]
        stream.pix_fmt = "yuv420p"
        stream.set_display_rotation(degrees)  # counter-clockwise, as VideoFrame.rotation
        for image in stored:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="gray")))
        container.mux(stream.encode())
    frames = read_video(path).frames
    upright = np.rot90(stored[0], degrees // 90)
    assert frames.shape == (4, *upright.shape)
    assert np.abs(frames[0].astype(int) - upright).mean() < 6, "turned the wrong way"


def test_frame_size_change_true_sizes_or_one_line(tmp_path: Path) -> None:
    # Two MPEG-TS recordings joined byte for byte: 5 frames at 64x48, then 5 at 96x72.
    first = write_av(tmp_path / "1.ts", "libx264", list(range(5)), time_base=Fraction(1, 25))
    second = write_av(
        tmp_path / "2.ts", "libx264", list(range(5)), time_base=Fraction(1, 25), size=(72, 96)
    )
    joined = tmp_path / "joined.mts"
    joined.write_bytes(first.read_bytes() + second.read_bytes())
    sizes = [frame.shape for frame in iter_frames(joined)]
    assert sizes == [(48, 64)] * 5 + [(72, 96)] * 5
    with pytest.raises(LuvnetError) as err:
        read_video(joined)
    message = str(err.value)
    assert message.startswith(f"{joined}: frame 5 is 96x72, frame 0 is 64x48"), message
    assert "\n" not in message
    assert read_video(joined, max_frames=5).frames.shape == (5, 48, 64)


def test_a_packet_that_fails_to_decode(tmp_path: Path) -> None:
    # The second half of frame 5's JPEG zeroed in place (same length, so the container is
    # intact): decoding that packet fails. Files say so; a replay skips the frame.
    path = write_cv(tmp_path / "a.avi", "MJPG")
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 1) if data[i : i + 2] == b"\xff\xd8"]
    ends = [i for i in range(len(data) - 1) if data[i : i + 2] == b"\xff\xd9"]
    assert len(starts) == len(ends) == 10, "precondition: one JPEG per frame"
    middle = (starts[5] + ends[5]) // 2
    data[middle : ends[5] + 2] = bytes(ends[5] + 2 - middle)
    path.write_bytes(bytes(data))
    with pytest.raises(LuvnetError) as err:
        read_video(path)
    assert "truncated or corrupt video: decoding failed after 5 frames" in str(err.value)
    with VideoFile(path, skip_corrupt=True) as video:
        kept = [frame for frame in iter(video.read, None)]
        assert len(kept) == 9 and video.skipped == 1
    means = [float(f.image.mean()) for f in kept[4:6]]
    assert np.allclose(means, [LEVELS[4], LEVELS[6]], atol=6), means  # 5 is the one skipped


def test_rewind_reopens_when_a_seek_lands_elsewhere(tmp_path: Path, monkeypatch, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="luvnet.engine.data.video")
    path = write_av(
        tmp_path / "gop.mpeg", "mpeg1video", list(range(24)), time_base=Fraction(1, 25),
        options={"g": "6"},
    )  # fmt: skip
    with VideoFile(path) as video:
        first_pass = list(iter(video.read, None))
        # What OpenCV's seek did to MPEG program streams: land on a later keyframe.
        monkeypatch.setattr(
            video_module._AVFrames,
            "seek_start",
            lambda self: (
                self.container.seek(int(0.5 * av.time_base)),
                setattr(self, "_ended", False),
            ),
        )
        video.rewind()
        second_pass = list(iter(video.read, None))
    assert "seek did not land on the first frame; reopening" in caplog.text
    assert [f.pts_s for f in second_pass] == [f.pts_s for f in first_pass]
    for a, b in zip(first_pass, second_pass, strict=True):
        np.testing.assert_array_equal(a.image, b.image)


def test_gif_frame_durations_are_its_timestamps(tmp_path: Path) -> None:
    images = [Image.fromarray(f) for f in flat_frames(4)]
    path = tmp_path / "uneven.gif"
    images[0].save(
        path, save_all=True, append_images=images[1:], duration=[40, 40, 200, 40], loop=0
    )
    video = read_video(path)
    assert_levels(video.frames, 4, tol=0.5)
    np.testing.assert_allclose(video.timestamps, [0.0, 0.04, 0.08, 0.28], atol=1e-6)


def test_dicom_without_its_module_says_what_to_install(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "loop.dcm"
    path.write_bytes(b"\0" * 128 + b"DICM")
    monkeypatch.setitem(sys.modules, "luvnet.engine.data.dicom", None)  # as if not installed
    with pytest.raises(LuvnetError) as err:
        read_video(path)
    message = str(err.value)
    assert message.startswith(f"{path}: DICOM support") and "pip install luvnet[dicom]" in message
