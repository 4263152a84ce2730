"""plugins.sources.pacing.TimestampPacer: a file replays with its own gaps, on the wall clock.

Waits are measured with time.monotonic; bounds are generous (a loaded CI machine oversleeps),
but one average rate could not pass them.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from luvnet.plugins.sources.capture import FileSource
from luvnet.plugins.sources.pacing import TimestampPacer
from luvnet.streamer.frame_source import SourceOptions
from tests.timed_videos import scan_frames, write_at_rate


def gaps_ms(pacer: TimestampPacer, timestamps: list[float]) -> list[float]:
    times = []
    for pts in timestamps:
        pacer.wait(pts)
        times.append(time.monotonic())
    return list(np.diff(times) * 1000)


def test_each_frame_waits_for_its_own_timestamp():
    gaps = gaps_ms(TimestampPacer(), [10.0, 10.03, 10.06, 10.26, 10.46])  # the file's own clock
    assert all(25 <= g <= 60 for g in gaps[:2]), gaps
    assert all(190 <= g <= 240 for g in gaps[2:]), gaps


def test_a_step_back_repeats_the_last_step_and_a_jump_is_held_at_most_max_gap():
    # 0.1 -> 0.0: a loop's restart (or a broken timestamp) waits one ordinary step, not none.
    gaps = gaps_ms(TimestampPacer(max_gap_s=0.3), [0.0, 0.1, 0.0, 100.0])
    assert 90 <= gaps[1] <= 140, gaps
    assert 290 <= gaps[2] <= 350, gaps  # a 100 s discontinuity plays after 0.3 s


def test_a_repeated_timestamp_still_takes_a_step():
    # A single-frame file looped gives pts 0.0 again and again: each must wait a frame time
    # (the previous step, else default_step_s), not spin the source as fast as the CPU allows.
    gaps = gaps_ms(TimestampPacer(default_step_s=0.05), [0.0, 0.0, 0.0, 0.0])
    assert all(40 <= g <= 90 for g in gaps), gaps
    gaps = gaps_ms(TimestampPacer(), [0.0, 0.1, 0.1])
    assert 90 <= gaps[1] <= 140, gaps


def test_a_looped_single_frame_file_replays_at_its_rate_not_as_fast_as_the_cpu(tmp_path: Path):
    still = write_at_rate(tmp_path / "still.mkv", scan_frames(1), 20.0)
    source = FileSource(still, SourceOptions(loop=True))
    source.open()
    try:
        start = time.monotonic()
        frames = [source.read() for _ in range(6)]
        elapsed = time.monotonic() - start
    finally:
        source.close()
    assert [f.meta["file_frame"] for f in frames] == [0] * 6
    assert elapsed >= 5 * 0.8 / (source.fps or 30.0), f"6 reads in {elapsed * 1000:.0f} ms"


def test_late_frames_restart_the_schedule_instead_of_bursting():
    pacer = TimestampPacer()
    pacer.wait(0.0)
    time.sleep(0.3)  # the consumer stalled for ten frames
    start = time.monotonic()
    for pts in (0.033, 0.066):
        pacer.wait(pts)
    assert time.monotonic() - start >= 0.025, "the frame after a late one keeps its own gap"


def test_max_gap_must_be_positive():
    with pytest.raises(ValueError, match="max_gap_s"):
        TimestampPacer(max_gap_s=0)
    with pytest.raises(ValueError, match="default_step_s"):
        TimestampPacer(default_step_s=0)
