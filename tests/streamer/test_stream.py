"""The live stream end to end: real video, real model code, real ZeroMQ on loopback.

The subscriber here is deliberately independent of luvnet: plain pyzmq + msgpack, reading
the wire format of docs/protocol.md.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import msgpack
import numpy as np
import pytest
import zmq

from tests.streamer.conftest import free_port

PATTERNS = ["a_lines", "b_lines", "consolidation", "pleural_effusion"]


class PlainSubscriber:
    """Collects every message on a background thread until stopped."""

    def __init__(self, endpoint: str) -> None:
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.SUB)
        self.socket.linger = 0
        self.socket.setsockopt(zmq.SUBSCRIBE, b"luvnet")
        self.socket.connect(endpoint)
        self.messages: list[tuple[bytes, dict]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        while not self._stop.is_set():
            if poller.poll(50):
                topic, body = self.socket.recv_multipart()
                self.messages.append((topic, msgpack.unpackb(body, raw=False)))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.socket.close()
        self.context.term()

    def of_kind(self, kind: str) -> list[dict]:
        return [body for topic, body in self.messages if topic.endswith(kind.encode())]


def run_stream(*args: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess, list]:
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    sub = PlainSubscriber(endpoint)
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "luvnet.cli",
                "stream",
                "--bind",
                endpoint,
                "--quiet",
                "--wait-subscriber",
                "20",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        time.sleep(0.3)  # let the last messages arrive
    finally:
        sub.close()
    return result, sub


def test_file_stream_publishes_every_frame(tiny_checkpoint, short_video):
    result, sub = run_stream(
        "--source",
        f"file:{short_video}",
        "--checkpoint",
        str(tiny_checkpoint),
        "--as-fast-as-possible",
    )
    assert result.returncode == 0, result.stderr
    scores = sub.of_kind("scores")
    assert len(scores) == 45, f"expected 45 score messages, got {len(scores)}"
    assert [m["seq"] for m in scores] == list(range(45)), "seq must be contiguous from 0"
    assert [m["frame"] for m in scores] == list(range(45))
    fills = [m["fill"] for m in scores]
    assert max(fills) == 30 and fills[-1] == 30, fills
    first = scores[0]
    for key, kind in {
        "v": int,
        "stream_id": str,
        "seq": int,
        "frame": int,
        "capture_ns": int,
        "publish_ns": int,
        "fill": int,
        "window": int,
        "scores": dict,
        "thresholds": dict,
        "attention": dict,
        "latency_ms": dict,
        "model_id": str,
        "backend": str,
        "device": str,
    }.items():
        assert key in first, f"missing field {key}: {sorted(first)}"
        assert isinstance(first[key], kind), f"{key}: expected {kind}, got {type(first[key])}"
    for message in scores:
        assert set(message["scores"]) == set(PATTERNS)
        assert all(0.0 <= p <= 1.0 for p in message["scores"].values())
        assert message["publish_ns"] >= message["capture_ns"]
        attention = message["attention"]
        assert attention["dtype"] == "<f2" and attention["shape"] == [4, 30]
        curve = np.frombuffer(attention["data"], dtype="<f2").reshape(4, 30)
        # Per pattern, the heads' weights each sum to 1 over the real frames.
        assert np.allclose(curve.sum(1), 8.0, atol=0.05), curve.sum(1)
        assert not curve[:, message["fill"] :].any(), "padding must carry no attention"
        assert {"preprocess", "embed", "head"} <= set(message["latency_ms"])
    statuses = sub.of_kind("status")
    assert statuses, "no status message"
    assert statuses[-1]["state"] == "ended" and statuses[-1]["frames_published"] == 45
    # A final state only after the last score: `luvnet record` stops at the first one.
    order = [(topic.endswith(b"scores"), body.get("state")) for topic, body in sub.messages]
    first_final = next(i for i, (_, state) in enumerate(order) if state in ("ended", "error"))
    assert first_final > max(i for i, (is_score, _) in enumerate(order) if is_score)


def test_unreadable_file_reports_and_exits_cleanly(tiny_checkpoint, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video" * 100)
    result, sub = run_stream("--source", f"file:{bad}", "--checkpoint", str(tiny_checkpoint))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    statuses = sub.of_kind("status")
    assert statuses and statuses[-1]["state"] == "error"
    assert "broken.mp4" in statuses[-1]["last_error"]
    assert not sub.of_kind("scores")


def test_missing_checkpoint_is_one_line(tmp_path):
    result, _ = run_stream("--checkpoint", str(tmp_path / "nope"), timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("luvnet stream: error:")
    assert "Traceback" not in result.stderr


def test_unknown_source_scheme_is_one_line(tiny_checkpoint):
    result, _ = run_stream("--source", "warp:9", "--checkpoint", str(tiny_checkpoint))
    assert result.returncode == 2 and "unknown scheme 'warp'" in result.stderr
    assert "Traceback" not in result.stderr


def test_sigterm_stops_promptly(tiny_checkpoint, short_video):
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    sub = PlainSubscriber(endpoint)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "luvnet.cli",
            "stream",
            "--bind",
            endpoint,
            "--quiet",
            "--source",
            f"file:{short_video}",
            "--loop",
            "--checkpoint",
            str(tiny_checkpoint),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not sub.of_kind("scores") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sub.of_kind("scores"), "stream never published"
        os.kill(process.pid, signal.SIGTERM)
        # Generous bound: a correctness check that SIGTERM is honoured, not a speed test.
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()
        sub.close()
    assert "Traceback" not in process.stderr.read()


@pytest.mark.parametrize("head_mode", ["incremental", "window"])
def test_head_modes_agree(tiny_checkpoint, short_video, head_mode):
    """Both head modes publish the same scores as the model's head over the window."""
    import torch

    from luvnet.engine.data.preprocess import normalize, preprocess_frames
    from luvnet.engine.data.video import read_video
    from luvnet.engine.model.checkpoint import load_checkpoint

    result, sub = run_stream(
        "--source",
        f"file:{short_video}",
        "--checkpoint",
        str(tiny_checkpoint),
        "--as-fast-as-possible",
        "--head",
        head_mode,
        "--crop",
        "32,20,96,96",
    )
    assert result.returncode == 0, result.stderr
    scores = sub.of_kind("scores")
    checkpoint = load_checkpoint(tiny_checkpoint)
    config = checkpoint.config.replace(
        preprocess=checkpoint.config.preprocess.__class__(image_size=64, crop_box=(32, 20, 96, 96))
    )
    frames, _ = read_video(short_video)
    letterboxed, _ = preprocess_frames(frames, config.preprocess)
    with torch.no_grad():
        emb = checkpoint.model.embed(normalize(torch.from_numpy(letterboxed), config.preprocess))
        for message in scores[::7]:
            i = message["frame"]
            window = emb[max(0, i - 29) : i + 1].unsqueeze(0)
            logits, _ = checkpoint.model.head(window)
            expected = torch.sigmoid(logits[0]).numpy()
            got = np.array([message["scores"][p] for p in PATTERNS])
            assert np.allclose(got, expected, atol=1e-4), (i, got, expected)
