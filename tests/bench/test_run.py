"""``luvnet bench`` through its real entry point: every mode runs and every figure is written.

Speed is never asserted here; only that the figures exist and are consistent.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.streamer.conftest import write_video

SMALL = ["--backbone", "resnet18", "--image-size", "64"]


def run_bench(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "luvnet.cli", "bench", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_bench_writes_every_mode(tmp_path):
    video = write_video(tmp_path / "scan.mp4", frames=40)
    out = tmp_path / "luvnet.bench.json"
    plot = tmp_path / "luvnet.bench.png"
    result = run_bench(
        *SMALL,
        *("--source", f"file:{video}", "--frames", "4", "--warmup", "1", "--naive-frames", "2"),
        *("--json", str(out), "--plot", str(plot), "--paced", "30", "--paced-seconds", "1.5"),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["modes"]["cached_eager"]["total"]["n"] == 4
    assert report["modes"]["naive_eager"]["total"]["n"] == 2
    for name in ("head_incremental", "head_window", "temporal_incremental", "temporal_window"):
        assert report["heads"][name]["n"] == 4, name
    assert report["heads"]["head_window_eager"]["n"] == 4
    stats = report["modes"]["cached_eager"]["total"]
    assert stats["p50"] <= stats["p99"] <= stats["max"]
    assert all(value > 0 for value in report["ratios"].values())
    assert report["machine"]["cpu_count"] >= 1 and plot.stat().st_size > 0
    # Paced through the real pipeline (ZeroMQ publisher included), frames replayed from memory.
    paced = report["paced"]["eager_incremental_30fps"]
    assert paced["source"] == "replay" and paced["backend"] == "eager"
    assert paced["published"] >= 1 and paced["captured"] >= paced["published"]
    assert paced["stages"]["embed"]["n"] >= 1


def test_bench_bad_size_is_one_line():
    result = run_bench("--size", "12x", timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("luvnet bench: error: --size")


def test_bench_paced_backend_not_loaded_is_one_line():
    result = run_bench(*SMALL, "--size", "120x160", "--paced", "30", "--paced-backends", "inductor")
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert "--paced-backends" in last and "'inductor'" in last and "Traceback" not in result.stderr
