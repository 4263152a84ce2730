"""``luvnet listen`` and ``luvnet record`` through the real CLI against a live loopback stream."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import zmq

from luvnet import cli
from luvnet.streamer.protocol import ScoreMessage
from luvnet.streamer.publisher import ScorePublisher
from tests.streamer.message_factory import make_score, make_status

REPO = Path(__file__).resolve().parents[2]
ANY_PORT = "tcp://127.0.0.1:*"


def run_in_background(step: Callable[[], None]) -> Callable[[], None]:
    """Call ``step`` every 10 ms in a thread until the returned function is called."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            step()
            stop.wait(0.01)

    worker = threading.Thread(target=loop, daemon=True)
    worker.start()

    def finish() -> None:
        stop.set()
        worker.join()

    return finish


@pytest.fixture
def feed() -> Iterator[str]:
    """A stand-in pipeline: a status then three scores every 10 ms, through ScorePublisher."""
    pub = ScorePublisher(ANY_PORT)
    frames = iter(range(10**9))

    def step() -> None:
        pub.publish(make_status(frames_dropped=7))
        for _ in range(3):
            pub.publish(make_score(frame=next(frames), capture_ns=time.monotonic_ns()))

    finish = run_in_background(step)
    yield pub.endpoint
    finish()
    pub.close()


@pytest.fixture
def lossy_feed() -> Iterator[str]:
    """Scores whose seq runs 0,1,2, 5,6,7, 10,...: two lost after every three, on a bare socket."""
    context = zmq.Context()
    sock = context.socket(zmq.PUB)
    sock.linger = 0
    sock.bind(ANY_PORT)
    blocks = iter(range(10**9))

    def step() -> None:
        block = next(blocks)
        for seq in range(5 * block, 5 * block + 3):
            sock.send_multipart(dataclasses.replace(make_score(), seq=seq, session=1).encode())

    finish = run_in_background(step)
    yield sock.getsockopt_string(zmq.LAST_ENDPOINT)
    finish()
    sock.close()
    context.term()


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --------------------------------------------------------------------------- listen


def test_listen_shows_scores_flags_latency_drops_and_status(
    feed: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["listen", "--endpoint", feed, "--count", "6"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    scores = [line for line in lines if line.startswith("seq ")]
    assert len(scores) == 6, f"expected 6 score lines, got {lines}"
    # a_lines 0.9 >= 0.5 is flagged, b_lines 0.2 < 0.4 is not
    assert all("a_lines 0.90*" in line and "b_lines 0.20 " in line for line in scores)
    assert all("fill 12/30" in line and " ms | drops " in line for line in scores)
    assert any(line.endswith("drops 7") for line in scores), "drops come from the last status"
    assert any(line.startswith("status seq") and "phantom:seed=1 running" in line for line in lines)
    assert "0 gaps" in err and "0 malformed" in err


def test_listen_times_out_with_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    with ScorePublisher(ANY_PORT) as silent:
        rc = cli.main(["listen", "--endpoint", silent.endpoint, "--timeout", "0.3"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err == f"luvnet listen: error: no message from {silent.endpoint} within 0.3 s\n"


def test_listen_with_missing_keys_is_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["listen", "--curve-keys", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--curve-keys" in err and "not a directory" in err


def test_listen_stops_cleanly_on_sigterm(feed: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "luvnet.cli", "listen", "--endpoint", feed],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = proc.stdout.readline() if proc.stdout else ""
    assert first, "listen printed nothing"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "messages," in err and "Traceback" not in err


# --------------------------------------------------------------------------- record


def test_record_appends_every_message_as_json_lines(
    feed: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run.jsonl"
    assert cli.main(["record", "--out", str(out), "--endpoint", feed, "--count", "12"]) == 0
    records = read_jsonl(out)
    end = records[-1]
    assert end["kind"] == "end" and end["scores"] == 12 and end["gaps"] == 0
    scores = [r for r in records if r["kind"] == "scores"]
    first = scores[0]["seq"]
    assert [r["seq"] for r in scores] == list(range(first, first + 12))
    assert any(r["kind"] == "status" and r["frames_dropped"] == 7 for r in records)
    expected_keys = set(make_score().to_dict())
    assert set(scores[0]) == expected_keys
    assert np.array(scores[0]["attention"]).shape == (4, 30)
    assert scores[0]["flags"]["a_lines"] is True
    assert "recorded" in capsys.readouterr().err

    assert cli.main(["record", "--out", str(out), "--endpoint", feed, "--count", "2"]) == 0
    assert [r["kind"] for r in read_jsonl(out)].count("end") == 2, "a second run appends"


def test_record_writes_gaps_in_the_file_and_reports_them(
    lossy_feed: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "lossy.jsonl"
    assert cli.main(["record", "--out", str(out), "--endpoint", lossy_feed, "--count", "8"]) == 0
    records = read_jsonl(out)
    gaps = [i for i, r in enumerate(records) if r["kind"] == "gap"]
    assert len(gaps) >= 2  # any 8 consecutive messages of 0,1,2,5,6,7,... hold two jumps
    for i in gaps:
        gap, after = records[i], records[i + 1]
        assert gap["of"] == "scores" and gap["missed"] == 2 == gap["got"] - gap["expected"]
        assert after["kind"] == "scores" and after["seq"] == gap["got"]
    assert records[-1]["gaps"] == len(gaps) and records[-1]["missed"] == 2 * len(gaps)
    err = capsys.readouterr().err
    assert f"{len(gaps)} gaps ({2 * len(gaps)} messages lost)" in err
    assert "lost" in err.splitlines()[-1]  # the last gaps are listed one per line


@pytest.mark.skipif(not os.access("/dev/full", os.W_OK), reason="needs a writable /dev/full")
def test_record_disk_full_is_one_line_error(feed: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["record", "--out", "/dev/full", "--endpoint", feed, "--count", "1000"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err == (
        "luvnet record: error: --out /dev/full: write failed (No space left on device); "
        "recording stopped\n"
    )


def test_record_to_a_missing_directory_is_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "no-such-dir" / "x.jsonl"
    assert cli.main(["record", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    reason = "cannot open for appending (No such file or directory)"
    assert err == f"luvnet record: error: --out {out}: {reason}\n"


def test_record_flushes_and_closes_the_file_on_sigint(feed: str, tmp_path: Path) -> None:
    out = tmp_path / "live.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "luvnet.cli", "record", "--out", str(out), "--endpoint", feed],
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
    )
    for _ in range(600):  # until the first flush shows the recording is under way
        if out.exists() and out.stat().st_size > 0:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    records = read_jsonl(out)  # every line complete: json.loads would fail on a torn one
    messages = [r for r in records if r["kind"] in ("scores", "status")]
    assert records[-1]["kind"] == "end" and records[-1]["messages"] == len(messages)
    assert any(r["kind"] == ScoreMessage.kind for r in messages)


def test_record_flushes_while_the_stream_is_quiet_and_ends_with_it(tmp_path: Path) -> None:
    out = tmp_path / "quiet.jsonl"
    with ScorePublisher(ANY_PORT) as pub:
        proc = subprocess.Popen(
            [sys.executable, "-m", "luvnet.cli", "record", "--out", str(out)]
            + ["--endpoint", pub.endpoint, "--timeout", "120"],
            cwd=REPO,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert pub.wait_for_subscriber(60), "record never subscribed"
            pub.publish(make_status())
            for frame in range(3):
                pub.publish(make_score(frame=frame))
            # Nothing more arrives: the four lines must still reach the file within a second.
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and len(out.read_text().splitlines()) < 4:
                time.sleep(0.05)
            assert len(out.read_text().splitlines()) == 4, "unflushed while the stream is quiet"
            assert proc.poll() is None, "the stream has not ended yet"
            pub.publish(make_status(state="ended"))
            _, err = proc.communicate(timeout=30)  # ends by itself, no signal
        finally:
            proc.kill()
    assert proc.returncode == 0, err
    records = read_jsonl(out)
    assert [r["kind"] for r in records] == ["status", *["scores"] * 3, "status", "end"]
    assert "the stream ended (default)" in err and "recorded 5 messages (3 scores)" in err


def test_record_times_out_with_one_line_error_and_a_closed_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "silent.jsonl"
    with ScorePublisher(ANY_PORT) as silent:
        argv = ["record", "--out", str(out), "--endpoint", silent.endpoint, "--timeout", "0.3"]
        rc = cli.main(argv)
    err = capsys.readouterr().err
    assert rc == 2
    assert err.splitlines()[-1] == (
        f"luvnet record: error: no message from {silent.endpoint} within 0.3 s"
    )
    assert [r["kind"] for r in read_jsonl(out)] == ["end"]
