"""``luvnet train --init RUN_DIR``: every fold starts from the same fold's best checkpoint of
an earlier run; and an ``--init`` checkpoint trained on patients a fold holds out is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from luvnet.cli import main
from luvnet.engine.model.checkpoint import load_checkpoint
from tests.engine.tiny_data import TINY_TRAIN_ARGS, make_dataset

# TINY_TRAIN_ARGS without its "--fold 0": both folds train unless a test asks for one.
_FOLD = TINY_TRAIN_ARGS.index("--fold")
ALL_FOLDS = TINY_TRAIN_ARGS[:_FOLD] + TINY_TRAIN_ARGS[_FOLD + 2 :]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return make_dataset(root / "videos", patients=8, videos_per_patient=1), root / "cache"


@pytest.fixture(scope="module")
def heads(data, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-fold run: fold 0's training patients are fold 1's validation patients."""
    out = tmp_path_factory.mktemp("heads") / "run"
    assert main(_train(data, out)) == 0
    return out


def _train(data: tuple[Path, Path], out: Path, *flags: str) -> list[str]:
    manifest, cache = data
    argv = ["train", "--manifest", str(manifest), "--out", str(out), "--cache", str(cache)]
    return [*argv, *ALL_FOLDS, "--epochs", "1", *flags]


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("luvnet train: error: --init "), err
    return err


def test_init_run_dir_starts_each_fold_from_its_own_fold(data, heads: Path, tmp_path: Path):
    assert ALL_FOLDS.count("--folds") == 1 and "--fold" not in ALL_FOLDS
    out = tmp_path / "finetune"
    assert main(_train(data, out, "--init", str(heads), "--init-head")) == 0
    for k in (0, 1):
        source = load_checkpoint(heads / f"fold_{k}" / "best")
        started = load_checkpoint(out / f"fold_{k}" / "best").provenance["init"]
        assert started == {"model_id": source.model_id, "head": True}
    ids = {load_checkpoint(heads / f"fold_{k}" / "best").model_id for k in (0, 1)}
    assert len(ids) == 2  # two different starts, so the test above can tell them apart


def test_init_checkpoint_of_another_fold_is_refused_in_one_line(
    data, heads: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    source = heads / "fold_0" / "best"
    out = tmp_path / "leak"
    assert main(_train(data, out, "--init", str(source), "--fold", "1")) == 2
    err = _error(capsys)
    assert str(source) in err and "training patients are fold 1's validation patients" in err
    assert "--init RUN_DIR" in err, err
    assert not out.exists()  # refused before anything was written
    # one checkpoint for every fold: fold 1 is refused the same way
    assert main(_train(data, out, "--init", str(source))) == 2
    assert "fold 1's validation patients" in _error(capsys)
    # its own fold passes
    assert main(_train(data, out, "--init", str(source), "--fold", "0")) == 0


def test_init_checkpoint_of_another_split_seed_is_refused(
    data, heads: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    source = heads / "fold_0" / "best"
    argv = _train(data, tmp_path / "r", "--init", str(source), "--fold", "0", "--split-seed", "3")
    assert main(argv) == 2
    err = _error(capsys)
    assert "patients here (it was trained on fold 0 of split seed 0)" in err, err


def test_init_run_dir_without_the_fold_is_refused_in_one_line(
    data, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    partial = tmp_path / "partial"
    assert main(_train(data, partial, "--fold", "0")) == 0
    capsys.readouterr()
    out = tmp_path / "r"
    assert main(_train(data, out, "--init", str(partial))) == 2
    err = _error(capsys)
    assert "a training run with no fold_1/best (best checkpoints for folds 0)" in err, err
    assert not out.exists()


def test_init_trained_on_other_patients_is_not_refused(
    data, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    other = make_dataset(tmp_path / "other", patients=6, videos_per_patient=1, seed=5)
    source = tmp_path / "other_run"
    argv = ["train", "--manifest", str(other), "--out", str(source), "--cache", str(data[1])]
    assert main([*argv, *TINY_TRAIN_ARGS, "--epochs", "1"]) == 0
    out = tmp_path / "r"
    assert main(_train(data, out, "--init", str(source / "fold_0" / "best"))) == 0
    best = load_checkpoint(out / "fold_1" / "best")
    assert (
        best.provenance["init"]["model_id"] == load_checkpoint(source / "fold_0" / "best").model_id
    )
