"""The recorder's disk fills up: a one-line error from `luvnet record`, a file that still parses
line by line, and a stream (a separate process) that never notices.

tests/plugins/test_listen_record.py::test_record_disk_full_is_one_line_error checks the message
against /dev/full with a stand-in feed; here the stream is the real `luvnet stream` process and
the disk a real (tiny) file system that fills part-way through a line.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from luvnet.streamer.publisher import ScorePublisher
from tests.reliability.helpers import Collector, LuvnetProcess, stream_args, wait_until
from tests.streamer.conftest import free_port
from tests.streamer.message_factory import make_score, make_status


@pytest.mark.slow
@pytest.mark.skipif(not os.access("/dev/full", os.W_OK), reason="needs a writable /dev/full")
def test_a_full_disk_stops_the_recorder_and_the_stream_carries_on(
    tiny_checkpoint, short_video, tmp_path
):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    collector = Collector(endpoint)
    stream = LuvnetProcess(
        stream_args(endpoint, tiny_checkpoint, f"file:{short_video}", "--loop"),
        tmp_path / "stream.log",
    )
    recorder = None
    try:
        wait_until(lambda: len(collector.scores()) >= 10, 120, "the stream publishes")
        recorder = LuvnetProcess(
            ["record", "--out", "/dev/full", "--endpoint", endpoint], tmp_path / "record.log"
        )
        assert recorder.wait(60) == 2, recorder.stderr
        heard = len(collector.scores())
        wait_until(lambda: len(collector.scores()) >= heard + 30, 60, "scores after the failure")
        assert stream.alive(), stream.stderr
        stream.signal(signal.SIGTERM)
        assert stream.wait(30) == 0, stream.stderr
    finally:
        for process in (stream, recorder):
            if process is not None:
                process.kill()
        collector.close()
    assert recorder.stderr == (
        "luvnet record: error: --out /dev/full: write failed (No space left on device); "
        "recording stopped\n"
    )
    assert collector.sub.gap_count == 0, "the stream lost nothing while the recorder failed"
    assert "Traceback" not in stream.stderr


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs: fills after about 30 score lines. Needs root (mount)."""
    mount = shutil.which("mount")
    point = tmp_path / "disk"
    point.mkdir()
    if os.geteuid() != 0 or mount is None:
        pytest.skip("needs root and mount(8) for a tiny tmpfs")
    done = subprocess.run(
        [mount, "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(point)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield point
    subprocess.run(["umount", str(point)], check=True)


@pytest.fixture
def feed() -> Iterator[str]:
    with ScorePublisher("tcp://127.0.0.1:*") as pub:
        stop = threading.Event()

        def loop() -> None:
            frame = 0
            while not stop.wait(0.005):
                pub.publish(make_score(frame=frame))
                frame += 1
                if frame % 30 == 0:
                    pub.publish(make_status())

        worker = threading.Thread(target=loop, daemon=True)
        worker.start()
        yield pub.endpoint
        stop.set()
        worker.join(5)


def test_a_disk_filling_mid_line_leaves_only_whole_lines(tiny_disk: Path, feed: str, tmp_path):
    out = tiny_disk / "rec.jsonl"
    earlier = json.dumps({"kind": "end", "messages": 0}) + "\n"
    out.write_text(earlier)  # an earlier recording in the same file must survive intact
    for attempt in range(2):  # the second starts on a disk that is already full
        recorder = LuvnetProcess(
            ["record", "--out", str(out), "--endpoint", feed], tmp_path / f"rec{attempt}.log"
        )
        try:
            assert recorder.wait(60) == 2, recorder.stderr
        finally:
            recorder.kill()
        assert recorder.stderr.endswith(
            "write failed (No space left on device); recording stopped\n"
        )
        assert recorder.stderr.count("\n") == 1
        data = out.read_bytes()
        assert data.endswith(b"\n") and data.startswith(earlier.encode())
        records = [json.loads(line) for line in data.splitlines()]  # each line whole JSON
        assert [r["kind"] for r in records[1:]].count("scores") > 10
