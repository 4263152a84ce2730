"""``device:N`` through the real command line, on a machine without that capture device: the
stream says which device is missing and which exist, keeps retrying (a capture card can be
plugged in later) and stops cleanly on SIGTERM. A real V4L2 device is not available here."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.streamer.conftest import free_port


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="V4L2 device nodes are Linux")
def test_missing_capture_device_is_named_and_retried(tmp_path: Path) -> None:
    device = next(n for n in range(97, 200) if not Path(f"/dev/video{n}").exists())
    stream = subprocess.Popen(
        [sys.executable, "-m", "luvnet.cli", "stream", "--source", f"device:{device}",
         "--bind", f"tcp://127.0.0.1:{free_port()}", "--fourcc", "MJPG", "--fps", "30"],
        stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    lines: list[str] = []
    deadline = time.monotonic() + 60
    assert stream.stderr is not None
    while time.monotonic() < deadline:
        line = stream.stderr.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if sum("retrying" in x for x in lines) >= 2:  # retried at least twice: not fatal
            break
    stream.send_signal(signal.SIGTERM)
    _, rest = stream.communicate(timeout=30)
    lines += rest.splitlines()
    text = "\n".join(lines)
    assert stream.returncode == 0, text
    assert f"device:{device}: cannot open (/dev/video{device} does not exist" in text, text
    assert sum("retrying" in x for x in lines) >= 2, text
    assert "stopped on request (SIGTERM)" in lines[-1], text
    assert "Traceback" not in text
