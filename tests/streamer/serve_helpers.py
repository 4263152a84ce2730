"""What the `luvnet serve` tests share: the serve extra (required in CI), configs, processes.

CI installs luvnet[serve] (the dev extra includes it) and sets LUVNET_REQUIRE_SERVE=1, which
turns the skip for a missing Ray into a failure: the serve tests must run there.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.helpers import LuvnetProcess

# Every test that starts a Ray cluster: pytest-xdist (pyproject's addopts, --dist loadgroup)
# runs the whole group on one worker, so two clusters never run at once.
RAY_CLUSTER = pytest.mark.xdist_group("ray")


def require_serve() -> None:
    """Skip (fail in CI) when Ray Serve or PyYAML is missing."""
    try:
        import ray  # noqa: F401
        import yaml  # noqa: F401
        from ray import serve  # noqa: F401
    except ImportError as err:
        if os.environ.get("LUVNET_REQUIRE_SERVE") == "1":
            raise AssertionError(
                f"LUVNET_REQUIRE_SERVE=1 but luvnet[serve] is missing: {err}"
            ) from None
        pytest.skip(f"luvnet[serve] is not installed ({err})")


def write_config(path: Path, config: dict[str, Any]) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def serve_config(
    endpoint: str, checkpoint: Path, streams: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    """A small serve config: CPU, one replica of one CPU, a new local cluster of 2 CPUs."""
    config: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "device": "cpu",
        "threads": 1,
        "publish": {"bind": endpoint},
        "streams": streams,
        "encoder": {"replicas": 1, "max_batch_size": 4, "batch_wait_ms": 2, "num_cpus": 1},
        # A cluster of its own: never one another test or a benchmark is running.
        "ray": {"address": "local", "num_cpus": 2},
    }
    config.update(extra)
    return config


def descendants(pid: int) -> dict[int, str]:
    """Every live process under ``pid`` (Ray's raylet, GCS, workers started by the command),
    with its command line."""
    import psutil

    found: dict[int, str] = {}
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return found
    for child in children:
        with contextlib.suppress(psutil.Error):  # ended meanwhile
            found[child.pid] = " ".join(child.cmdline())
    return found


def alive(pids: Iterable[int]) -> list[int]:
    import psutil

    left = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                left.append(pid)
        except psutil.NoSuchProcess:
            pass
    return left


class ServeProcess(LuvnetProcess):
    """``luvnet serve --config FILE ...`` in its own process group; it remembers every process
    it saw under the command, to check none is left when it ends."""

    def __init__(self, config: Path, log: Path, *extra: str) -> None:
        super().__init__(["serve", "--config", str(config), *extra], log)
        self.seen: dict[int, str] = {}  # pid -> command line

    def watch(self) -> None:
        self.seen.update(descendants(self.pid))

    def wait_watching(self, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        while self.alive() and time.monotonic() < deadline:
            self.watch()
            time.sleep(0.2)
        return self.wait(max(1.0, deadline - time.monotonic()))

    def left_behind(self, grace_s: float = 10.0) -> list[int]:
        deadline = time.monotonic() + grace_s
        while (left := alive(self.seen)) and time.monotonic() < deadline:
            time.sleep(0.2)
        return left
