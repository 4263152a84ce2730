"""`luvnet bench serve`: both sides run and report every figure (speed is reported, never
asserted); a bad --streams is one line before anything starts."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from luvnet.cli import main
from tests.reliability.helpers import REPO
from tests.streamer.serve_helpers import RAY_CLUSTER, require_serve


def test_bad_stream_counts_are_one_line(capsys):
    require_serve()
    assert main(["bench", "serve", "--streams", "1,0"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == "luvnet bench: error: --streams: expected a comma list of positive integers, got '1,0'"
    )


def test_each_side_reports_its_median_run():
    """Repeats: a side's figures are all from its median run (by frames/s), never a mix."""
    from luvnet.bench.serving import median_run

    runs = [
        {"scored_fps": 230.0, "e2e": {"p99": 90.0}},
        {"scored_fps": 180.0, "e2e": {"p99": 300.0}},
        {"scored_fps": 210.0, "e2e": {"p99": 150.0}},
    ]
    chosen = median_run(runs)
    assert chosen["e2e"] == {"p99": 150.0}
    assert chosen["scored_fps_runs"] == [230.0, 180.0, 210.0]
    assert median_run(runs[:2])["scored_fps"] == 180.0  # even count: the lower middle one
    assert "scored_fps_runs" not in runs[2], "the runs themselves are left as they were"


def test_repeats_alternate_which_side_runs_first():
    from luvnet.bench.serving import run_order

    assert run_order(1) == ["serve", "independent"]
    assert run_order(3) == [
        *("serve", "independent", "independent", "serve", "serve", "independent")
    ]


@pytest.mark.slow
@RAY_CLUSTER
def test_bench_serve_reports_both_sides(tmp_path):  # the demo model, as the must-show
    require_serve()
    out, plot = tmp_path / "serve.json", tmp_path / "serve.png"
    result = subprocess.run(
        [
            sys.executable, "-m", "luvnet.cli", "bench", "serve", "--streams", "1",
            "--size", "240x320", "--paced-seconds", "2", "--repeats", "1",
            "--device", "cpu", "--json", str(out), "--plot", str(plot),
        ],
        cwd=REPO, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    row = report["runs"]["1"]
    for side in ("serve", "independent"):
        figures = row[side]
        assert figures["scored_fps"] > 0, figures
        assert figures["rss_mib"] > 100, "RSS of the side's processes (torch alone is more)"
        assert figures["streams"]["s00"]["e2e_p99_ms"] is not None
        assert figures["seq_gaps"] == 0
        # one run of each side (the repeats' order and median: the two tests above)
        assert figures["scored_fps_runs"] == [figures["scored_fps"]]
    assert row["serve"]["mean_batch"] >= 1.0
    assert report["fps_ratio"] == row["fps_ratio"] > 0
    assert report["rss_ratio"] == row["rss_ratio"] > 0
    assert plot.stat().st_size > 0
    assert "fps_ratio" in result.stdout
