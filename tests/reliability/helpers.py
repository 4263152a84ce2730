"""What the reliability tests share: a `luvnet stream` process, a collecting subscriber, waits.

Everything is real: the CLI through its module entry point, ZeroMQ on loopback, OpenCV.
Waits are bounded correctness guards ("within 60 s"), never speed assertions.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from luvnet.streamer.client import ScoreSubscriber
from luvnet.streamer.protocol import Message, ScoreMessage, StatusMessage

REPO = Path(__file__).resolve().parents[2]


def wait_until(predicate: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:g} s: {what}")
        time.sleep(0.05)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def group_members(pgid: int) -> list[int]:
    """Live processes in process group ``pgid`` (Linux /proc): children left behind."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry))
    return members


class LuvnetProcess:
    """``python -m luvnet.cli ARGS`` in its own process group, stderr kept in a file."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        self._log_file = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "luvnet.cli", *args],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=self._log_file,
            start_new_session=True,  # its own group: what it leaves behind can be found
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout_s: float = 30) -> int:
        try:
            return self.process.wait(timeout_s)
        finally:
            self._log_file.close()

    @property
    def stderr(self) -> str:
        return self.log.read_text()

    def kill(self) -> None:
        """Cleanup after a failed test: the whole group, at once."""
        if self.alive():
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self._log_file.close()


def stream_args(endpoint: str, checkpoint: Path, source: str, *extra: str) -> list[str]:
    return [
        "stream",
        "--bind",
        endpoint,
        "--quiet",
        "--checkpoint",
        str(checkpoint),
        "--source",
        source,
        *extra,
    ]


class Collector:
    """A ScoreSubscriber on its own thread, keeping every message it takes."""

    def __init__(self, endpoint: str, **kwargs: object) -> None:
        self.sub = ScoreSubscriber(endpoint, **kwargs)  # type: ignore[arg-type]
        self.messages: list[Message] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self.sub.recv(50)
            if msg is not None:
                with self._lock:
                    self.messages.append(msg)

    def scores(self) -> list[ScoreMessage]:
        with self._lock:
            return [m for m in self.messages if isinstance(m, ScoreMessage)]

    def statuses(self) -> list[StatusMessage]:
        with self._lock:
            return [m for m in self.messages if isinstance(m, StatusMessage)]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sub.close()
