"""What ``luvnet bench serve`` measures from outside the processes it starts: a subscriber
per endpoint (scores, statuses and sequence gaps per stream), the peak resident memory of
process trees, a process's peak GPU memory."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

from luvnet.streamer.client import Gap, ScoreSubscriber
from luvnet.streamer.protocol import ScoreMessage, StatusMessage


@dataclass
class Listener:
    """A subscriber on its own thread: scores and status per stream, gaps per stream."""

    endpoint: str
    scores: dict[str, list[tuple[float, float]]] = field(default_factory=lambda: defaultdict(list))
    statuses: dict[str, list[tuple[float, StatusMessage]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    gaps: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._sub = ScoreSubscriber(self.endpoint, on_gap=self._gap)
        self._thread.start()

    def _gap(self, gap: Gap) -> None:
        if gap.kind == "scores":
            self.gaps[gap.stream_id] += gap.missed

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self._sub.recv(100)
            now = time.monotonic()
            if isinstance(msg, ScoreMessage):
                e2e_ms = (time.monotonic_ns() - msg.capture_ns) / 1e6
                self.scores[msg.stream_id].append((now, e2e_ms))
            elif isinstance(msg, StatusMessage):
                self.statuses[msg.stream_id].append((now, msg))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sub.close()


def _tree_rss(pids: list[int]) -> int:
    """Resident bytes of the processes ``pids`` and all their descendants (Ray's included)."""
    import psutil  # luvnet[serve]

    total = 0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for proc in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):  # ended meanwhile
                    total += proc.memory_info().rss
        except psutil.Error:
            pass
    return total


class RssSampler:
    """Peak of the summed RSS of process trees, sampled every ``interval_s`` on a thread."""

    def __init__(self, pids: list[int], interval_s: float = 0.5) -> None:
        self.pids = pids
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval_s,), daemon=True)
        self._thread.start()

    def _run(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            self.peak = max(self.peak, _tree_rss(self.pids))

    def close(self) -> int:
        self._stop.set()
        self._thread.join(5)
        return self.peak


def peak_gpu_mib(device: str) -> float:
    """This process's peak CUDA memory on ``device`` in MiB (0 off CUDA)."""
    import torch

    return torch.cuda.max_memory_allocated(device) / 2**20 if device.startswith("cuda") else 0.0


def free_port() -> int:
    """A TCP port free on the loopback now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
