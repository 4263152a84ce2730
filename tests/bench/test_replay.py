"""The bench's in-memory replay source and the pacer it shares with the phantom."""

from __future__ import annotations

import time

import numpy as np
import pytest

from luvnet.bench.replay import ReplaySource
from luvnet.plugins.sources.pacing import Pacer


def test_replay_cycles_its_frames_in_order():
    frames = [np.full((4, 4), i, np.uint8) for i in range(3)]
    source = ReplaySource(frames, fps=1000.0, name="clip")
    source.open()
    seen = [int(source.read().image[0, 0]) for _ in range(7)]
    assert seen == [0, 1, 2, 0, 1, 2, 0]
    assert source.name == "clip@1000fps" and source.fps == 1000.0


def test_pacer_holds_frames_to_the_rate():
    pacer = Pacer(100.0)
    start = time.monotonic()
    for _ in range(11):
        pacer.wait()
    # Ten periods must have passed between the first and the last frame (a lower bound on
    # correctness of pacing, not a speed claim).
    assert time.monotonic() - start >= 0.1 - 1e-3


def test_pacer_restarts_instead_of_bursting_after_a_stall():
    pacer = Pacer(100.0)
    pacer.wait()
    time.sleep(0.1)  # ten frames late
    pacer.wait()  # restarts the schedule at now
    start = time.monotonic()
    pacer.wait()  # so the next frame is held a whole period, not released at once
    assert time.monotonic() - start >= 0.01 - 1e-3


@pytest.mark.parametrize("fps", [0.0, -5.0])
def test_pacer_refuses_a_rate_that_is_not_positive(fps):
    with pytest.raises(ValueError, match="fps"):
        Pacer(fps)


def test_replay_needs_frames():
    with pytest.raises(ValueError, match="at least one frame"):
        ReplaySource([], fps=30.0)
