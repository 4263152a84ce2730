"""Frame timing (engine/data/timing.py): the model's rate, decimation by timestamp, and the
frame cache (training and evaluation) that applies it."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from luvnet.engine.data.frame_cache import FrameCache
from luvnet.engine.data.timing import (
    Decimator,
    Timing,
    kept_indices,
    mean_rate,
    median_rate,
    model_frame_rate,
    source_rate,
    video_rate,
)
from luvnet.engine.data.video import read_video
from luvnet.engine.errors import LuvnetError
from luvnet.engine.evaluation.attention_plot import video_curves
from luvnet.engine.model.checkpoint import load_checkpoint
from luvnet.engine.model.config import PreprocessConfig
from luvnet.streamer.compose import DEMO_CHECKPOINT
from tests.timed_videos import scan_frames, write_at_rate, write_timed

REPO = Path(__file__).resolve().parents[3]
CASES = REPO.parent / "shared" / "cases" / "video"
PRE = PreprocessConfig(image_size=32)


def test_60_fps_keeps_every_second_frame_for_a_30_fps_model() -> None:
    exact = np.arange(60) / 60
    jittered = np.round(exact, 3)  # a 1 ms time base: steps of 16 and 17 ms
    for times in (exact, jittered):
        assert kept_indices(times, Timing(30.0), 60.0).tolist() == list(range(0, 60, 2))


def test_slower_or_barely_faster_sources_keep_every_frame() -> None:
    times = np.arange(40) / 40
    assert kept_indices(times, Timing(30.0), 40.0) is None, "1.33x is under the 1.5x default"
    assert kept_indices(np.arange(20) / 15, Timing(30.0), 15.0) is None, "never padded"
    assert kept_indices(times, Timing(20.0, decimate_above=0), 40.0) is None, "0 = off"
    assert kept_indices(times, Timing(None), 40.0) is None, "unknown model rate"
    assert kept_indices(times, Timing(20.0, decimate_above=2.0), 40.0) is not None


def test_variable_frame_rate_keeps_its_slow_part_whole() -> None:
    fast = np.arange(40) / 120  # 0.325 s at 120 fps
    slow = fast[-1] + (np.arange(1, 21) / 30)  # then 20 frames at 30 fps
    times = np.concatenate([fast, slow])
    rate = mean_rate(times)
    assert rate > 45, "fast enough on average to be decimated for a 30 fps model"
    kept = kept_indices(times, Timing(30.0), rate)
    assert kept is not None
    steps = np.diff(times[kept])
    # At least one model interval apart (less the tolerance), at most that plus one source step.
    assert steps.min() >= 0.9 / 30 and steps.max() <= 2 / 30 + 1e-9, steps
    assert set(range(41, 60)) <= set(kept.tolist()), "the 30 fps part keeps every frame"


def test_decimator_restarts_when_time_goes_back() -> None:
    decimator = Decimator(1 / 30)
    kept = [decimator.keep(t) for t in (0.0, 1 / 60, 2 / 60, 0.0, 1 / 60)]
    assert kept == [True, False, True, True, False], "a loop starts over at its first frame"


def test_rates_from_timestamps() -> None:
    vfr = np.concatenate([np.arange(30) / 30, 29 / 30 + np.arange(1, 31) / 5])
    assert median_rate(vfr) == pytest.approx(5.0) and mean_rate(vfr) == pytest.approx(
        59 / 6.967, rel=1e-3
    )
    assert median_rate([0.0]) == 0.0 and mean_rate([1.0, 1.0]) == 0.0
    assert model_frame_rate([30.0, 29.97, 60.0, 0.0]) == pytest.approx(30.0)
    assert model_frame_rate([0.0]) is None
    for factor in (-1.0, 0.5, float("nan")):
        with pytest.raises(LuvnetError, match="decimate_above"):
            Timing(30.0, decimate_above=factor)


def test_a_60_fps_file_is_cached_as_the_30_fps_file_of_its_even_frames(tmp_path: Path) -> None:
    """Training and evaluation read clips from the cache: decimated, the same frames, the same
    crop (found from the first frames that remain) as the 30 fps recording."""
    frames = scan_frames(80)
    at60 = write_at_rate(tmp_path / "at60.mkv", frames, 60.0)
    at30 = write_at_rate(tmp_path / "at30.mkv", frames[::2], 30.0)
    assert video_rate(at60) == pytest.approx(60, rel=0.02) and source_rate(at60) > 59
    cache = FrameCache(tmp_path / "cache", PRE, timing=Timing(30.0))
    fast, slow = cache.load(at60), cache.load(at30)
    assert fast.decimated and not slow.decimated
    assert fast.n_frames == slow.n_frames == 40 and fast.source_frames == 80
    assert fast.kept == tuple(range(0, 80, 2)) and fast.source_index(29) == 58
    assert fast.box == slow.box and fast.detected
    np.testing.assert_array_equal(fast.frames(), slow.frames())
    np.testing.assert_allclose(np.diff(fast.timestamps), 1 / 30, atol=0.002)
    off = FrameCache(tmp_path / "cache", PRE, timing=Timing(30.0, decimate_above=0)).load(at60)
    assert not off.decimated and off.n_frames == 80


def test_a_slower_file_is_never_padded(tmp_path: Path) -> None:
    video = write_at_rate(tmp_path / "at15.mkv", scan_frames(20), 15.0)
    cached = FrameCache(tmp_path / "cache", PRE, timing=Timing(30.0)).load(video)
    assert not cached.decimated and cached.n_frames == cached.source_frames == 20
    np.testing.assert_allclose(np.diff(cached.timestamps), 1 / 15, atol=0.002)


def test_a_generated_vfr_file_is_cut_by_time(tmp_path: Path) -> None:
    times = np.concatenate([np.arange(40) / 120, 39 / 120 + np.arange(1, 41) / 30])
    video = write_timed(tmp_path / "vfr.mkv", scan_frames(80), times)
    decoded = read_video(video)
    np.testing.assert_allclose(decoded.timestamps, np.round(times, 3), atol=1e-9)
    cached = FrameCache(tmp_path / "cache", PRE, timing=Timing(30.0)).load(video)
    assert cached.decimated and cached.n_frames < 80
    steps = np.diff(cached.timestamps)
    assert steps.min() >= 0.9 / 30, "no two kept frames closer than the model's interval"


def handed(name: str) -> Path:
    path = CASES / name
    if not path.is_file():
        pytest.skip(f"handed case {path} is absent (../shared/cases not mounted)")
    return path


def test_handed_vfr_case_training_and_evaluation_know_each_frames_time(tmp_path: Path) -> None:
    """02_vfr.mp4: 30 frames 1/30 s apart, then 30 frames 1/5 s apart."""
    video = handed("02_vfr.mp4")
    cached = FrameCache(tmp_path / "cache", PRE, timing=Timing(30.0)).load(video)
    steps = np.diff(cached.timestamps)
    assert cached.n_frames == 60 and not cached.decimated, "all 60 frames, nothing padded"
    np.testing.assert_allclose(steps[:29], 1 / 30, atol=0.002)
    np.testing.assert_allclose(steps[30:], 1 / 5, atol=0.002)


def test_handed_vfr_case_clips_span_the_time_a_5_fps_model_was_trained_on(
    tmp_path: Path,
) -> None:
    """For a model trained at 5 fps the 30 fps part is thinned by timestamp, so each clip of
    the cached sequence spans (L - 1) / 5 s, in the fast part as in the slow one."""
    video = handed("02_vfr.mp4")
    cached = FrameCache(tmp_path / "cache", PRE, timing=Timing(5.0)).load(video)
    assert cached.decimated
    times = np.asarray(cached.timestamps)
    steps = np.diff(times)
    np.testing.assert_allclose(steps, 0.2, atol=0.04)
    length = 8
    spans = [times[s + length - 1] - times[s] for s in range(0, cached.n_frames - length + 1)]
    np.testing.assert_allclose(spans, (length - 1) / 5, atol=0.05)


def test_the_attention_plot_decimates_as_evaluation_does(tmp_path: Path) -> None:
    frames = scan_frames(80)
    at60 = write_at_rate(tmp_path / "at60.mkv", frames, 60.0)
    at30 = write_at_rate(tmp_path / "at30.mkv", frames[::2], 30.0)
    ckpt = load_checkpoint(DEMO_CHECKPOINT)
    fast, fast_frames, numbers = video_curves(ckpt, at60, None)
    slow, slow_frames, plain = video_curves(ckpt, at30, None)
    assert numbers.tolist() == list(range(0, 80, 2)) and plain.tolist() == list(range(40))
    np.testing.assert_array_equal(fast_frames, slow_frames)
    np.testing.assert_allclose(fast.probs, slow.probs, atol=1e-6)


def _h264_ts(path: Path, frames: np.ndarray, fps: int) -> Path:
    """H.264 with B-frames (packets out of presentation order) in MPEG-TS."""
    with av.open(str(path), "w", format="mpegts") as container:
        stream = container.add_stream("libx264", rate=fps, options={"bf": "3", "g": "12"})
        stream.height, stream.width = frames.shape[1:]
        stream.pix_fmt = "yuv420p"
        for image in frames:
            frame = av.VideoFrame.from_ndarray(np.stack([image] * 3, -1), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def test_recordings_joined_byte_for_byte_keep_their_own_rate(tmp_path: Path) -> None:
    # A restarted clock must not read as one span of twice the rate (which would decimate a
    # 40 fps recording to 20 fps), while B-frame reordering stays one clock.
    one = _h264_ts(tmp_path / "one.ts", scan_frames(60), fps=40)
    joined = tmp_path / "joined.ts"
    joined.write_bytes(one.read_bytes() * 2)
    for path in (one, joined):
        assert source_rate(path) == pytest.approx(40.0, rel=0.01), path.name
        assert video_rate(path) == pytest.approx(40.0, rel=0.01), path.name
    video = read_video(joined)
    assert len(video.frames) == 120 and video.fps == pytest.approx(40.0, rel=0.01)
    assert kept_indices(video.timestamps, Timing(30.0), video.fps) is None, "not decimated"


def test_b_frames_at_a_slow_rate_are_reordered_not_taken_for_a_new_clock() -> None:
    from luvnet.engine.data.timing import _presentation_order

    # Decode order I, then P B B per group, at 5 fps: each B-frame sits 0.4-0.6 s behind the
    # P-frame decoded before it (more than RESTART_S), yet it is one clock.
    order = [0] + [k for g in range(1, 40, 3) for k in (g + 2, g, g + 1)]
    decode_order = np.array(order, dtype=np.float64) / 5
    assert _presentation_order(decode_order).tolist() == sorted(decode_order.tolist())
    assert mean_rate(_presentation_order(decode_order)) == pytest.approx(5.0)
    restarted = np.concatenate([decode_order, decode_order])  # joined: the clock starts over
    presented = _presentation_order(restarted)
    assert presented.tolist() == sorted(decode_order.tolist()) * 2, "two clocks, each in order"
    assert mean_rate(presented) == pytest.approx(5.0)


def test_a_dicom_rate_is_its_headers_and_unknown_without_timing(tmp_path: Path) -> None:
    pytest.importorskip("pydicom", reason="the dicom extra is not installed")
    from tests.engine.data.test_dicom import write_dicom

    frames = scan_frames(6)
    timed = write_dicom(tmp_path / "timed.dcm", frames, "MONOCHROME2", FrameTime=20.0)
    untimed = write_dicom(tmp_path / "untimed.dcm", frames, "MONOCHROME2")
    assert video_rate(timed) == pytest.approx(50.0)
    # Nominally 1/30 s apart for replay, but no rate the model's could be measured from.
    assert video_rate(untimed) == 0.0
    assert model_frame_rate([video_rate(timed), video_rate(untimed)]) == pytest.approx(50.0)
