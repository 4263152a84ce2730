"""Validation and thresholds of a fold, on their own (engine/training/validation.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from luvnet.engine.data.datasets import clip_dataset
from luvnet.engine.data.manifest import read_manifest
from luvnet.engine.errors import LuvnetError
from luvnet.engine.evaluation.inference import Scored
from luvnet.engine.evaluation.metrics import compute_metrics, youden_thresholds
from luvnet.engine.model.config import PATTERNS, ModelConfig, PreprocessConfig
from luvnet.engine.model.network import build_model
from luvnet.engine.training.validation import (
    DEFAULT_THRESHOLD,
    Validation,
    epoch_summary,
    fitted_thresholds,
    history_row,
    threshold_sources,
    validate,
)
from tests.engine.tiny_data import make_dataset

# Four patterns; the last is a single class in validation, so Youden's J cannot fit it.
LABELS = np.array([[1, 0, 1, 0], [0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [1, 0, np.nan, 0]])
PROBS = np.array(
    [
        [0.9, 0.2, 0.7, 0.1],
        [0.3, 0.8, 0.4, 0.2],
        [0.6, 0.7, 0.1, 0.3],
        [0.2, 0.4, 0.9, 0.4],
        [0.8, 0.1, 0.5, 0.5],
    ]
)


def _validation(loss: float = 0.25) -> Validation:
    metrics = compute_metrics(LABELS, PROBS, None, PATTERNS)
    scored = Scored(clips=[], labels=LABELS, probs=PROBS, loss=loss, n_known=19)
    return Validation(scored=scored, metrics=metrics, seconds=1.5)


def test_thresholds_from_known_predictions_with_the_default_where_undefined():
    metrics = compute_metrics(LABELS, PROBS, None, PATTERNS)
    expected = youden_thresholds(LABELS, PROBS)
    assert expected[3] is None and all(t is not None for t in expected[:3])
    thresholds = fitted_thresholds(metrics, PATTERNS)
    assert thresholds[:3] == pytest.approx(expected[:3], abs=0.0)
    assert thresholds[3] == DEFAULT_THRESHOLD == 0.5
    assert all(isinstance(t, float) for t in thresholds)
    assert threshold_sources(metrics, PATTERNS) == {
        "a_lines": "youden",
        "b_lines": "youden",
        "consolidation": "youden",
        "pleural_effusion": "default",
    }


def test_history_row_and_summary_line():
    validation = _validation()
    row = history_row(
        validation,
        PATTERNS,
        epoch=2,
        train_loss=0.5,
        lr=1e-3,
        val_s=2.0,
        elapsed_s=30.0,
        previous_elapsed_s=20.0,
        cpu_s=50.0,
        best=False,
        partial=True,
    )
    assert row["epoch"] == 3 and row["val_loss"] == 0.25 and row["epoch_s"] == 10.0
    assert row["val_macro_auc"] == validation.metrics["macro_auc"]
    assert row["val_auc_pleural_effusion"] is None
    assert list(row)[:5] == ["epoch", "train_loss", "val_loss", "val_micro_auc", "val_macro_auc"]
    assert list(row)[-7:] == ["lr", "epoch_s", "val_s", "elapsed_s", "cpu_s", "best", "partial"]
    line = epoch_summary(row, best_epoch=0)
    assert line.startswith("epoch 3: train loss 0.5000, val loss 0.2500, val macro AUC ")
    assert line.endswith(" (best epoch 1) [stopped early: time budget]")
    best = epoch_summary(row | {"best": True, "partial": False, "train_loss": None}, 2)
    assert best.endswith("(best)") and "train loss n/a" in best


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("val")
    manifest = read_manifest(make_dataset(root / "videos", patients=4, videos_per_patient=1))
    config = ModelConfig(
        backbone="mobilenet_v3_small", kernel_size=3, fusion_hidden=16, classifier_hidden=8,
        clip_length=8, clip_step=6, preprocess=PreprocessConfig(image_size=32),
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_model(config)
    clips = clip_dataset(manifest.rows, config, root / "cache")
    return model, clips, config, manifest.path.parent


def _validate(model, clips, config, root: Path) -> Validation:
    return validate(
        model, clips, config, root=root, batch_size=2, num_workers=0, pin_memory=False,
        pos_weight=None, amp=False, label="fold 0", epoch=4, show_progress=False,
    )  # fmt: skip


def test_validate_scores_every_clip_and_fits_thresholds(tiny):
    model, clips, config, root = tiny
    model.train()
    validation = _validate(model, clips, config, root)
    assert model.training, "the model's mode is left as it was"
    assert validation.metrics["n_clips"] == len(clips) == len(validation.scored.clips)
    assert validation.metrics["threshold_source"] == "youden"
    assert np.isfinite(validation.loss) and validation.loss > 0
    assert validation.seconds >= 0
    assert not validation.scored.clips[0].video.startswith("/"), "paths relative to the root"


def test_validate_refuses_a_non_finite_loss(tiny):
    model, clips, config, root = tiny
    broken = build_model(config)
    broken.load_state_dict(model.state_dict())
    with torch.no_grad():
        next(broken.clip_head.parameters()).fill_(float("nan"))
    with pytest.raises(LuvnetError, match=r"fold 0: validation loss is nan at epoch 5; expected"):
        _validate(broken, clips, config, root)
