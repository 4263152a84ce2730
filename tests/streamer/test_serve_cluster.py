"""`luvnet serve` on a Ray cluster it joins: two nodes on this machine over loopback (the second
with a resource of its own), encoder replicas on both; a replica's actor killed mid-run.

The cluster is started here with `ray start --block` (each in its own process group, so
stopping it stops exactly what it started) and stopped at the end of the module; token
authentication (Ray's default for `ray start --head`) is on for every member and client, with
a token made for the cluster and passed in the environment.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.helpers import Collector, group_members
from tests.streamer.conftest import free_port
from tests.streamer.serve_helpers import (
    RAY_CLUSTER,
    ServeProcess,
    require_serve,
    serve_config,
    write_config,
)

pytestmark = [pytest.mark.slow, RAY_CLUSTER]
RAY = str(Path(sys.executable).with_name("ray"))


def _ray_start(args: list[str], log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(
            [RAY, "start", "--block", "--disable-usage-stats", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)  # `ray start --block` stops what it started
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory) -> Iterator[str]:
    """A head (1 CPU) and a second node (1 CPU, resource node2) on loopback; the address."""
    require_serve()
    logs = tmp_path_factory.mktemp("ray")
    temp_dir = tempfile.mkdtemp(prefix="luvnet-ray-")  # short: Ray's socket paths live there
    # A token of this cluster's own, handed to every member and client by the environment
    # (a clean machine has no ~/.ray/auth_token, and this one's is left alone).
    env = {
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    port = free_port()
    address = f"127.0.0.1:{port}"
    head = _ray_start(
        ["--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
         f"--temp-dir={temp_dir}", "--node-ip-address=127.0.0.1"],
        logs / "head.log",
    )  # fmt: skip
    second = None
    try:
        _wait_nodes(address, 1, head)
        second = _ray_start(
            [f"--address={address}", "--num-cpus=1", '--resources={"node2": 1}',
             "--node-ip-address=127.0.0.1"],
            logs / "node2.log",
        )  # fmt: skip
        _wait_nodes(address, 2, second)
        yield address
    finally:
        for process in (second, head):
            if process is not None:
                _stop(process)
        for process in (second, head):
            if process is not None:
                assert group_members(process.pid) == [], "ray start left processes behind"
        shutil.rmtree(temp_dir, ignore_errors=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _wait_nodes(address: str, count: int, process: subprocess.Popen) -> None:
    """Until the cluster at ``address`` has ``count`` live nodes (a subprocess asks, so this
    test process never joins the cluster for it)."""
    code = (
        "import ray, sys; ray.init(address=sys.argv[1], configure_logging=False, "
        "log_to_driver=False); print(sum(n['Alive'] for n in ray.nodes()))"
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, "ray start ended"
        out = subprocess.run(
            [sys.executable, "-c", code, address], capture_output=True, text=True, timeout=60
        )
        if out.returncode == 0 and out.stdout.strip().splitlines()[-1:] == [str(count)]:
            return
        time.sleep(1)
    raise AssertionError(f"the cluster at {address} did not reach {count} nodes")


def _config(tmp_path: Path, address: str, endpoint: str, checkpoint: Path, **stream) -> Path:
    streams = [
        {"id": sid, "source": f"phantom:{i}", "size": "240x320", **stream}
        for i, sid in enumerate(("bed1", "bed2"))
    ]
    config = serve_config(endpoint, checkpoint, streams)
    config["encoder"] = {
        "replicas": 2, "max_batch_size": 4, "batch_wait_ms": 2, "num_cpus": 1,
        "max_replicas_per_node": 1,
    }  # fmt: skip
    config["ray"] = {"address": address}
    return write_config(tmp_path / "serve.yaml", config)


def test_replicas_on_both_nodes_and_scores_published(two_nodes, tiny_checkpoint, tmp_path):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    config = _config(tmp_path, two_nodes, endpoint, tiny_checkpoint, as_fast_as_possible=True)
    collector = Collector(endpoint)
    serve = ServeProcess(
        config, tmp_path / "serve.log", "--max-frames", "80", "--wait-subscriber", "120"
    )
    try:
        rc = serve.wait_watching(240)
    finally:
        serve.kill()
        collector.close()
    assert rc == 0, serve.stderr
    for sid in ("bed1", "bed2"):
        frames = [m.frame for m in collector.scores() if m.stream_id == sid]
        assert frames == list(range(80)), f"{sid}: {frames[:5]}..."
    # Each frame's embedding says which node's replica computed it.
    assert "replicas on 2 node(s)" in serve.stderr, serve.stderr
    assert collector.sub.gap_count == 0


def test_a_killed_replica_costs_a_restarted_window_never_a_hang(
    two_nodes, tiny_checkpoint, tmp_path
):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    config = _config(tmp_path, two_nodes, endpoint, tiny_checkpoint, as_fast_as_possible=True)
    collector = Collector(endpoint)
    serve = ServeProcess(config, tmp_path / "serve.log", "--wait-subscriber", "120")
    try:
        _wait_scores(collector, serve, 30)
        replicas = _replicas(two_nodes)
        assert len(replicas) == 2, replicas
        _replicas(two_nodes, kill=replicas[0])  # ray.kill on its actor handle
        killed_at = len(collector.scores())
        # The streams go on (the other replica, then Ray Serve's replacement): no hang.
        _wait_scores(collector, serve, killed_at // 2 + 150)
        deadline = time.monotonic() + 120
        while replicas[0] in (now := _replicas(two_nodes)) or len(now) < 2:
            assert time.monotonic() < deadline, f"Serve did not replace it: {now}"
            time.sleep(1)
        serve.signal(signal.SIGTERM)
        rc = serve.wait_watching(60)
    finally:
        serve.kill()
        collector.close()
    assert rc == 0, serve.stderr
    for sid in ("bed1", "bed2"):
        scores = [m for m in collector.scores() if m.stream_id == sid]
        for before, after in zip(scores, scores[1:], strict=False):
            if after.frame == before.frame + 1:
                # A contiguous frame extends the window (or the window was full).
                assert after.fill in (min(before.fill + 1, 30), 1), (before, after)
            else:
                # A frame lost with the replica: the window restarts, no score over a hole.
                assert after.fill == 1, f"{sid}: frame {after.frame} fill {after.fill}"
        seqs = [m.seq for m in scores]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "sequence gap on loopback"


# Run in a process of its own, so that this test process never joins the cluster.
_REPLICAS = """
import sys, ray
ray.init(address=sys.argv[1], configure_logging=False, log_to_driver=False)
names = sorted(
    a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
    if a["namespace"] == "serve" and "SERVE_REPLICA::luvnet#encoder" in a["name"]
)
if len(sys.argv) > 2:
    ray.kill(ray.get_actor(sys.argv[2], namespace="serve"), no_restart=True)
print(" ".join(names))
"""


def _replicas(address: str, kill: str | None = None) -> list[str]:
    """The encoder's replica actors on the cluster; ``kill`` one of them first."""
    args = [sys.executable, "-c", _REPLICAS, address, *([kill] if kill else [])]
    out = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def _wait_scores(collector: Collector, serve: ServeProcess, count: int) -> None:
    deadline = time.monotonic() + 180
    while True:
        per_stream = [
            sum(m.stream_id == sid for m in collector.scores()) for sid in ("bed1", "bed2")
        ]
        if min(per_stream) >= count:
            return
        assert serve.alive(), serve.stderr
        assert time.monotonic() < deadline, f"scores per stream {per_stream}: {serve.stderr}"
        serve.watch()
        time.sleep(0.2)
