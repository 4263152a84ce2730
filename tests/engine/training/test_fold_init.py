"""``luvnet train --init RUN_DIR``: every fold starts from the same fold's best checkpoint of
an earlier run; and an ``--init`` checkpoint trained on patients a fold holds out is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from luvnet.cli import main
from luvnet.engine.data.manifest import read_manifest
from luvnet.engine.data.splits import Fold, SplitPlan
from luvnet.engine.errors import LuvnetError
from luvnet.engine.model.checkpoint import load_checkpoint
from luvnet.engine.training.fold_init import check_init_fold, seen_patients
from luvnet.engine.training.state import load_state
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
    # and the weights are those of the one-fold command from that fold's checkpoint
    alone = tmp_path / "alone"
    argv = _train(data, alone, "--init", str(heads / "fold_1" / "best"), "--init-head")
    assert main([*argv, "--fold", "1"]) == 0
    assert (alone / "fold_1" / "best" / "model.safetensors").read_bytes() == (
        out / "fold_1" / "best" / "model.safetensors"
    ).read_bytes()


def test_init_checkpoint_of_another_fold_is_refused_in_one_line(
    data, heads: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    source = heads / "fold_0" / "best"
    out = tmp_path / "leak"
    assert main(_train(data, out, "--init", str(source), "--fold", "1")) == 2
    err = _error(capsys)
    assert str(source) in err and "training patients are fold 1's validation patients" in err
    assert "it was trained on fold 0 of this split; start fold 1 from " in err, err
    assert f"{heads / 'fold_1' / 'best'}, or --init {heads} for every fold" in err, err
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
    assert "trained on fold 0 of the split --folds 2 --test-fraction 0.25 --split-seed 0 " in err
    assert "(this run: --folds 2 --test-fraction 0.25 --split-seed 3); pass those options" in err


def test_init_run_dir_without_the_fold_is_refused_in_one_line(
    data, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    partial = tmp_path / "partial"
    assert main(_train(data, partial, "--fold", "0")) == 0
    capsys.readouterr()
    out = tmp_path / "r"
    assert main(_train(data, out, "--init", str(partial))) == 2
    err = _error(capsys)
    assert "a training run with no fold_1/best (best checkpoints: fold 0)" in err, err
    assert not out.exists()


def test_init_trained_on_other_patients_is_said_and_not_refused(
    data, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    other = make_dataset(tmp_path / "other", patients=6, videos_per_patient=1, seed=5)
    text = other.read_text().replace(",P0", ",Q0")  # other people: no id in common
    assert text.count(",Q0") == 6
    other.write_text(text)
    source = tmp_path / "other_run"
    argv = ["train", "--manifest", str(other), "--out", str(source), "--cache", str(data[1])]
    assert main([*argv, *TINY_TRAIN_ARGS, "--epochs", "1"]) == 0
    out = tmp_path / "r"
    capsys.readouterr()
    assert main(_train(data, out, "--init", str(source / "fold_0" / "best"))) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warned) == 1, warned  # once, not once per fold
    assert warned[0].startswith(f"luvnet train: warning: --init {source / 'fold_0' / 'best'}: ")
    assert "so it is not checked against this run's folds" in warned[0], warned
    started = load_checkpoint(out / "fold_1" / "best").provenance["init"]["model_id"]
    assert started == load_checkpoint(source / "fold_0" / "best").model_id


def test_init_run_dir_with_one_fold_and_its_mistakes(
    data, heads: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    out = tmp_path / "one"
    assert main(_train(data, out, "--init", str(heads), "--fold", "1")) == 0
    source = load_checkpoint(heads / "fold_1" / "best").model_id
    assert load_checkpoint(out / "fold_1" / "best").provenance["init"]["model_id"] == source
    assert not (out / "fold_0").exists()
    capsys.readouterr()
    # a fold directory given for a checkpoint
    assert main(_train(data, tmp_path / "r", "--init", str(heads / "fold_1"))) == 2
    err = _error(capsys)
    assert "a fold directory of a training run, not a checkpoint; pass" in err, err
    assert f"{heads / 'fold_1' / 'best'} for its best checkpoint, or {heads} to start" in err
    # a run whose folds were drawn with another split seed: its fold 1 is not this fold 1
    argv = _train(data, tmp_path / "r", "--init", str(heads), "--split-seed", "3")
    assert main(argv) == 2
    err = _error(capsys)
    assert "its folds were drawn with --folds 2 --test-fraction 0.25 --split-seed 0 " in err
    assert "(this run: --folds 2 --test-fraction 0.25 --split-seed 3)" in err, err
    assert not (tmp_path / "r").exists()
    # a folder holding runs, given for one
    assert main(_train(data, tmp_path / "r", "--init", str(heads.parent))) == 2
    err = _error(capsys)
    assert "neither a checkpoint (config.json and its weights) nor a training run" in err, err
    assert f"(runs in it: {heads})" in err, err
    # resuming a run with another --init (here none): said with both model ids
    assert main(_train(data, out, "--fold", "1", "--epochs", "2")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"trained from --init model id {source}, this" in err, err
    assert "this command has no --init; resume with the --init it was trained from" in err


def test_test_patients_it_trained_or_validated_on_are_refused(data, heads: Path):
    """The two test-set rules, on a split built by hand around the checkpoint's patients."""
    manifest, _ = data
    init = heads / "fold_0" / "best"
    seen = seen_patients(init, read_manifest(manifest))
    assert seen is not None and seen.train and seen.val
    split = {"mode": "auto", "seed": 0, "test_fraction": 0.25, "folds": 2}
    every = seen.train | seen.val
    for theirs, moved in (("training", min(seen.train)), ("validation", min(seen.val))):
        fold = Fold(0, train=every - {moved}, val=frozenset(), test=frozenset({moved}))
        plan = SplitPlan(test=fold.test, folds=(fold,), mode="auto")
        with pytest.raises(LuvnetError, match=f"1 of its {theirs} patients are fold 0's test"):
            check_init_fold(init, seen, plan, 0, split, head=True)
    fold = Fold(0, train=seen.train, val=seen.val, test=frozenset())
    check_init_fold(init, seen, SplitPlan(frozenset(), (fold,), "auto"), 0, split, head=True)


def test_a_damaged_split_record_is_refused_in_one_line(
    data, heads: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    source = tmp_path / "damaged"
    shutil.copytree(heads / "fold_0" / "best", source)
    config = json.loads((source / "config.json").read_text())
    del config["provenance"]["split"]["patient_digests"]["train"]
    (source / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    assert main(_train(data, tmp_path / "r", "--init", str(source), "--fold", "0")) == 2
    err = _error(capsys)
    assert "its provenance split record is damaged (KeyError: 'train')" in err, err


def test_init_run_dir_trained_before_the_split_column_was_edited_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    manifest = make_dataset(tmp_path / "videos", patients=8, videos_per_patient=1)
    column = {f"P0{p}": "train" if p < 5 else "val" if p < 7 else "test" for p in range(8)}
    lines = manifest.read_text().splitlines()

    def write_split_column() -> None:
        rows = [f"{row},{column[row.split(',')[1]]}" for row in lines[1:]]
        manifest.write_text("\n".join([f"{lines[0]},split", *rows]) + "\n")

    write_split_column()
    data = (manifest, tmp_path / "cache")
    heads = tmp_path / "heads"
    assert main(_train(data, heads, "--fold", "0")) == 0
    # P04 moved from training to validation: the test set, and so run.json's check, unchanged
    column["P04"] = "val"
    write_split_column()
    capsys.readouterr()
    assert main(_train(data, tmp_path / "r", "--init", str(heads), "--fold", "0")) == 2
    err = _error(capsys)
    assert f"--init {heads}: its fold_0/best was not trained on this run's fold 0 (its split" in err
    assert "its patients or split column changed since that run, though not its test set" in err
    assert f"or pass --init {heads / 'fold_0' / 'best'} --fold 0 to start from" in err, err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("edit", "why"),
    [
        ("fold 0's checkpoint copied in", "its split record names fold 0"),
        ("record removed", "it has no split record"),
    ],
)
def test_init_run_dir_whose_fold_record_is_not_that_fold_is_refused(
    data, heads: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: str, why: str
):
    run = tmp_path / "run"
    shutil.copytree(heads, run)
    best = run / "fold_1" / "best"
    if edit == "fold 0's checkpoint copied in":
        shutil.rmtree(best)
        shutil.copytree(heads / "fold_0" / "best", best)
    else:
        config = json.loads((best / "config.json").read_text())
        del config["provenance"]["split"]
        (best / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    assert main(_train(data, tmp_path / "r", "--init", str(run), "--fold", "1")) == 2
    err = _error(capsys)
    assert f"its fold_1/best was not trained on this run's fold 1 ({why}); " in err, err


def test_init_run_dir_on_a_numbered_split_column_starts_every_fold(tmp_path: Path):
    manifest = make_dataset(tmp_path / "videos", patients=8, videos_per_patient=1)
    lines = manifest.read_text().splitlines()
    column = ["test" if i == 7 else str(i % 2) for i in range(8)]  # the test patient, 2 folds
    rows = [f"{row},{cell}" for row, cell in zip(lines[1:], column, strict=True)]
    manifest.write_text("\n".join([f"{lines[0]},split", *rows]) + "\n")
    data = (manifest, tmp_path / "cache")
    heads, out = tmp_path / "heads", tmp_path / "finetune"
    assert main(_train(data, heads)) == 0
    assert main(_train(data, out, "--init", str(heads), "--init-head")) == 0
    for k in (0, 1):
        started = load_checkpoint(out / f"fold_{k}" / "best").provenance["init"]["model_id"]
        assert started == load_checkpoint(heads / f"fold_{k}" / "best").model_id
    # the column holds the test patients, so --test-fraction draws nothing here: a resume with
    # another one goes on, as --init RUN above would accept it
    assert main(_train(data, heads, "--test-fraction", "0.3", "--epochs", "2")) == 0
    assert load_state(heads / "fold_0" / "last").progress.epoch == 2
