"""``luvnet train --eval-metric macro_auc``: the validation macro AUC, not the loss, picks
``best/`` and counts epochs without gain; until an lr decay or early stop, training is the
loss's."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from luvnet.cli import main
from luvnet.engine.errors import LuvnetError
from luvnet.engine.evaluation.inference import Scored
from luvnet.engine.evaluation.metrics import compute_metrics
from luvnet.engine.model.checkpoint import load_checkpoint
from luvnet.engine.training.state import load_state
from luvnet.engine.training.stopping import require_auc, validation_score
from luvnet.engine.training.validation import Validation
from tests.engine.tiny_data import TINY_TRAIN_ARGS, make_dataset

EPOCHS = 5


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return make_dataset(root / "videos", patients=6, videos_per_patient=2), root / "cache"


def _argv(data: tuple[Path, Path], out: Path, *extra: str) -> list[str]:
    manifest, cache = data
    argv = ["train", "--manifest", str(manifest), "--out", str(out), "--cache", str(cache)]
    # at this lr the tiny run's validation loss is lowest at epoch 3, its AUC highest at 5
    flags = ["--batch-size", "2", "--epochs", str(EPOCHS), "--lr", "3e-3"]
    return [*argv, *TINY_TRAIN_ARGS, *flags, *extra]


def _history(run: Path) -> list[dict[str, str]]:
    with open(run / "fold_0" / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def _running_best(values: list[float], better: Callable[[float, float], bool]) -> list[bool]:
    """Which entries beat every one before them (the first always does)."""
    marks, best = [], None
    for value in values:
        marks.append(best is None or better(value, best))
        best = value if marks[-1] else best
    return marks


def test_the_auc_picks_best_and_training_is_unchanged(data: tuple[Path, Path], tmp_path: Path):
    by_loss, by_auc = tmp_path / "loss", tmp_path / "auc"
    assert main(_argv(data, by_loss)) == 0
    assert main(_argv(data, by_auc, "--eval-metric", "macro_auc")) == 0
    a, b = _history(by_loss), _history(by_auc)
    assert len(a) == len(b) == EPOCHS
    # the same batches and steps, so the same weights and validation figures every epoch
    for column in ("train_loss", "val_loss", "val_macro_auc"):
        assert [r[column] for r in a] == [r[column] for r in b], column
    first, last = load_state(by_loss / "fold_0" / "last"), load_state(by_auc / "fold_0" / "last")
    assert first is not None and last is not None
    assert all(torch.equal(v, last.model[k]) for k, v in first.model.items())
    # ... and each run's "best" column and best/ follow its own metric
    losses = [float(r["val_loss"]) for r in a]
    aucs = [float(r["val_macro_auc"]) for r in b]
    assert [r["best"] == "1" for r in a] == _running_best(losses, lambda x, y: x < y)
    assert [r["best"] == "1" for r in b] == _running_best(aucs, lambda x, y: x > y)
    kept = load_checkpoint(by_auc / "fold_0" / "best")
    assert losses.index(min(losses)) != aucs.index(max(aucs)), "the metrics must disagree here"
    assert kept.metrics["epoch"] == 1 + aucs.index(max(aucs))
    assert kept.metrics["val_macro_auc"] == pytest.approx(max(aucs))
    assert load_checkpoint(by_loss / "fold_0" / "best").metrics["epoch"] == 1 + losses.index(
        min(losses)
    )
    assert last.progress.best_score == pytest.approx(max(aucs))
    assert kept.provenance["eval_metric"] == "macro_auc"
    assert "eval_metric" not in load_checkpoint(by_loss / "fold_0" / "best").provenance
    assert json.loads((by_auc / "run.json").read_text())["args"]["eval_metric"] == "macro_auc"


def test_a_resume_keeps_its_metric_and_is_refused_another_in_one_line(
    data: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    out, straight = tmp_path / "r", tmp_path / "straight"
    auc = ["--eval-metric", "macro_auc"]
    assert main([*_argv(data, out), "--epochs", "2", *auc]) == 0
    capsys.readouterr()
    # its best figure so far is an AUC: the loss cannot be compared with it
    assert main(_argv(data, out)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("luvnet train: error: ") and err[-1].endswith(
        "last: trained with --eval-metric macro_auc, this command has --eval-metric loss; "
        "rerun with --eval-metric macro_auc or train into a new --out"
    ), err[-1]
    # resumed with it, the best so far is still the highest AUC: as if never stopped
    assert main([*_argv(data, out), *auc]) == 0
    assert main([*_argv(data, straight), *auc]) == 0
    columns = ("epoch", "train_loss", "val_loss", "val_macro_auc", "best")
    resumed, whole = (
        [{k: r[k] for k in columns} for r in _history(run)] for run in (out, straight)
    )
    assert resumed == whole
    aucs = [float(r["val_macro_auc"]) for r in whole]
    assert [r["best"] == "1" for r in resumed] == _running_best(aucs, lambda x, y: x > y)
    kept = load_checkpoint(out / "fold_0" / "best").metrics["epoch"]
    assert kept == 1 + aucs.index(max(aucs)) > 2, "chosen after the resume, against the saved best"


def test_bad_eval_metric_is_one_line(
    data: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    assert main([*_argv(data, tmp_path / "x"), "--eval-metric", "auc"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["luvnet train: error: --eval-metric: expected one of loss, macro_auc, got 'auc'"]


def test_a_validation_set_without_an_auc_is_refused_before_training(
    data: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    manifest, cache = data
    with open(manifest, newline="") as f:
        rows = list(csv.reader(f))
    positive = manifest.with_name("all_positive.csv")  # beside the videos it names
    with open(positive, "w", newline="") as f:
        csv.writer(f).writerows([rows[0], *([r[0], r[1]] + ["1"] * (len(r) - 2) for r in rows[1:])])
    out = tmp_path / "r"
    argv = _argv((positive, cache), out, "--eval-metric", "macro_auc")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        "luvnet train: error: fold 0 validation set: --eval-metric macro_auc: no pattern has "
        "clips both with and without it, so no AUC is defined; use --eval-metric loss (or a "
        "split whose validation patients show and lack a pattern)"
    )
    assert not out.exists(), "refused before anything is written"
    require_auc(np.array([[1.0, np.nan], [0.0, 1.0], [1.0, 1.0]]), "x")  # one pattern has both
    with pytest.raises(LuvnetError, match=r"^x: --eval-metric macro_auc: no pattern has"):
        require_auc(np.array([[1.0, 0.0], [1.0, np.nan]]), "x")


def test_macro_auc_without_a_defined_auc_is_one_error():
    labels = np.ones((4, 2))  # every clip positive for both patterns: no AUC is defined
    probs = np.full((4, 2), 0.5)
    scored = Scored(clips=[], labels=labels, probs=probs, loss=0.7, n_known=8)
    validation = Validation(scored, compute_metrics(labels, probs, None, ("a", "b")), 0.0)
    assert validation_score(validation, "loss", label="fold 1") == 0.7
    with pytest.raises(LuvnetError, match=r"^fold 1 validation set: --eval-metric macro_auc: "):
        validation_score(validation, "macro_auc", label="fold 1")
