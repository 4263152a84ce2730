"""``luvnet train --split-seed S``: the patient split drawn with its own seed, so that runs of
another ``--seed`` (members of a seed ensemble) hold out the same patients."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from luvnet.cli import main
from luvnet.engine.evaluation.predictions import read_predictions
from luvnet.engine.model.checkpoint import load_checkpoint
from luvnet.engine.training.state import load_state
from tests.engine.tiny_data import TINY_TRAIN_ARGS, make_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return make_dataset(root / "videos", patients=8, videos_per_patient=1), root / "cache"


def _train(data: tuple[Path, Path], out: Path, *flags: str) -> list[str]:
    manifest, cache = data
    argv = ["train", "--manifest", str(manifest), "--out", str(out), "--cache", str(cache)]
    return [*argv, *TINY_TRAIN_ARGS, "--epochs", "1", *flags]


def _clips(run: Path, split: str) -> list[str]:
    return sorted(
        c.clip_id for c in read_predictions(run / "fold_0" / f"predictions_{split}.csv").clips
    )


def test_split_seed_keeps_the_folds_while_seed_changes_the_training(
    data, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    base, member, other = tmp_path / "seed0", tmp_path / "seed1", tmp_path / "seed1-own-split"
    assert main(_train(data, base, "--seed", "0")) == 0
    assert main(_train(data, member, "--seed", "1", "--split-seed", "0")) == 0
    assert main(_train(data, other, "--seed", "1")) == 0
    for split in ("val", "test"):  # the same held-out patients as the --seed 0 run
        assert _clips(member, split) == _clips(base, split)
    # without --split-seed, --seed 1 draws another split of these 8 patients
    assert (_clips(other, "val"), _clips(other, "test")) != (
        _clips(base, "val"),
        _clips(base, "test"),
    )
    weights = [load_state(run / "fold_0" / "last").model for run in (base, member)]
    assert any(not torch.equal(v, weights[1][k]) for k, v in weights[0].items())  # other init
    document = json.loads((member / "run.json").read_text())
    assert document["split"]["seed"] == 0 and document["args"]["seed"] == 1
    assert document["args"]["split_seed"] == 0
    best = member / "fold_0" / "best"
    assert load_checkpoint(best).provenance["split"]["seed"] == 0
    manifest, cache = data
    for split in ("val", "test"):  # evaluate finds the member's patients from its record
        out = tmp_path / f"eval_{split}"
        argv = ["evaluate", "--checkpoint", str(best), "--manifest", str(manifest)]
        argv += ["--split", split, "--out", str(out), "--cache", str(cache), "--device", "cpu"]
        assert main(argv) == 0
        clips = sorted(c.clip_id for c in read_predictions(out / "predictions.csv").clips)
        assert clips == _clips(base, split)
    capsys.readouterr()
    # resuming with the split drawn from --seed would validate on other patients: refused
    # before run.json is rewritten
    record = (member / "run.json").read_bytes()
    assert main(_train(data, member, "--seed", "1", "--epochs", "2")) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"luvnet train: error: {member}: trained on the patient split ("), last
    assert "--split-seed 0 keeps the folds" in last, last
    assert (member / "run.json").read_bytes() == record
    assert main(_train(data, member, "--seed", "1", "--split-seed", "0", "--epochs", "2")) == 0


def test_a_resume_refused_for_other_settings_leaves_run_json_as_it_was(
    data, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    run = tmp_path / "run"
    assert main(_train(data, run)) == 0
    record = (run / "run.json").read_bytes()
    capsys.readouterr()
    assert main(_train(data, run, "--epochs", "2", "--lr", "3e-3")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "saved with lr=0.001, this command has lr=0.003" in err[0], err
    assert (run / "run.json").read_bytes() == record  # not rewritten with the refused lr


def test_every_fold_is_checked_before_run_json_is_rewritten(
    data, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    """Fold 1 trained with one lr; all folds with another: refused for fold 1 before fold 0
    trains or run.json changes."""
    run = tmp_path / "run"
    argv = _train(data, run)
    at = argv.index("--fold")
    assert main([*argv[:at], "--fold", "1", *argv[at + 2 :]]) == 0
    record = (run / "run.json").read_bytes()
    capsys.readouterr()
    every_fold = [*argv[:at], *argv[at + 2 :], "--lr", "3e-3"]
    assert main(every_fold) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{run / 'fold_1' / 'last'}: saved with lr=0.001" in err[0], err
    assert not (run / "fold_0").exists()
    assert (run / "run.json").read_bytes() == record
