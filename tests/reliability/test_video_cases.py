"""The handed video cases of ``../shared/cases/video`` with the right outcomes of its README,
through the one file reader (engine.data.video), the ``file:`` source and the real CLI.

Generated files of the same kinds (other containers and codecs, audio longer than video, edit
lists, variable frame rate, joined recordings, a packet that fails) are in
tests/engine/data/test_video.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from luvnet.engine.data.video import iter_frames, read_video
from luvnet.engine.errors import LuvnetError
from luvnet.plugins.sources.capture import FileSource
from luvnet.streamer.frame_source import SourceEnded, SourceFrame, SourceOptions
from tests.reliability.helpers import REPO, Collector, stream_args
from tests.streamer.conftest import free_port

CASES = REPO.parent / "shared" / "cases"
VIDEO = CASES / "video"
pytestmark = pytest.mark.skipif(
    not VIDEO.is_dir(), reason=f"the handed cases are not here ({VIDEO}); they live beside the repo"
)


def replay(name: str, count: int, **options: object) -> list[SourceFrame]:
    """Up to ``count`` frames of ``file:NAME`` as the stream's source reads them."""
    source = FileSource(VIDEO / name, SourceOptions(**options))  # type: ignore[arg-type]
    source.open()
    frames: list[SourceFrame] = []
    try:
        while len(frames) < count:
            frames.append(source.read())
    except SourceEnded:
        pass
    finally:
        source.close()
    return frames


def stream(
    checkpoint: Path, name: str, *extra: str
) -> tuple[subprocess.CompletedProcess[str], Collector]:
    """``luvnet stream --source file:NAME EXTRA``, every message kept."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    collector = Collector(endpoint)
    try:
        args = stream_args(endpoint, checkpoint, f"file:{VIDEO / name}", *extra)
        result = subprocess.run(
            [sys.executable, "-m", "luvnet.cli", *args, "--wait-subscriber", "20"],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
        )
        time.sleep(0.3)  # the last messages in flight
    finally:
        collector.close()
    return result, collector


def test_01_reference_is_60_frames_at_30_fps():
    video = read_video(VIDEO / "01_ref.mp4")
    assert video.frames.shape == (60, 240, 320) and video.fps == pytest.approx(30.0)
    np.testing.assert_allclose(np.diff(video.timestamps), 1 / 30, atol=1e-3)
    assert sum(1 for _ in iter_frames(VIDEO / "01_ref.mp4")) == 60


def test_02_variable_frame_rate_keeps_each_frames_time():
    video = read_video(VIDEO / "02_vfr.mp4")
    assert video.frames.shape == (60, 240, 320)
    steps = np.diff(video.timestamps)
    np.testing.assert_allclose(steps[:29], 1 / 30, atol=2e-3)  # frames 0-29
    np.testing.assert_allclose(steps[30:], 1 / 5, atol=2e-3)  # frames 30-59
    reference = read_video(VIDEO / "01_ref.mp4").frames  # the same pictures
    assert np.abs(video.frames.astype(int) - reference).mean() < 3


@pytest.mark.slow
def test_02_variable_frame_rate_replays_at_its_own_timestamps(tiny_checkpoint):
    """Paced by each frame's timestamp, not one average (~9 fps): ~33 ms gaps, then ~200 ms,
    as the published capture times of a real ``luvnet stream`` show."""
    result, collector = stream(tiny_checkpoint, "02_vfr.mp4", "--max-frames", "60")
    assert result.returncode == 0, result.stderr
    scores = collector.scores()
    assert scores and scores[-1].frame == 59, [m.frame for m in scores]
    # Frames dropped by a busy pipeline leave gaps in `frame`: divide by the frames between.
    per_frame: dict[str, list[float]] = {"fast": [], "slow": []}
    for a, b in zip(scores, scores[1:], strict=False):
        part = "fast" if b.frame <= 29 else "slow" if a.frame >= 30 else None
        if part:
            per_frame[part].append((b.capture_ns - a.capture_ns) / 1e6 / (b.frame - a.frame))
    assert len(per_frame["fast"]) >= 3 and len(per_frame["slow"]) >= 10, per_frame
    assert 25 <= np.median(per_frame["fast"]) <= 50, per_frame["fast"]
    assert 180 <= np.median(per_frame["slow"]) <= 230, per_frame["slow"]


def test_04_audio_longer_than_video_is_a_whole_video():
    video = read_video(VIDEO / "04_audio_longer.webm")  # never "truncated or corrupt"
    assert video.frames.shape == (60, 240, 320) and video.fps == pytest.approx(30.0, abs=0.1)
    frames = replay("04_audio_longer.webm", 100, realtime=False)
    assert [f.meta["file_frame"] for f in frames] == list(range(60))


def test_13_size_change_true_sizes_or_one_line():
    sizes = [frame.shape for frame in iter_frames(VIDEO / "13_size_change.ts")]
    assert sizes == [(240, 320)] * 15 + [(360, 480)] * 15
    replayed = replay("13_size_change.ts", 100, realtime=False)
    assert [f.image.shape[:2] for f in replayed] == sizes  # the stream gets them unsquashed
    with pytest.raises(LuvnetError) as err:
        read_video(VIDEO / "13_size_change.ts")  # a training clip needs one size
    message = str(err.value)
    assert "frame 15 is 480x360, frame 0 is 320x240" in message and "\n" not in message


@pytest.mark.parametrize("name", ["14b_mpeg1.mpeg", "14_plain.ts"])
def test_14_loop_starts_every_pass_at_frame_0(name: str):
    frames = replay(name, 180, loop=True, realtime=False)
    assert [f.meta["file_frame"] for f in frames] == list(range(60)) * 3
    first = frames[:60]
    for later in (frames[60:120], frames[120:]):
        assert [f.meta["pts_s"] for f in later] == [f.meta["pts_s"] for f in first]
        for a, b in zip(first, later, strict=True):
            np.testing.assert_array_equal(a.image, b.image)
    assert np.abs(first[0].image.astype(int) - first[12].image).mean() > 1, "frames must differ"


@pytest.mark.slow
def test_14_mpeg_ts_loops_through_the_stream(tiny_checkpoint):
    result, collector = stream(
        tiny_checkpoint, "14_plain.ts", "--loop", "--max-frames", "130", "--as-fast-as-possible"
    )
    assert result.returncode == 0, result.stderr
    assert [m.frame for m in collector.scores()] == list(range(130))
    final = collector.statuses()[-1]
    assert final.state == "ended" and final.frames_published == 130, final


@pytest.mark.parametrize("name", ["10a_us_cine_rgb.dcm", "10b_us_cine_ybr422_jpeg.dcm"])
def test_dicom_cine_goes_through_the_same_reader(name: str, tmp_path: Path):
    pytest.importorskip("pydicom", reason="DICOM support is the luvnet[dicom] extra")
    path = CASES / "dicom" / name
    video = read_video(path)
    assert video.frames.shape == (3, 120, 160) and video.fps == pytest.approx(30.0, abs=0.1)
    np.testing.assert_allclose(video.timestamps, [0.0, 0.0333, 0.0666], atol=1e-6)
    # Archives export DICOM without an extension: the content decides.
    unnamed = tmp_path / "IM000001"
    unnamed.write_bytes(path.read_bytes())
    np.testing.assert_array_equal(read_video(unnamed).frames, video.frames)
    source = FileSource(path, SourceOptions(loop=True, realtime=False))
    source.open()
    try:
        frames = [source.read() for _ in range(5)]
    finally:
        source.close()
    assert [f.meta["file_frame"] for f in frames] == [0, 1, 2, 0, 1]
    assert source.fps == pytest.approx(30.0, abs=0.1)
