"""luvnet evaluate through the real CLI: same scores as training's own evaluation, splits,
one-line errors; and the shared scoring path equals the model's forward."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from luvnet.cli import main
from luvnet.engine.data.manifest import read_manifest
from luvnet.engine.data.split_record import redact_checkpoint
from luvnet.engine.data.splits import splits_from_manifest
from luvnet.engine.evaluation.inference import score_clips
from luvnet.engine.evaluation.metrics import read_metrics
from luvnet.engine.evaluation.predictions import read_predictions
from luvnet.engine.model.checkpoint import load_checkpoint, save_checkpoint
from luvnet.engine.model.config import PreprocessConfig
from luvnet.engine.model.network import build_luvnet
from tests.engine.tiny_data import TINY_TRAIN_ARGS, make_dataset

REPO = Path(__file__).resolve().parents[3]
TINY = [*TINY_TRAIN_ARGS, "--epochs", "1"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("evaluate")
    manifest = make_dataset(root / "videos", seed=3)
    cache, out = root / "cache", root / "run"
    argv = ["train", "--manifest", str(manifest), "--out", str(out), "--cache", str(cache)]
    assert main([*argv, *TINY]) == 0
    return manifest, cache, out


def _luvnet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "luvnet.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
    )


@pytest.mark.parametrize("split", ["test", "val"])
def test_cli_scores_match_the_training_run(run, tmp_path: Path, split: str):
    manifest, cache, out = run
    result = _luvnet(
        "evaluate", "--checkpoint", str(out / "fold_0" / "best"), "--manifest", str(manifest),
        "--split", split, "--out", str(tmp_path), "--cache", str(cache), "--device", "cpu",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"{split}: " in result.stdout and "micro" in result.stdout
    metrics = read_metrics(tmp_path / "metrics.json")
    ours = read_predictions(tmp_path / "predictions.csv")
    theirs = read_predictions(out / "fold_0" / f"predictions_{split}.csv")
    assert [c.clip_id for c in ours.clips] == [c.clip_id for c in theirs.clips]
    np.testing.assert_array_equal(ours.labels, theirs.labels)
    # One implementation: the CLI reproduces what training wrote (up to float32 kernels).
    np.testing.assert_allclose(ours.probs, theirs.probs, rtol=1e-5, atol=1e-6)
    assert metrics["threshold_source"] == "given"
    assert metrics["n_clips"] == len(ours.clips)


def test_split_all_scores_every_clip(run, tmp_path: Path):
    manifest, cache, out = run
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(out / "fold_0" / "best"),
                "--manifest",
                str(manifest),
                "--split",
                "all",
                "--out",
                str(tmp_path),
                "--cache",
                str(cache),
                "--device",
                "cpu",
            ]  # fmt: skip
        )
        == 0
    )
    predictions = read_predictions(tmp_path / "predictions.csv")
    with manifest.open() as fh:
        videos = {row["video"] for row in csv.DictReader(fh)}
    assert {c.video for c in predictions.clips} == videos
    # 12-frame videos, clips of 8 every 6: [0, 8) and [6, 12).
    assert len(predictions.clips) == 2 * len(videos)


def test_manifest_split_column_is_used_without_recorded_patients(tmp_path: Path):
    manifest = make_dataset(tmp_path / "videos", patients=4, videos_per_patient=1, seed=5)
    rows = manifest.read_text().splitlines()
    splits = ["train", "train", "val", "test"]
    lines = [rows[0] + ",split"] + [f"{r},{s}" for r, s in zip(rows[1:], splits, strict=True)]
    manifest.write_text("\n".join(lines) + "\n")
    torch.manual_seed(0)
    model = build_luvnet("mobilenet_v3_small", kernel_size=3, fusion_hidden=32)
    config = model.config.replace(
        clip_length=8, clip_step=6, preprocess=PreprocessConfig(image_size=32)
    )
    save_checkpoint(model, tmp_path / "ckpt", config=config, provenance={})
    out = tmp_path / "eval"
    argv = ["evaluate", "--checkpoint", str(tmp_path / "ckpt"), "--manifest", str(manifest)]
    argv += ["--out", str(out), "--cache", str(tmp_path / "cache"), "--device", "cpu"]
    assert main(argv) == 0
    assert {c.patient_id for c in read_predictions(out / "predictions.csv").clips} == {"P03"}


def _evaluate(checkpoint: Path, manifest: Path, out: Path, cache: Path, split: str = "test"):
    return _luvnet(
        "evaluate", "--checkpoint", str(checkpoint), "--manifest", str(manifest),
        "--split", split, "--out", str(out), "--cache", str(cache), "--device", "cpu",
    )  # fmt: skip


def test_a_checkpoint_listing_patient_ids_in_clear_still_evaluates_and_can_be_redacted(
    run, tmp_path: Path
):
    """Checkpoints written before the digests stored the split's ids in clear: they evaluate
    the same patients, and redact_checkpoint removes the ids without touching the weights."""
    manifest, cache, out = run
    old = tmp_path / "old"
    shutil.copytree(out / "fold_0" / "best", old)
    plan = splits_from_manifest(read_manifest(manifest), test_fraction=0.25, k=2, seed=0)
    fold = plan.fold(0)
    document = json.loads((old / "config.json").read_text())
    record = document["provenance"]["split"]
    for key in ("patient_counts", "patient_digests"):
        del record[key]
    record["patients"] = {k: sorted(getattr(fold, k)) for k in ("train", "val", "test")}
    (old / "config.json").write_text(json.dumps(document, indent=2))
    model_id = load_checkpoint(old).model_id
    expected = read_predictions(out / "fold_0" / "predictions_test.csv")

    result = _evaluate(old, manifest, tmp_path / "e_old", cache)
    assert result.returncode == 0, result.stderr
    scored = read_predictions(tmp_path / "e_old" / "predictions.csv")
    assert [c.clip_id for c in scored.clips] == [c.clip_id for c in expected.clips]

    assert redact_checkpoint(old) and not redact_checkpoint(old)
    text = (old / "config.json").read_text()
    assert not [p for p in fold.train | fold.val | fold.test if f'"{p}"' in text]
    assert load_checkpoint(old).model_id == model_id
    result = _evaluate(old, manifest, tmp_path / "e_new", cache)
    assert result.returncode == 0, result.stderr
    scored = read_predictions(tmp_path / "e_new" / "predictions.csv")
    assert [c.clip_id for c in scored.clips] == [c.clip_id for c in expected.clips]


def test_a_manifest_that_does_not_rederive_the_split_is_one_line(run, tmp_path: Path):
    """Other patient ids (here: the same videos renumbered) give another split: evaluate
    refuses rather than score patients the model may have trained on."""
    manifest, cache, out = run
    other = manifest.with_name("manifest_other.csv")  # beside the videos it names
    other.write_text(manifest.read_text().replace(",P0", ",Q0"))
    result = _evaluate(out / "fold_0" / "best", other, tmp_path / "e", cache)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert "its test patients (recorded as a digest) differ from the" in result.stderr
    assert "use the manifest it was trained on" in result.stderr
    assert not (tmp_path / "e" / "predictions.csv").exists()


@pytest.mark.parametrize(("key", "value"), [("salt", "not hex"), ("n", float("inf"))])
def test_a_damaged_split_record_is_one_line(run, tmp_path: Path, key: str, value: object):
    """A hand-edited digest record (a salt that is not hex; ``Infinity``, which JSON reads)
    is named as damaged, not a traceback."""
    manifest, cache, out = run
    damaged = tmp_path / "damaged"
    shutil.copytree(out / "fold_0" / "best", damaged)
    document = json.loads((damaged / "config.json").read_text())
    document["provenance"]["split"]["patient_digests"][key] = value
    (damaged / "config.json").write_text(json.dumps(document))
    result = _evaluate(damaged, manifest, tmp_path / "e", cache)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "provenance split record is damaged" in result.stderr
    assert not (tmp_path / "e" / "predictions.csv").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--checkpoint", "{tmp}/none"], "no such directory"),
        (["--batch-size", "0"], "--batch-size: expected a positive integer, got 0"),
        (["--device", "tpu"], "--device: expected auto, cpu, cuda or cuda:N, got 'tpu'"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(run, tmp_path: Path, args, message):
    manifest, cache, out = run
    base = {"--checkpoint": str(out / "fold_0" / "best"), "--manifest": str(manifest)}
    base |= {"--out": str(tmp_path / "e"), "--cache": str(cache)}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value.format(tmp=tmp_path)
    result = _luvnet("evaluate", *(x for pair in base.items() for x in pair))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("luvnet evaluate: error: ") and message in result.stderr


def test_score_clips_equals_forward_with_padding():
    torch.manual_seed(0)
    model = build_luvnet("mobilenet_v3_small", kernel_size=3, fusion_hidden=32).eval()
    cfg = PreprocessConfig(image_size=32)
    frames = torch.randint(0, 256, (2, 6, 32, 32), dtype=torch.uint8)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 4:] = False
    logits, attention = score_clips(model, frames, mask, cfg)
    from luvnet.engine.data.preprocess import normalize

    with torch.no_grad():
        ref_logits, ref_attention = model(normalize(frames, cfg), mask)
    torch.testing.assert_close(logits, ref_logits)
    torch.testing.assert_close(attention, ref_attention)
    assert attention[1, :, 4:].abs().max() == 0, "padded frames must get no attention"
