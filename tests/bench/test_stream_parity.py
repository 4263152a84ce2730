"""The live stream against ``luvnet evaluate`` (``python -m luvnet.commands.stream_parity``):
one crop rule on the same frames, so identical windows score identically, and the frames the
stream found its sector from are kept, so frame 29 has a full window."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from luvnet.streamer.compose import DEMO_CHECKPOINT
from tests.timed_videos import scan_frames, write_at_rate

REPO = Path(__file__).resolve().parents[2]
COVID_BLUES = REPO.parent / "shared" / "data" / "covid-blues"
TOLERANCE = 1e-4


def parity(manifest: Path, out: Path, *args: str) -> dict:
    result = subprocess.run(
        [
            sys.executable, "-m", "luvnet.commands.stream_parity", str(manifest),
            "--out", str(out), "--cache", str(out / "cache"), "--threads", "1",
            "--checkpoint", str(DEMO_CHECKPOINT), *args,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "identical windows compared" in result.stdout, result.stdout
    return json.loads((out / "parity.json").read_text())


def test_generated_videos_score_alike_in_stream_and_evaluate(tmp_path: Path) -> None:
    """Three scans of 40-70 frames, the last at 60 fps (decimated in both paths alike)."""
    rows = []
    for i, (count, fps) in enumerate([(45, 30.0), (70, 30.0), (120, 60.0)]):
        video = write_at_rate(tmp_path / f"v{i}.mkv", scan_frames(count, seed=i), fps)
        labels = {"a_lines": "1", "b_lines": "0", "consolidation": "", "pleural_effusion": ""}
        rows.append({"video": video.name, "patient_id": f"p{i}"} | labels)
    manifest = tmp_path / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    report = parity(manifest, tmp_path / "out")
    assert report["windows_compared"] >= 3 + 2
    assert report["max_abs_diff"] <= TOLERANCE, report
    assert report["videos_with_full_window_at_last_frame_of_first_window"] == 2, report
    at60 = report["videos"][2]
    assert at60["frames_scored"] == 60 and at60["full_window_at"] == 58, "decimated, in time"


def test_covid_blues_videos_score_alike_in_stream_and_evaluate(tmp_path: Path) -> None:
    if not (COVID_BLUES / "lus_videos").is_dir():
        pytest.skip(f"COVID-BLUES is absent ({COVID_BLUES}; ../shared/data not mounted)")
    manifest = tmp_path / "covid-blues.csv"
    subprocess.run(
        [sys.executable, "-m", "luvnet.cli", "covid-blues-manifest",
         "--data", str(COVID_BLUES), "--out", str(manifest)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    report = parity(manifest, tmp_path / "out", "--count", "3")
    assert len(report["videos"]) == 3 and report["windows_compared"] >= 3
    assert report["max_abs_diff"] <= TOLERANCE, report
    assert report["videos_with_full_window_at_last_frame_of_first_window"] == 3, report


def test_a_dicom_loop_is_cropped_to_its_region_alike_in_stream_and_evaluate(tmp_path: Path):
    """A US cine loop with a Sequence of Ultrasound Regions: the declared tissue region is the
    crop of both paths (not a detected box), and they score alike."""
    pytest.importorskip("pydicom", reason="the dicom extra is not installed")
    from pydicom.sequence import Sequence

    from tests.engine.data.test_dicom import region, write_dicom

    frames = scan_frames(40, size=(96, 128))
    tissue = Sequence([region(20, 10, 99, 85, 1)])  # (x, y, w, h) = (20, 10, 80, 76)
    write_dicom(
        tmp_path / "loop.dcm", frames, "MONOCHROME2", FrameTime="33.3",
        SequenceOfUltrasoundRegions=tissue,
    )  # fmt: skip
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "video,patient_id,a_lines,b_lines,consolidation,pleural_effusion\nloop.dcm,p0,1,0,,\n"
    )
    out = tmp_path / "out"
    report = parity(manifest, out)
    assert report["windows_compared"] == 1 and report["max_abs_diff"] <= TOLERANCE, report
    assert report["videos_with_full_window_at_last_frame_of_first_window"] == 1
    (sidecar,) = (out / "cache").glob("*.json")
    cached = json.loads(sidecar.read_text())
    assert cached["box"] == [20, 10, 80, 76] and "region" in cached["reason"], cached
