"""A live stream never dies on a bad frame or a failing source: it reports and carries on."""

from __future__ import annotations

import threading

import numpy as np

from luvnet.streamer.compose import StreamSettings, compose_stream
from luvnet.streamer.frame_source import SourceEnded, SourceError, SourceFrame
from luvnet.streamer.protocol import ScoreMessage, StatusMessage


class ScriptedSource:
    """A third-party-style source: noise frames, with faults injected at given indices."""

    retry_open = True

    def __init__(self, frames: int, *, raise_at=(), bad_at=(), fail_opens: int = 0) -> None:
        self.name = "scripted"
        self.frames, self.raise_at, self.bad_at = frames, set(raise_at), set(bad_at)
        self.fail_opens = fail_opens
        self.index = 0
        self.opens = 0
        self.rng = np.random.default_rng(0)

    @property
    def fps(self) -> float:
        return 30.0

    def open(self) -> None:
        self.opens += 1
        if self.opens <= self.fail_opens:
            raise SourceError(f"scripted: device busy (attempt {self.opens})")

    def read(self) -> SourceFrame:
        i = self.index
        self.index += 1
        if i >= self.frames:
            raise SourceEnded("scripted")
        if i in self.raise_at:
            self.raise_at.discard(i)
            raise OSError("capture card unplugged")
        if i in self.bad_at:
            return SourceFrame(image=np.zeros((0, 5), np.uint8))  # an empty frame
        return SourceFrame(image=self.rng.integers(0, 255, (60, 80, 3), dtype=np.uint8))

    def close(self) -> None:
        pass


def run_pipeline(tiny_checkpoint, source):
    messages: list = []
    settings = StreamSettings(checkpoint=tiny_checkpoint, realtime=False, crop_box=(0, 0, 80, 60))
    pipeline = compose_stream(settings, messages.append, source=source)
    pipeline.grabber.backoff_initial_s = 0.01
    published = pipeline.run(threading.Event())
    scores = [m for m in messages if isinstance(m, ScoreMessage)]
    statuses = [m for m in messages if isinstance(m, StatusMessage)]
    return published, scores, statuses, pipeline


def test_source_raising_midway_reconnects_and_resets_the_window(tiny_checkpoint):
    source = ScriptedSource(50, raise_at={20})
    published, scores, statuses, pipeline = run_pipeline(tiny_checkpoint, source)
    assert published == 49, "every frame but the failed read is scored"
    assert pipeline.grabber.reconnects == 1 and source.opens == 2
    fills = [m.fill for m in scores]
    assert fills[19] == 20 and fills[20] == 1, "the window restarts after a reconnect"
    assert "capture card unplugged" in statuses[-1].last_error
    assert statuses[-1].state == "ended"


def test_bad_frame_is_skipped_and_reported(tiny_checkpoint):
    source = ScriptedSource(30, bad_at={7})
    published, scores, statuses, pipeline = run_pipeline(tiny_checkpoint, source)
    assert published == 29 and pipeline.counters.failed_frames == 1
    assert [m.frame for m in scores] == [i for i in range(30) if i != 7]
    assert "frame 7" in statuses[-1].last_error


def test_open_failures_back_off_then_stream(tiny_checkpoint):
    source = ScriptedSource(10, fail_opens=3)
    published, _, statuses, _ = run_pipeline(tiny_checkpoint, source)
    assert source.opens == 4 and published == 10
    assert "device busy" in statuses[-1].last_error
