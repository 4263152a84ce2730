"""The capture source disappears, flaps, hangs or fails for good: the stream reports it, backs
off, and resumes by itself when the source comes back.

Complements tests/streamer/test_faults.py (one failed read -> reconnect and window reset; one
bad frame skipped; open failures backed off), whose ScriptedSource these tests extend.
"""

from __future__ import annotations

import logging
import re
import shutil
import signal
import subprocess
import threading
import time

import cv2
import numpy as np
import pytest

from luvnet.streamer.compose import StreamSettings, compose_stream
from luvnet.streamer.frame_source import SourceError, SourceFrame
from luvnet.streamer.grabber import FrameGrabber
from luvnet.streamer.protocol import ScoreMessage, StatusMessage
from tests.reliability.helpers import (
    Collector,
    LuvnetProcess,
    free_udp_port,
    group_members,
    stream_args,
    wait_until,
)
from tests.streamer.conftest import free_port, write_video
from tests.streamer.test_faults import ScriptedSource

FFMPEG = shutil.which("ffmpeg")
OPENCV_HAS_FFMPEG = re.search(r"FFMPEG:\s+YES", cv2.getBuildInformation()) is not None


def start_ffmpeg(clip, port: int) -> subprocess.Popen:
    """A live MPEG-TS stream over UDP on loopback, looping ``clip`` at its own frame rate."""
    return subprocess.Popen(
        [
            FFMPEG or "ffmpeg",
            *("-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", str(clip)),
            *("-c:v", "mpeg4", "-g", "10", "-f", "mpegts", f"udp://127.0.0.1:{port}"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.slow
@pytest.mark.skipif(FFMPEG is None, reason="needs the ffmpeg program to send a live UDP stream")
@pytest.mark.skipif(not OPENCV_HAS_FFMPEG, reason="this OpenCV build has no FFmpeg backend")
def test_live_udp_source_disappears_and_the_stream_resumes_by_itself(tiny_checkpoint, tmp_path):
    clip = write_video(tmp_path / "clip.mp4", frames=60)
    udp = free_udp_port()
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    sender = start_ffmpeg(clip, udp)
    collector = Collector(endpoint)
    stream = LuvnetProcess(
        stream_args(endpoint, tiny_checkpoint, f"udp://127.0.0.1:{udp}"), tmp_path / "stream.log"
    )
    try:
        wait_until(lambda: len(collector.scores()) >= 20, 120, "scores from the live UDP source")
        sender.kill()  # the scanner's network stream disappears
        sender.wait(10)

        def reconnecting() -> list[StatusMessage]:
            return [s for s in collector.statuses() if s.state == "reconnecting"]

        # Status keeps coming while the source is away (read timeout 5 s, then backoff).
        wait_until(lambda: len(reconnecting()) >= 3, 60, "three status messages while away")
        before = len(collector.scores())
        sender = start_ffmpeg(clip, udp)  # ... and comes back
        wait_until(lambda: len(collector.scores()) >= before + 20, 120, "scores after it returned")
        stream.signal(signal.SIGTERM)
        assert stream.wait(30) == 0, stream.stderr
    finally:
        sender.kill()
        stream.kill()
        collector.close()
    scores, statuses = collector.scores(), collector.statuses()
    away = reconnecting()
    assert all(f"udp://127.0.0.1:{udp}" in (s.last_error or "") for s in away), away[-1]
    assert any(s.state == "running" for s in statuses[statuses.index(away[-1]) :]), (
        "the status must say running again after the reconnect"
    )
    resumed = scores[before:]
    assert resumed[0].fill == 1, "the window restarts after a reconnect (no mixing of streams)"
    assert resumed[0].frame > scores[before - 1].frame, "frame numbers keep counting"
    assert collector.sub.gap_count == 0, "nothing the stream published was lost"
    assert "Traceback" not in stream.stderr
    assert group_members(stream.pid) == [], "the stream left processes behind"


class FlappingSource:
    """Opens every time, then fails its first read ``failures`` times before delivering
    ``frames`` frames, then fails once more (a camera that accepts connections first)."""

    retry_open = True
    name = "flapping"

    def __init__(self, failures: int, frames: int) -> None:
        self.script = ["fail"] * failures + ["frame"] * frames + ["fail"]
        self.opens: list[float] = []

    @property
    def fps(self) -> float:
        return 30.0

    def open(self) -> None:
        self.opens.append(time.monotonic())

    def read(self) -> SourceFrame:
        step = self.script.pop(0) if self.script else "hang"
        if step == "frame":
            return SourceFrame(image=np.zeros((8, 8), np.uint8))
        if step == "hang":
            time.sleep(0.05)
        raise SourceError("flapping: read failed")

    def close(self) -> None:
        pass


def test_a_source_failing_right_after_each_reopen_backs_off_and_resets_after_a_frame(caplog):
    source = FlappingSource(failures=5, frames=3)
    grabber = FrameGrabber(source, backoff_initial_s=0.05, backoff_max_s=0.4)
    with caplog.at_level(logging.WARNING, logger="luvnet.streamer.grabber"):
        grabber.start()
        wait_until(lambda: len(source.opens) >= 7, 30, "seven opens")
        grabber.stop()
    delays = [float(m) for m in re.findall(r"retrying in ([\d.]+) s", caplog.text)][:6]
    # %.1f of 0.05, 0.1, 0.2, 0.4 (cap), 0.4, then 0.05 again after frames arrived.
    assert delays == [0.1, 0.1, 0.2, 0.4, 0.4, 0.1], caplog.text
    waits = np.diff(source.opens[:6])
    scheduled = np.array([0.05, 0.1, 0.2, 0.4, 0.4])
    assert (waits >= scheduled * 0.95).all(), f"reopened sooner than backed off: {waits}"
    assert grabber.captured == 3


def pipeline_in_thread(tiny_checkpoint, source, messages: list):
    # Block policy: every frame the source delivers is scored, so counts are exact.
    settings = StreamSettings(checkpoint=tiny_checkpoint, realtime=False, crop_box=(0, 0, 80, 60))
    pipeline = compose_stream(settings, messages.append, source=source)
    pipeline.grabber.backoff_initial_s = 0.01
    pipeline.grabber.backoff_max_s = 0.2
    stop = threading.Event()
    worker = threading.Thread(target=pipeline.run, args=(stop,), daemon=True)
    worker.start()
    return pipeline, stop, worker


def statuses_of(messages: list) -> list[StatusMessage]:
    return [m for m in list(messages) if isinstance(m, StatusMessage)]


def test_a_source_that_never_opens_keeps_reporting_until_stopped(tiny_checkpoint):
    messages: list = []
    source = ScriptedSource(10, fail_opens=10**9)
    pipeline, stop, worker = pipeline_in_thread(tiny_checkpoint, source, messages)
    wait_until(lambda: len(statuses_of(messages)) >= 3, 30, "three status messages")
    stop.set()
    worker.join(10)
    assert not worker.is_alive(), "stop was not honoured while the source kept failing"
    statuses = statuses_of(messages)
    assert all(s.state == "reconnecting" for s in statuses[1:-1]), [s.state for s in statuses]
    assert "device busy" in statuses[-1].last_error
    assert not any(isinstance(m, ScoreMessage) for m in messages)
    # Backed off to the 0.2 s cap: about 10 opens in the first second, not hundreds.
    per_status = source.opens / max(1, len(statuses))
    assert per_status < 50, f"{source.opens} opens for {len(statuses)} status messages"


class HangingSource(ScriptedSource):
    """Delivers a few frames, then a read that never returns (a driver that locked up)."""

    def __init__(self, frames: int) -> None:
        super().__init__(10**9)
        self.good = frames
        self.release = threading.Event()

    def read(self) -> SourceFrame:
        if self.index >= self.good:
            self.release.wait(120)
        return super().read()


def test_a_hung_source_shows_as_zero_input_fps_and_does_not_block_stopping(tiny_checkpoint):
    messages: list = []
    source = HangingSource(frames=5)
    pipeline, stop, worker = pipeline_in_thread(tiny_checkpoint, source, messages)
    try:
        wait_until(
            lambda: (
                [s.input_fps for s in statuses_of(messages)][-2:] == [0.0, 0.0]
                and pipeline.counters.published == 5
            ),
            60,
            "two status messages with no input after the source hung",
        )
        stop.set()
        worker.join(10)
        assert not worker.is_alive(), "a hung read must not keep the stream from stopping"
    finally:
        source.release.set()
    last = statuses_of(messages)[-1]
    # No watchdog: a read that never returns is not an error the grabber can see. What a
    # consumer sees is input_fps 0 with state still "running" (docs/reliability.md).
    assert last.frames_captured == 5 and last.frames_published == 5


def test_a_source_that_cannot_be_retried_ends_the_stream_with_state_error(tiny_checkpoint):
    messages: list = []
    source = ScriptedSource(10, fail_opens=1)
    source.retry_open = False  # e.g. a file that will not open: waiting will not help
    pipeline, stop, worker = pipeline_in_thread(tiny_checkpoint, source, messages)
    worker.join(30)
    assert not worker.is_alive(), "the stream must end by itself"
    last = statuses_of(messages)[-1]
    assert last.state == "error" and "device busy" in last.last_error
    assert source.opens == 1, "a source that says it cannot be retried is not retried"


@pytest.mark.parametrize("policy", ["latest", "block"])
def test_every_captured_frame_is_taken_dropped_or_left_in_the_slot(policy):
    """The accounting bench.soak checks at the end of a run: nothing captured goes uncounted,
    also when the stream stops while the grabber holds a frame it could not hand over."""
    source = ScriptedSource(10**9)
    grabber = FrameGrabber(source, policy=policy).start()
    taken = sum(grabber.get(timeout_s=5) is not None for _ in range(20))
    wait_until(lambda: grabber.captured >= taken + 1, 10, "a frame waiting in the slot")
    time.sleep(0.1)  # "block": the grabber now waits in _put with the next frame in hand
    grabber.stop()
    left = 1 if grabber.get(timeout_s=0) is not None else 0
    assert taken == 20 and left == 1
    assert grabber.captured == taken + grabber.dropped + left, (
        f"captured {grabber.captured}, taken {taken}, dropped {grabber.dropped}, left {left}"
    )
