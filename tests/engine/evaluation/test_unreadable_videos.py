"""Unreadable videos through the real CLI: `train` and `evaluate` name every one at once, and
`--skip-unreadable` goes on without them, recording which and why (metrics, provenance)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from luvnet.cli import main
from luvnet.engine.data.manifest import read_manifest
from luvnet.engine.data.splits import splits_from_manifest
from luvnet.engine.data.unreadable import SkippedVideo
from luvnet.engine.errors import LuvnetError
from luvnet.engine.evaluation.metrics import read_metrics
from luvnet.engine.evaluation.predictions import read_predictions
from luvnet.engine.training.folds import usable_rows
from tests.engine.tiny_data import PATTERN_COLUMNS, TINY_TRAIN_ARGS, make_dataset

REPO = Path(__file__).resolve().parents[3]
BAD = ("bad/empty.mp4", "bad/junk.mp4")  # as the manifests give them


def _write_manifest(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["video", "patient_id", *PATTERN_COLUMNS])
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[list[str]], Path]:
    """(folder, the good rows, the cache): tiny videos plus an empty file and non-video bytes
    named .mp4, in a subfolder so the recorded names keep their folder."""
    root = tmp_path_factory.mktemp("unreadable")
    manifest = make_dataset(root / "videos", seed=7)
    folder = manifest.parent
    (folder / "bad").mkdir()
    (folder / BAD[0]).write_bytes(b"")
    (folder / BAD[1]).write_bytes(b"this is a text file, not a video\n" * 64)
    with manifest.open(newline="") as handle:
        good = list(csv.reader(handle))[1:]
    return folder, good, root / "cache"


@pytest.fixture(scope="module")
def trained(data) -> tuple[Path, Path]:
    """A tiny run on all good videos plus both bad ones (own patients), skipping them."""
    folder, good, cache = data
    bad_rows = [[BAD[0], "P90", "1", "0", "0", "0"], [BAD[1], "P91", "0", "1", "0", "0"]]
    manifest = _write_manifest(folder / "with_bad.csv", [*good, *bad_rows])
    out = folder.parent / "run"
    argv = ["train", "--manifest", str(manifest), "--out", str(out), "--cache", str(cache)]
    assert main([*argv, *TINY_TRAIN_ARGS, "--epochs", "1", "--skip-unreadable"]) == 0
    return manifest, out


def _luvnet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "luvnet.cli", *args], cwd=REPO, capture_output=True, text=True
    )


def _check_skipped(entries: list[dict[str, str]], names: tuple[str, ...] = BAD) -> None:
    assert [e["video"] for e in entries] == list(names)
    for entry in entries:
        assert set(entry) == {"video", "reason"}
        assert entry["reason"] and "/" not in entry["reason"].split(" ")[0]  # no path prefix
    reasons = {e["video"]: e["reason"] for e in entries}
    if BAD[0] in reasons:
        assert "empty" in reasons[BAD[0]].lower()


def test_train_without_the_flag_names_every_unreadable_video_and_writes_nothing(data, tmp_path):
    folder, good, cache = data
    rows = [*good, [BAD[0], "P90", "1", "0", "0", "0"], [BAD[1], "P91", "0", "1", "0", "0"]]
    manifest = _write_manifest(folder / "train_bad.csv", rows)
    out = tmp_path / "run"
    result = _luvnet(
        "train", "--manifest", str(manifest), "--out", str(out), "--cache", str(cache),
        *TINY_TRAIN_ARGS, "--epochs", "1",
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"luvnet train: error: 2 of {len(rows)} videos in {manifest} are unreadable:" in (
        result.stderr
    )
    for name in BAD:
        assert f"  {name}: " in result.stderr
    assert "--skip-unreadable goes on without them" in result.stderr
    assert not out.exists(), "refused before anything is written"


def test_train_skipping_records_them_in_provenance_run_json_and_metrics(trained):
    manifest, out = trained
    best = json.loads((out / "fold_0" / "best" / "config.json").read_text())
    _check_skipped(best["provenance"]["skipped_videos"])
    assert "P90" not in json.dumps(best["provenance"]["skipped_videos"]), "no patient ids"
    _check_skipped(json.loads((out / "run.json").read_text())["skipped_videos"])
    # Each metrics file lists the skipped videos of its own set (the split is drawn as
    # TINY_TRAIN_ARGS ask: 2 folds, a quarter of the patients held out, seed 0).
    fold = splits_from_manifest(read_manifest(manifest), test_fraction=0.25, k=2, seed=0).fold(0)
    owner = {"P90": BAD[0], "P91": BAD[1]}
    assert {"P90", "P91"} & (fold.val | fold.test), "some set scored in metrics lost a video"
    for split, patients in (("val", fold.val), ("test", fold.test)):
        metrics = read_metrics(out / "fold_0" / f"metrics_{split}.json")
        expected = tuple(owner[p] for p in ("P90", "P91") if p in patients)
        _check_skipped(metrics["skipped_videos"], expected)
        predictions = read_predictions(out / "fold_0" / f"predictions_{split}.csv")
        assert not {c.video for c in predictions.clips} & set(BAD)


def test_the_same_command_resumes_a_run_that_skipped(data, trained):
    manifest, out = trained
    argv = ["train", "--manifest", str(manifest), "--out", str(out), "--cache", str(data[2])]
    assert main([*argv, *TINY_TRAIN_ARGS, "--epochs", "1", "--skip-unreadable"]) == 0
    best = json.loads((out / "fold_0" / "best" / "config.json").read_text())
    _check_skipped(best["provenance"]["skipped_videos"])


def test_report_still_reads_a_run_that_skipped(trained, capsys: pytest.CaptureFixture[str]):
    _, out = trained
    assert main(["report", str(out), "--split", "val"]) == 0
    assert "luvnet" in capsys.readouterr().out


def _small_manifest(data, name: str) -> tuple[Path, list[list[str]]]:
    """3 good videos and the 2 bad ones (5 rows)."""
    folder, good, _ = data
    rows = [*good[:3], [BAD[0], "P90", "1", "0", "0", "0"], [BAD[1], "P91", "0", "1", "", "0"]]
    return _write_manifest(folder / name, rows), rows


def test_evaluate_names_both_unreadable_videos_and_the_count(data, trained, tmp_path):
    manifest, rows = _small_manifest(data, "eval_bad.csv")
    _, out = trained
    result = _luvnet(
        "evaluate", "--checkpoint", str(out / "fold_0" / "best"), "--manifest", str(manifest),
        "--split", "all", "--out", str(tmp_path / "e"), "--cache", str(data[2]),
        "--device", "cpu",
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()  # "cached ..." lines may come first (a cold cache)
    first = lines.index(f"luvnet evaluate: error: 2 of 5 videos in {manifest} are unreadable:")
    assert [line.split(": ")[0].strip() for line in lines[first + 1 : first + 3]] == list(BAD)
    assert lines[first + 3].startswith("--skip-unreadable goes on without them")
    assert len(lines) == first + 4, result.stderr
    assert not (tmp_path / "e" / "metrics.json").exists()


def test_evaluate_skipping_scores_the_rest_and_lists_the_skipped(data, trained, tmp_path):
    manifest, rows = _small_manifest(data, "eval_skip.csv")
    _, out = trained
    result = _luvnet(
        "evaluate", "--checkpoint", str(out / "fold_0" / "best"), "--manifest", str(manifest),
        "--split", "all", "--out", str(tmp_path), "--cache", str(data[2]), "--device", "cpu",
        "--skip-unreadable",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for name in BAD:
        assert f"luvnet evaluate: warning: skipped unreadable video {name}: " in result.stderr
    assert "from 3 videos" in result.stdout and "2 unreadable video(s) skipped" in result.stdout
    metrics = read_metrics(tmp_path / "metrics.json")
    _check_skipped(metrics["skipped_videos"])
    scored = {c.video for c in read_predictions(tmp_path / "predictions.csv").clips}
    good = {str(Path(row.video).name) for row in read_manifest(manifest).rows[:3]}
    assert {Path(v).name for v in scored} == good


def test_evaluate_refuses_a_split_with_no_readable_video(data, trained, tmp_path, capsys):
    folder, _, cache = data
    rows = [[BAD[0], "P90", "1", "0", "0", "0"], [BAD[1], "P91", "0", "1", "0", "0"]]
    manifest = _write_manifest(folder / "all_bad.csv", rows)
    _, out = trained
    argv = ["evaluate", "--checkpoint", str(out / "fold_0" / "best"), "--manifest", str(manifest)]
    argv += ["--split", "all", "--out", str(tmp_path), "--cache", str(cache), "--device", "cpu"]
    assert main([*argv, "--skip-unreadable"]) == 2
    err = capsys.readouterr().err
    assert "error: --split all: all 2 of its videos" in err and "are unreadable" in err
    assert not (tmp_path / "metrics.json").exists()


def test_a_training_set_left_empty_by_skipping_is_refused(data):
    folder, good, _ = data
    rows = read_manifest(_write_manifest(folder / "sets.csv", good[:2])).rows
    bad = {rows[0].video: SkippedVideo("a.mp4", "why", rows[0].video)}
    kept, skipped = usable_rows(rows, bad, "fold 0 validation set")
    assert [r.video for r in kept] == [rows[1].video] and skipped == [bad[rows[0].video]]
    bad[rows[1].video] = SkippedVideo("b.mp4", "why", rows[1].video)
    with pytest.raises(LuvnetError, match=r"^fold 0 validation set: all 2 of its videos are unr"):
        usable_rows(rows, bad, "fold 0 validation set")
    assert usable_rows([], bad, "test set") == ([], [])
