"""SIGTERM and Ctrl-C at every phase of start-up: imports, model load, compile and warm-up,
waiting for a subscriber. Each ends the process promptly and cleanly: no traceback, nothing
left running, the documented exit status.

Exit status (docs/reliability.md): 0 once `luvnet stream` has installed its handlers (from
model load on); during the imports of the first seconds both signals only set a flag that is
checked once the import is done (Ctrl-C then gives 130, SIGTERM 0), so a KeyboardInterrupt
cannot be swallowed by a third-party import; before luvnet's own code runs, SIGTERM keeps its
default action (status -15).
The stream loop itself is covered by tests/streamer/test_stream.py::test_sigterm_stops_promptly.
"""

from __future__ import annotations

import shutil
import signal
import socket
import time

import pytest

from tests.reliability.helpers import LuvnetProcess, group_members, stream_args, wait_until
from tests.streamer.conftest import free_port


def bound(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def stop_and_check(stream: LuvnetProcess, sig: int, allowed: tuple[int, ...]) -> None:
    stream.signal(sig)
    try:
        # Generous: a correctness bound (the signal is honoured at all), not a speed test.
        rc = stream.wait(30)
    finally:
        stream.kill()
    assert rc in allowed, f"exit status {rc}, expected one of {allowed}: {stream.stderr}"
    assert "Traceback" not in stream.stderr, stream.stderr
    time.sleep(0.2)
    assert group_members(stream.pid) == [], "processes left behind"


@pytest.mark.parametrize(
    ("sig", "allowed"),
    [(signal.SIGINT, (130, 0)), (signal.SIGTERM, (-signal.SIGTERM, 0))],
    ids=["SIGINT", "SIGTERM"],
)
def test_a_signal_while_importing(tiny_checkpoint, tmp_path, sig, allowed):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    stream = LuvnetProcess(
        stream_args(endpoint, tiny_checkpoint, "phantom"), tmp_path / "stream.log"
    )
    time.sleep(0.5)  # inside `import torch` (seconds), past interpreter start-up
    stop_and_check(stream, sig, allowed)


def test_sigterm_while_waiting_for_a_subscriber(tiny_checkpoint, tmp_path):
    port = free_port()
    stream = LuvnetProcess(
        stream_args(f"tcp://127.0.0.1:{port}", tiny_checkpoint, "phantom")
        + ["--wait-subscriber", "300"],
        tmp_path / "stream.log",
    )
    wait_until(lambda: bound(port), 120, "the publisher bound its port")  # then load, wait
    time.sleep(1.0)
    stop_and_check(stream, signal.SIGTERM, (0,))
    assert "stopped during start-up" in stream.stderr


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("c++") is None and shutil.which("g++") is None,
    reason="inductor on the CPU needs a C++ compiler",
)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_while_compiling(tiny_checkpoint, tmp_path, monkeypatch, sig):
    # A cold inductor cache of our own: the compile takes tens of seconds on this CPU.
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    port = free_port()
    stream = LuvnetProcess(
        stream_args(f"tcp://127.0.0.1:{port}", tiny_checkpoint, "phantom")
        + ["--backend", "inductor"],
        tmp_path / "stream.log",
    )
    wait_until(lambda: bound(port), 120, "the publisher bound its port")
    time.sleep(3.0)  # checkpoint loaded (well under a second), inductor compiling
    assert stream.alive(), stream.stderr
    assert "backend inductor" not in stream.stderr, "compiled already: nothing to interrupt"
    stop_and_check(stream, sig, (0,))
    assert "stopped during start-up" in stream.stderr
