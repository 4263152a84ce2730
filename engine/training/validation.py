"""Validation of one epoch and the per-pattern thresholds fitted on it.

After each epoch rank 0 scores the validation clips with the same
:func:`~luvnet.engine.evaluation.inference.predict` that ``luvnet evaluate`` uses, computes
the metrics (AUC per pattern, micro and macro, Youden's J thresholds) and turns them into a
``history.csv`` row. A pattern whose validation labels cannot fit a Youden threshold (no known
label, or a single class) keeps :data:`DEFAULT_THRESHOLD`; the best checkpoint records which.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from luvnet.engine.data.clips import ClipDataset
from luvnet.engine.data.datasets import eval_loader
from luvnet.engine.errors import LuvnetError
from luvnet.engine.evaluation.embeddings import EmbeddedClips
from luvnet.engine.evaluation.inference import Scored, predict
from luvnet.engine.evaluation.metrics import compute_metrics
from luvnet.engine.model.config import ModelConfig
from luvnet.engine.model.network import LUVNet
from luvnet.engine.progress import ProgressBar

DEFAULT_THRESHOLD = 0.5  # kept for a pattern whose validation labels cannot fit Youden's J


def fitted_thresholds(metrics: dict[str, Any], names: tuple[str, ...]) -> tuple[float, ...]:
    """Youden thresholds from validation metrics; 0.5 where a pattern has none (no known
    labels or a single class in validation; metrics_val.json says why)."""
    values = [metrics["patterns"][n]["threshold"] for n in names]
    return tuple(DEFAULT_THRESHOLD if v is None else float(v) for v in values)


def threshold_sources(metrics: dict[str, Any], names: tuple[str, ...]) -> dict[str, str]:
    """Per pattern, ``"youden"`` where the threshold was fitted, ``"default"`` where not."""
    return {
        n: "youden" if metrics["patterns"][n]["threshold"] is not None else "default" for n in names
    }


@dataclass(frozen=True)
class Validation:
    """One validation pass: per-clip scores, their metrics and the seconds it took."""

    scored: Scored
    metrics: dict[str, Any]  # luvnet.engine.evaluation.metrics schema, thresholds fitted
    seconds: float

    @property
    def loss(self) -> float:
        assert self.scored.loss is not None  # validate() refuses a pass without one
        return self.scored.loss


def validate(
    model: LUVNet,
    clips: ClipDataset | EmbeddedClips,
    config: ModelConfig,
    *,
    root: Path,
    batch_size: int,
    num_workers: int,
    pin_memory: bool,
    pos_weight: torch.Tensor | None,
    amp: bool,
    label: str,
    epoch: int,
    show_progress: bool = True,
) -> Validation:
    """Score ``clips`` and compute their metrics; ``epoch`` (0-based) and ``label`` name the
    pass in the progress bar and errors.

    Raises:
        LuvnetError: the validation loss is not a finite number (no known label, or a
            diverged model).
    """
    t0 = time.monotonic()
    loader = eval_loader(
        clips, batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory
    )
    bar = ProgressBar(len(loader), f"{label} validate", enabled=show_progress, show_loss=False)
    scored = predict(
        model,
        loader,
        config.preprocess,
        root=root,
        pos_weight=pos_weight,
        amp=amp,
        on_batch=bar.update,
    )
    bar.close()
    seconds = time.monotonic() - t0
    if scored.loss is None or not math.isfinite(scored.loss):
        raise LuvnetError(
            f"{label}: validation loss is {scored.loss} at epoch {epoch + 1}; "
            "expected a finite number (lower --lr, or check the validation labels)"
        )
    metrics = compute_metrics(scored.labels, scored.probs, None, config.pattern_names)
    return Validation(scored, metrics, seconds)


def history_row(
    validation: Validation,
    names: tuple[str, ...],
    *,
    epoch: int,
    train_loss: float | None,
    lr: float,
    val_s: float,
    elapsed_s: float,
    previous_elapsed_s: float,
    cpu_s: float,
    best: bool,
    partial: bool,
) -> dict[str, Any]:
    """The ``history.csv`` row of epoch ``epoch`` (0-based; columns: history.py).

    ``val_s`` is the validation's share of the epoch, BatchNorm recalibration included (the
    time a budgeted run keeps in reserve for it); ``epoch_s`` the wall clock since the
    previous row's ``elapsed_s``."""
    metrics = validation.metrics
    return {
        "epoch": epoch + 1,
        "train_loss": train_loss,
        "val_loss": validation.loss,
        "val_micro_auc": metrics["micro_auc"],
        "val_macro_auc": metrics["macro_auc"],
        **{f"val_auc_{n}": metrics["patterns"][n]["auc"] for n in names},
        "lr": lr,
        "epoch_s": elapsed_s - previous_elapsed_s,
        "val_s": val_s,
        "elapsed_s": elapsed_s,
        "cpu_s": cpu_s,
        "best": best,
        "partial": partial,
    }


def epoch_summary(row: dict[str, Any], best_epoch: int | None) -> str:
    """One log line for a history row; ``best_epoch`` (0-based) is shown when not this one."""
    macro = "n/a" if row["val_macro_auc"] is None else f"{row['val_macro_auc']:.3f}"
    train_loss = "n/a" if row["train_loss"] is None else f"{row['train_loss']:.4f}"
    shown = "n/a" if best_epoch is None else best_epoch + 1
    return (
        f"epoch {row['epoch']}: train loss {train_loss}, "
        f"val loss {row['val_loss']:.4f}, val macro AUC {macro}"
        + (" (best)" if row["best"] else f" (best epoch {shown})")
        + (" [stopped early: time budget]" if row["partial"] else "")
    )
