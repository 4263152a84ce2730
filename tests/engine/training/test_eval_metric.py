"""``luvnet train --eval-metric macro_auc``: the validation macro AUC, not the loss, picks
``best/`` and counts epochs without gain; training itself is unchanged."""

from __future__ import annotations

import csv
import json
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
from luvnet.engine.training.stopping import validation_score
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


def _running_best(values: list[float], better) -> list[bool]:
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


def test_a_resume_with_another_metric_is_refused_in_one_line(
    data: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    out = tmp_path / "r"
    assert main([*_argv(data, out), "--epochs", "1", "--eval-metric", "macro_auc"]) == 0
    capsys.readouterr()
    # its best figure so far is an AUC: the loss cannot be compared with it
    assert main([*_argv(data, out), "--epochs", "2"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("luvnet train: error: ") and "eval_metric" in last, last


def test_bad_eval_metric_is_one_line(
    data: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    assert main([*_argv(data, tmp_path / "x"), "--eval-metric", "auc"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["luvnet train: error: --eval-metric: expected one of loss, macro_auc, got 'auc'"]


def test_macro_auc_without_a_defined_auc_is_one_error():
    labels = np.ones((4, 2))  # every clip positive for both patterns: no AUC is defined
    probs = np.full((4, 2), 0.5)
    scored = Scored(clips=[], labels=labels, probs=probs, loss=0.7, n_known=8)
    validation = Validation(scored, compute_metrics(labels, probs, None, ("a", "b")), 0.0)
    assert validation_score(validation, "loss", label="fold 1", epoch=0) == 0.7
    with pytest.raises(LuvnetError, match=r"^fold 1: --eval-metric macro_auc: no pattern has"):
        validation_score(validation, "macro_auc", label="fold 1", epoch=2)
