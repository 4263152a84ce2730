"""`luvnet serve` end to end on a local Ray cluster it starts itself: the same scores as
`luvnet stream`, one stream's failing source leaves the others alone, signals stop it cleanly
and leave none of its Ray processes. Real Ray Serve, real model code, ZeroMQ on loopback."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from tests.reliability.helpers import REPO, Collector, wait_until
from tests.streamer.conftest import free_port
from tests.streamer.serve_helpers import (
    RAY_CLUSTER,
    ServeProcess,
    require_serve,
    serve_config,
    write_config,
)

pytestmark = [pytest.mark.slow, RAY_CLUSTER]


@pytest.fixture(autouse=True)
def _serve_extra() -> None:
    require_serve()


def by_frame(collector: Collector, stream_id: str) -> dict[int, dict[str, float]]:
    return {m.frame: m.scores for m in collector.scores() if m.stream_id == stream_id}


def test_serve_scores_equal_the_stream_and_it_leaves_nothing(
    tiny_checkpoint, tmp_path, short_video
):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    streams = [
        {"id": sid, "source": f"file:{short_video}", "as_fast_as_possible": True}
        for sid in ("bed1", "bed2")
    ]
    config = write_config(tmp_path / "serve.yaml", serve_config(endpoint, tiny_checkpoint, streams))
    served = Collector(endpoint)
    serve = ServeProcess(config, tmp_path / "serve.log", "--wait-subscriber", "120")
    try:
        rc = serve.wait_watching(240)
    finally:
        serve.kill()
        served.close()
    assert rc == 0, serve.stderr
    assert "Traceback" not in serve.stderr, serve.stderr
    assert serve.seen, "the command started no process (no local Ray cluster?)"
    assert serve.left_behind() == [], f"processes left behind: {serve.stderr}"

    ref_endpoint = f"tcp://127.0.0.1:{free_port()}"
    reference = Collector(ref_endpoint)
    stream = subprocess.run(
        [
            sys.executable, "-m", "luvnet.cli", "stream", "--quiet", "--bind", ref_endpoint,
            "--checkpoint", str(tiny_checkpoint), "--source", f"file:{short_video}",
            "--as-fast-as-possible", "--wait-subscriber", "60", "--stream-id", "ref",
        ],
        cwd=REPO, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    reference.close()
    assert stream.returncode == 0, stream.stderr
    expected = by_frame(reference, "ref")
    assert len(expected) == 45
    for sid in ("bed1", "bed2"):
        got = by_frame(served, sid)
        assert sorted(got) == sorted(expected), f"{sid}: frames {sorted(got)}"
        worst = max(abs(got[f][p] - expected[f][p]) for f in expected for p in expected[f])
        assert worst <= 1e-4, f"{sid}: scores differ from luvnet stream by {worst:.2e}"
    assert served.sub.gap_count == 0
    topics = {m.stream_id for m in served.scores()}
    assert topics == {"bed1", "bed2"}


def test_a_failing_source_disturbs_no_other_stream(tiny_checkpoint, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video" * 100)
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    streams = [
        {"id": "good", "source": "phantom:3", "as_fast_as_possible": True, "size": "240x320"},
        {"id": "bad", "source": f"file:{bad}"},
    ]
    config = write_config(tmp_path / "serve.yaml", serve_config(endpoint, tiny_checkpoint, streams))
    collector = Collector(endpoint)
    serve = ServeProcess(
        config, tmp_path / "serve.log", "--max-frames", "60", "--wait-subscriber", "120"
    )
    try:
        rc = serve.wait_watching(240)
    finally:
        serve.kill()
        collector.close()
    assert rc == 1, f"a source that failed for good gives exit status 1: {serve.stderr}"
    assert "Traceback" not in serve.stderr
    good = [m for m in collector.scores() if m.stream_id == "good"]
    assert [m.frame for m in good] == list(range(60)), "the good stream lost frames"
    last_bad = [s for s in collector.statuses() if s.stream_id == "bad"][-1]
    assert last_bad.state == "error" and "broken.mp4" in (last_bad.last_error or "")
    assert "stream bad" in serve.stderr and "error" in serve.stderr
    assert serve.left_behind() == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_every_stream_and_leaves_no_ray_process(tiny_checkpoint, tmp_path, sig):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    streams = [
        {"id": "bed1", "source": "phantom:1", "size": "240x320"},
        {"id": "bed2", "source": "phantom:2", "size": "240x320"},
    ]
    config = write_config(tmp_path / "serve.yaml", serve_config(endpoint, tiny_checkpoint, streams))
    collector = Collector(endpoint)
    serve = ServeProcess(config, tmp_path / "serve.log")
    try:
        deadline = time.monotonic() + 180
        while {m.stream_id for m in collector.scores()} != {"bed1", "bed2"}:
            assert serve.alive(), serve.stderr
            assert time.monotonic() < deadline, f"no scores from both streams: {serve.stderr}"
            serve.watch()
            time.sleep(0.2)
        serve.watch()
        assert any("raylet" in line for line in serve.seen.values()), serve.seen
        serve.signal(sig)
        rc = serve.wait_watching(60)  # a bound on the stop at all, not a speed test
    finally:
        serve.kill()
        collector.close()
    assert rc == 0, serve.stderr
    assert "Traceback" not in serve.stderr, serve.stderr
    assert "stopped" in serve.stderr
    assert serve.left_behind() == [], "Ray processes left behind"
    wait_until(lambda: collector.statuses(), 1, "status messages")


def test_replicas_the_cluster_cannot_place_are_one_line(tiny_checkpoint, tmp_path):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    config = serve_config(endpoint, tiny_checkpoint, [{"id": "bed1", "source": "phantom:1"}])
    config["encoder"].update(num_gpus=1)  # this local cluster has no GPU
    path = write_config(tmp_path / "serve.yaml", config)
    serve = ServeProcess(path, tmp_path / "serve.log")
    try:
        rc = serve.wait_watching(180)
    finally:
        serve.kill()
    assert rc == 2, serve.stderr
    errors = [line for line in serve.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "need 1 GPU in all, the Ray cluster has 0" in errors[0], errors
    assert "Traceback" not in serve.stderr
    assert serve.left_behind() == [], "the local cluster must go even when the deploy fails"


def test_luvnet_record_takes_one_stream_of_serve_unchanged(tiny_checkpoint, tmp_path):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    streams = [
        {"id": sid, "source": f"phantom:{i}", "size": "240x320", "as_fast_as_possible": True}
        for i, sid in enumerate(("bed1", "bed2"))
    ]
    config = write_config(tmp_path / "serve.yaml", serve_config(endpoint, tiny_checkpoint, streams))
    out = tmp_path / "bed2.jsonl"
    record = subprocess.Popen(
        [
            sys.executable, "-m", "luvnet.cli", "record", "--endpoint", endpoint,
            "--topic-prefix", "luvnet.bed2", "--out", str(out), "--timeout", "200",
        ],
        cwd=REPO, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    serve = ServeProcess(
        config, tmp_path / "serve.log", "--max-frames", "40", "--wait-subscriber", "120"
    )
    try:
        rc = serve.wait_watching(240)
        _, record_err = record.communicate(timeout=60)
    finally:
        serve.kill()
        record.kill()
    assert rc == 0, serve.stderr
    assert record.returncode == 0, record_err
    assert "40 scores" in record_err and "0 gaps" in record_err, record_err
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    scores = [m for m in lines if m.get("kind") == "scores"]
    assert {m["stream_id"] for m in scores} == {"bed2"}
    assert [m["seq"] for m in scores] == list(range(40)), "seq per stream, from 0"
