"""plugins.sources.pacing.TimestampPacer: a file replays with its own gaps, on the wall clock.

Waits are measured with time.monotonic; bounds are generous (a loaded CI machine oversleeps),
but one average rate could not pass them.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from luvnet.plugins.sources.pacing import TimestampPacer


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
