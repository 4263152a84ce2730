"""commands.soak end to end, briefly: the real stream, publisher and subscriber, and its report.

The figures that matter come from long runs (docs/reliability.md); this checks the plumbing and
that a run's accounting adds up. The growth limit is loose: 15 s is all warm-up.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.reliability.helpers import REPO


@pytest.mark.slow
def test_a_short_soak_passes_its_checks(tiny_checkpoint, tmp_path):
    out = tmp_path / "soak.json"
    done = subprocess.run(
        [sys.executable, "-m", "luvnet.commands.soak", "--minutes", "0.25", "--checkpoint"]
        + [str(tiny_checkpoint), "--size", "240x320", "--warmup-s", "4", "--sample-s", "2"]
        + ["--max-growth", "0.25", "--threads", "1", "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert set(report["checks"]) >= {"rss growth", "seq gaps", "delivered", "drop accounting"}
    assert all(ok for ok, _ in report["checks"].values()), report["checks"]
    assert report["published"] > 0 and len(report["samples"]) >= 4
    final = report["final_status"]
    assert final["state"] == "ended" and final["frames_published"] == report["published"]
    assert report["subscriber"]["scores"] == report["published"]
