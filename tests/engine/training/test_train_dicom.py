"""A tiny ``luvnet train`` on ultrasound DICOM cine loops, then ``luvnet evaluate`` on them:
the chain runs, the model records the frame rate of its videos (a 60 fps loop is decimated to
it, and counted), and nothing from a DICOM header lands in the run's files or its log."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pydicom", reason="the dicom extra is not installed")

from luvnet.cli import main  # noqa: E402
from luvnet.engine.model.checkpoint import load_checkpoint  # noqa: E402
from tests.engine.data.test_dicom import write_dicom  # noqa: E402
from tests.engine.tiny_data import PATTERN_COLUMNS, TINY_TRAIN_ARGS, draw_frame  # noqa: E402

HEADER_VALUES = ("Doe^Jane", "Doe", "MRN-", "St Elsewhere", "20240101")
# (patient, labels, frames, ms per frame): six loops, one of them recorded at 60 fps.
LOOPS = [
    (0, (1, 0, 1, 0), 12, "33.3"),
    (1, (0, 1, 0, 1), 12, "33.3"),
    (2, (1, 1, 0, 0), 12, "33.3"),
    (3, (0, 0, 1, 1), 24, "16.7"),
    (4, (1, 0, 0, 1), 12, "33.3"),
    (5, (0, 1, 1, 0), 12, "33.3"),
]


@pytest.fixture(scope="module")
def dicom_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, str]:
    root = tmp_path_factory.mktemp("dicom_train")
    export = root / "export"
    export.mkdir()
    labels = {}
    for patient, cues, count, frame_ms in LOOPS:
        rng = np.random.default_rng(patient)
        frames = np.stack([draw_frame(rng, cues, 48) for _ in range(count)])
        name = f"loop{patient}.dcm"
        write_dicom(
            export / name,
            frames,
            "MONOCHROME2",
            PatientID=f"MRN-{4711 + patient}",
            FrameTime=frame_ms,
        )
        labels[f"export/{name}"] = cues
    manifest = root / "manifest.csv"
    assert main(["dicom-manifest", str(export), "--out", str(manifest)]) == 0
    with manifest.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:  # the labels a clinician would fill in
        row.update(zip(PATTERN_COLUMNS, map(str, labels[row["video"]]), strict=True))
    with manifest.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out, cache = root / "run", root / "cache"
    argv = ["train", "--manifest", str(manifest), "--out", str(out), "--cache", str(cache)]
    assert main([*argv, *TINY_TRAIN_ARGS, "--epochs", "1", "--decimate-above", "1.5"]) == 0
    return manifest, out, cache, root.name


def test_train_on_dicom_completes_and_records_the_frame_rate(dicom_run) -> None:
    _, out, _, _ = dicom_run
    fold = out / "fold_0"
    ckpt = load_checkpoint(fold / "best")
    assert ckpt.config.frame_rate == pytest.approx(1000 / 33.3, abs=1e-3), "the loops' rate"
    record = ckpt.provenance["frame_rate"]
    assert record["videos_measured"] == len(LOOPS) and record["decimate_above"] == 1.5
    test = json.loads((fold / "metrics_test.json").read_text())
    assert record["decimated_videos"] + test["decimated_videos"] == 1, "the 60 fps loop"


def test_nothing_from_a_dicom_header_lands_in_the_run(dicom_run) -> None:
    _, out, _, _ = dicom_run
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.name == "model.safetensors" for p in files)
    # Weights are random bytes: a 3-byte value like "Doe" turns up in them by chance (it did,
    # in best/ and last/ alike), so binary files are searched for the long values only.
    binary = {".safetensors", ".npy", ".pt"}
    leaks = {
        str(p.relative_to(out)): [
            v
            for v in HEADER_VALUES
            if v.encode() in p.read_bytes() and (p.suffix not in binary or len(v) >= 8)
        ]
        for p in files
    }
    assert not any(leaks.values()), leaks


def test_evaluate_counts_the_decimated_loop(dicom_run, tmp_path: Path) -> None:
    manifest, out, cache, _ = dicom_run
    counts = {}
    for factor in ("1.5", "0"):
        result = tmp_path / f"eval_{factor}"
        argv = ["evaluate", "--checkpoint", str(out / "fold_0" / "best"), "--manifest"]
        argv += [str(manifest), "--split", "all", "--out", str(result), "--cache", str(cache)]
        assert main([*argv, "--device", "cpu", "--decimate-above", factor]) == 0
        counts[factor] = json.loads((result / "metrics.json").read_text())["decimated_videos"]
    assert counts == {"1.5": 1, "0": 0}
