"""engine.covid_blues: the manifest builder, on a small look-alike and on the real data."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from luvnet.cli import main
from luvnet.engine.data.clips import clip_spans
from luvnet.engine.data.frame_cache import FrameCache
from luvnet.engine.data.manifest import read_manifest
from luvnet.engine.model.config import PreprocessConfig

REPO = Path(__file__).resolve().parents[3]
REAL_DATA = (REPO / ".." / "shared" / "data" / "covid-blues").resolve()
needs_real_data = pytest.mark.skipif(
    not (REAL_DATA / "severity.csv").is_file(),
    reason=f"COVID-BLUES data not found at {REAL_DATA} (../shared/data/covid-blues)",
)
SEVERITY_HEADER = "video_file,Severity Score,A-lines,B-lines,comments"


def look_alike(root: Path, lines: list[str], videos: list[str]) -> Path:
    """A folder shaped like COVID-BLUES: severity.csv and tiny real mp4 files."""
    (root / "lus_videos").mkdir(parents=True)
    (root / "severity.csv").write_text("\n".join([SEVERITY_HEADER, *lines]) + "\n")
    for name in videos:
        path = root / "lus_videos" / f"{name}.mp4"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (32, 32))
        for t in range(3):
            writer.write(np.full((32, 32, 3), 50 * t, np.uint8))
        writer.release()
    return root


def test_builds_manifest(tmp_path: Path) -> None:
    data = look_alike(
        tmp_path / "data",
        [
            'patient_7_L1,1.0,yes,no ,"small consolidation"',
            "patient_7_R2_2,0.0,no,yes,",
            "patient_12_L3,2.0,yes ,yes,",
        ],
        ["patient_7_L1", "patient_7_R2_2", "patient_12_L3"],
    )
    out = tmp_path / "out" / "manifest.csv"
    out.parent.mkdir()
    assert main(["covid-blues-manifest", "--data", str(data), "--out", str(out)]) == 0
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert rows[0] == {
        "video": "../data/lus_videos/patient_7_L1.mp4",
        "patient_id": "7",
        "a_lines": "1",
        "b_lines": "0",
        "consolidation": "",
        "pleural_effusion": "",
    }
    assert [(r["patient_id"], r["a_lines"], r["b_lines"]) for r in rows[1:]] == [
        ("7", "0", "1"),
        ("12", "1", "1"),
    ]
    manifest = read_manifest(out)
    assert manifest.patients() == ["7", "12"]
    assert not any(r.labels["consolidation"].known for r in manifest.rows), "unknown, not 0"


@pytest.mark.parametrize(
    ("line", "videos", "fragment"),
    [
        ("patient_7_L1,1.0,maybe,no,", ["patient_7_L1"], ":2: A-lines 'maybe'; expected yes or no"),
        ("patient_7_L1,1.0,yes,no,", [], ":2: video "),
        ("scan_7,1.0,yes,no,", [], ":2: video_file 'scan_7'; expected patient_<PATIENT-ID>"),
    ],
    ids=["bad-value", "missing-video", "bad-name"],
)
def test_rejects_bad_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, videos: list[str], fragment: str
) -> None:
    data = look_alike(tmp_path / "data", [line], videos)
    out = tmp_path / "m.csv"
    assert main(["covid-blues-manifest", "--data", str(data), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err, err
    assert not out.exists()


def test_missing_folder_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["covid-blues-manifest", "--data", str(tmp_path / "nope"), "--out", "m.csv"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "severity.csv: not found" in err, err


@needs_real_data
def test_real_covid_blues(tmp_path: Path) -> None:
    out = tmp_path / "manifest.csv"
    assert main(["covid-blues-manifest", "--data", str(REAL_DATA), "--out", str(out)]) == 0
    manifest = read_manifest(out)
    assert len(manifest) == 362 and len(manifest.patients()) == 63
    b_lines = [row.labels["b_lines"].to_cell() for row in manifest.rows]
    assert b_lines.count("1") == 235 and b_lines.count("0") == 127  # incl. "yes " / "no "
    assert all(not row.labels["pleural_effusion"].known for row in manifest.rows)
    assert all(row.video.is_relative_to(REAL_DATA) for row in manifest.rows)
    # One real video through decode -> sector crop -> letterbox -> cache.
    cached = FrameCache(tmp_path / "cache", PreprocessConfig()).load(manifest.rows[0].video)
    frames = cached.frames()
    assert frames.shape[1:] == (256, 256) and 50 <= cached.n_frames <= 120
    assert cached.source_size == (350, 350) and frames.max() > 0
    assert len(clip_spans(cached.n_frames, 30, 24)) >= 2
