"""Saving and resuming a fold, on their own (engine/training/checkpointing.py)."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from luvnet.engine.errors import LuvnetError
from luvnet.engine.evaluation.inference import Scored
from luvnet.engine.evaluation.metrics import compute_metrics, read_metrics
from luvnet.engine.evaluation.predictions import ClipRef, read_predictions
from luvnet.engine.model.checkpoint import load_checkpoint
from luvnet.engine.model.config import PATTERNS, ModelConfig, PreprocessConfig
from luvnet.engine.model.network import LUVNet, build_model
from luvnet.engine.training.checkpointing import (
    Checkpointer,
    FoldClock,
    FoldPaths,
    settings_fingerprint,
)
from luvnet.engine.training.settings import FitSettings
from luvnet.engine.training.state import STATE_JSON, Progress
from luvnet.engine.training.validation import Validation

CONFIG = ModelConfig(
    backbone="mobilenet_v3_small", kernel_size=3, fusion_hidden=16, classifier_hidden=8,
    clip_length=4, clip_step=4, preprocess=PreprocessConfig(image_size=32),
)  # fmt: skip
FINGERPRINT = {"seed": 3, "lr": 0.01}


def _trained(seed: int) -> tuple[LUVNet, torch.optim.Optimizer]:
    """A small LUV-Net after a few Adam steps (so the optimizer has state to restore)."""
    torch.manual_seed(seed)
    model = build_model(CONFIG)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(2):
        logits, _ = model(torch.randn(2, 4, 3, 32, 32))
        logits.square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    return model, optimizer


def _checkpointer(root: Path, model: LUVNet, optimizer, **kwargs) -> Checkpointer:
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    options = {"fingerprint": FINGERPRINT, "provenance": {"run": "test"}} | kwargs
    return Checkpointer(FoldPaths(root), model=model, optimizer=optimizer, scaler=scaler, **options)


def test_save_then_resume_restores_counters_rng_model_and_optimizer(tmp_path: Path):
    model, optimizer = _trained(0)
    progress = Progress(
        epoch=2, step=3, global_step=11, best_score=0.4, best_epoch=1, bad_epochs=1,
        epoch_loss_sum=1.5, epoch_loss_count=3, bn_frozen=True, history=[{"epoch": 1}],
    )  # fmt: skip
    clock = FoldClock(elapsed_s=100.0, cpu_s=40.0)
    saver = _checkpointer(tmp_path, model, optimizer)
    torch.manual_seed(123)
    random.seed(4)
    np.random.seed(5)
    saver.save_last(progress, clock)
    assert progress.elapsed_s >= 100.0 and progress.cpu_s >= 40.0
    expected_draws = (torch.rand(3), random.random(), np.random.rand())

    fresh_model, fresh_optimizer = _trained(1)  # other weights, other optimizer state
    torch.manual_seed(999)
    random.seed(999)
    np.random.seed(999)
    fresh_clock = FoldClock()
    resumed = _checkpointer(tmp_path, fresh_model, fresh_optimizer).resume(fresh_clock)

    assert resumed == progress, "every counter and the history come back"
    for key, value in model.state_dict().items():
        assert torch.equal(fresh_model.state_dict()[key], value), key
    saved_state = optimizer.state_dict()["state"]
    for pid, entries in fresh_optimizer.state_dict()["state"].items():
        for key, value in entries.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(saved_state[pid][key]))
    draws = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(draws[0], expected_draws[0]) and draws[1:] == expected_draws[1:]
    assert fresh_clock.elapsed() >= progress.elapsed_s
    assert fresh_clock.cpu() >= progress.cpu_s


def test_a_state_from_before_eval_metric_resumes_its_best_loss(tmp_path: Path):
    model, optimizer = _trained(0)
    _checkpointer(tmp_path, model, optimizer).save_last(
        Progress(epoch=2, best_score=0.4, best_epoch=1), FoldClock()
    )
    path = FoldPaths(tmp_path).last / STATE_JSON
    document = json.loads(path.read_text())
    document["progress"]["best_val_loss"] = document["progress"].pop("best_score")
    path.write_text(json.dumps(document))  # as written before the option, always the loss
    resumed = _checkpointer(tmp_path, model, optimizer).resume(FoldClock())
    assert resumed is not None and (resumed.best_score, resumed.best_epoch) == (0.4, 1)


def test_resume_without_a_saved_state_is_none(tmp_path: Path):
    model, optimizer = _trained(0)
    assert _checkpointer(tmp_path, model, optimizer).resume(FoldClock()) is None


def test_resume_refuses_other_settings(tmp_path: Path):
    model, optimizer = _trained(0)
    _checkpointer(tmp_path, model, optimizer).save_last(Progress(), FoldClock())
    other = _checkpointer(tmp_path, model, optimizer, fingerprint={"seed": 4, "lr": 0.01})
    with pytest.raises(LuvnetError, match=r"saved with seed=3, this command has seed=4"):
        other.resume(FoldClock())


def test_only_the_main_process_writes(tmp_path: Path):
    model, optimizer = _trained(0)
    _checkpointer(tmp_path, model, optimizer, is_main=False).save_last(Progress(), FoldClock())
    assert not (tmp_path / "last").exists()


def test_best_checkpoint_carries_the_fitted_thresholds(tmp_path: Path):
    model, optimizer = _trained(0)
    labels = np.array([[1, 0, 1, 0], [0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0]], dtype=float)
    probs = np.array([[0.9, 0.2, 0.7, 0.1], [0.3, 0.8, 0.4, 0.2], [0.6, 0.7, 0.1, 0.3],
                      [0.2, 0.4, 0.9, 0.4]])  # fmt: skip
    clips = [ClipRef(f"v{i}.mp4:0-4", f"v{i}.mp4", f"P{i}", 0, 4) for i in range(4)]
    scored = Scored(clips=clips, labels=labels, probs=probs, loss=0.3, n_known=16)
    metrics = compute_metrics(labels, probs, None, PATTERNS)
    saver = _checkpointer(tmp_path, model, optimizer)
    saver.save_best(model, CONFIG, Validation(scored, metrics, 1.0), epoch=6)
    ckpt = load_checkpoint(tmp_path / "best")
    thresholds = [metrics["patterns"][n]["threshold"] for n in PATTERNS]
    assert list(ckpt.config.thresholds) == [0.5 if t is None else t for t in thresholds]
    assert ckpt.config.thresholds[3] == 0.5, "effusion has one class: the default"
    assert ckpt.metrics["epoch"] == 7 and ckpt.metrics["val_loss"] == 0.3
    assert ckpt.metrics["threshold_source"]["pleural_effusion"] == "default"
    assert ckpt.metrics["threshold_source"]["a_lines"] == "youden"
    assert ckpt.provenance["run"] == "test"
    assert read_metrics(tmp_path / "metrics_val.json")["loss"] == 0.3
    assert len(read_predictions(tmp_path / "predictions_val.csv").clips) == 4


def test_fingerprint_keeps_what_a_resume_must_share_and_nothing_else():
    short = FitSettings(epochs=2, patience=1, budget_s=60.0, num_workers=2, pos_weight=(1.0, 2.0))
    long = FitSettings(epochs=90, patience=9, budget_s=None, num_workers=0, pos_weight=(1.0, 2.0))
    a = settings_fingerprint(CONFIG, short, {"fold": 0})
    assert a == settings_fingerprint(CONFIG, long, {"fold": 0})
    assert a["pos_weight"] == [1.0, 2.0], "as JSON gives it back"
    assert "thresholds" not in a["config"] and a["fold"] == 0
    assert a != settings_fingerprint(CONFIG, FitSettings(lr=0.5), {"fold": 0})
    assert a != settings_fingerprint(CONFIG.replace(kernel_size=5), short, {"fold": 0})


def test_clock_sums_invocations():
    clock = FoldClock(elapsed_s=10.0, cpu_s=2.0)
    assert 10.0 <= clock.elapsed() < 15.0 and clock.cpu() >= 2.0
    clock.restore(100.0, 50.0)
    time.sleep(0.01)
    assert clock.elapsed() >= 100.01 and clock.cpu() >= 50.0
