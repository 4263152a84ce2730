"""The stream's timing and start-up window through ``luvnet stream``: decimation to the model's
frame rate by timestamp, the calibration frames kept (a full window at frame 29), short files
scored. The demo model records the rate it was trained at (30 fps, the phantom's)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from luvnet.engine.model.checkpoint import load_checkpoint
from luvnet.streamer.compose import DEMO_CHECKPOINT
from tests.streamer.test_stream import run_stream
from tests.timed_videos import scan_frames, write_at_rate


def stream_file(video: Path, *args: str) -> tuple[str, list[dict]]:
    result, sub = run_stream("--source", f"file:{video}", "--as-fast-as-possible", *args)
    assert result.returncode == 0, result.stderr
    return result.stderr, sub.of_kind("scores")


def probabilities(messages: list[dict]) -> np.ndarray:
    return np.array([[m["scores"][name] for name in m["patterns"]] for m in messages])


def test_demo_model_records_the_rate_it_was_trained_at() -> None:
    assert load_checkpoint(DEMO_CHECKPOINT).config.frame_rate == 30.0


def test_a_60_fps_file_is_decimated_to_the_models_30_fps(tmp_path: Path) -> None:
    """Every second frame is scored, with the scores of the 30 fps recording of those frames;
    ``--decimate-above 0`` scores every frame."""
    frames = scan_frames(80)
    at60 = write_at_rate(tmp_path / "at60.mkv", frames, 60.0)
    at30 = write_at_rate(tmp_path / "at30.mkv", frames[::2], 30.0)
    log60, fast = stream_file(at60)
    _, slow = stream_file(at30)
    assert [m["frame"] for m in fast] == list(range(0, 80, 2))
    assert [m["fill"] for m in fast] == [m["fill"] for m in slow]
    np.testing.assert_allclose(probabilities(fast), probabilities(slow), atol=1e-6)
    assert "model trained at 30.00 fps: decimated to the model rate by timestamp" in log60
    log_off, every = stream_file(at60, "--decimate-above", "0")
    assert [m["frame"] for m in every] == list(range(80))
    assert "every frame used (--decimate-above 0)" in log_off


def test_the_calibration_frames_are_scored_and_frame_29_has_a_full_window(tmp_path: Path) -> None:
    video = write_at_rate(tmp_path / "scan.mkv", scan_frames(45), 30.0)
    log, scores = stream_file(video)
    assert [m["frame"] for m in scores] == list(range(45)), "no frame lost to the calibration"
    fills = [m["fill"] for m in scores]
    assert fills == list(range(1, 31)) + [30] * 15, fills
    assert "every frame used" in log, "the start-up says source and model rates"


def test_a_video_shorter_than_the_calibration_is_scored(tmp_path: Path) -> None:
    video = write_at_rate(tmp_path / "short.mkv", scan_frames(12), 30.0)
    _, scores = stream_file(video)
    assert [m["frame"] for m in scores] == list(range(12))
    assert [m["fill"] for m in scores] == list(range(1, 13))
