"""What each fold of ``luvnet train`` trains with: its settings, positive weights and the
fingerprint extras a resume must share (engine/training/checkpointing.py)."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from luvnet.engine.data.clips import ClipDataset, clip_labels
from luvnet.engine.data.unreadable import SkippedVideo
from luvnet.engine.model.loss import auto_pos_weight
from luvnet.engine.training.settings import FitSettings, TrainSettings


def fold_fit_settings(
    settings: TrainSettings,
    index: int,
    budget: float | None,
    num_workers: int,
    pos_weight: tuple[float, ...] | None,
) -> FitSettings:
    """Fold ``index``'s training settings: the run's, with its own seed, budget share and
    ``--pos-weight``."""
    s = settings
    return FitSettings(
        epochs=s.epochs,
        patience=s.patience,
        lr=s.lr,
        batch_size=s.batch_size,
        accumulate=s.accumulate,
        amp=s.amp,
        seed=s.seed * 1000 + index,
        save_every=s.save_every,
        budget_s=budget,
        num_workers=num_workers,
        pos_weight=pos_weight,
        bn_recalibrate=s.bn_recalibrate,
        augment=s.augment,
        augment_zoom=s.augment_zoom,
        augment_jitter=s.augment_jitter,
        lr_decay=s.lr_decay,
        lr_patience=s.lr_patience,
        lr_schedule=s.lr_schedule,
        freeze_bn_after=s.freeze_bn_after,
        freeze_encoder=s.freeze_encoder,
        trainable_blocks=s.trainable_blocks,
        ema=s.ema,
        eval_metric=s.eval_metric,
    )


def fold_extra(
    settings: TrainSettings,
    index: int,
    world_size: int,
    manifest_sha: str,
    init_id: str | None,
    skipped: list[SkippedVideo],
) -> dict[str, Any]:
    """What fold ``index``'s resume must share besides its model and training settings
    (:func:`~luvnet.engine.training.checkpointing.settings_fingerprint`)."""
    s = settings
    extra: dict[str, Any] = {
        "manifest_sha256": manifest_sha,
        "weights": s.weights,
        "fold": index,
        "world_size": world_size,
    }
    # empty when off: runs from before these options still resume
    extra |= s.trunk_fingerprint() | s.augment_fingerprint() | s.split_fingerprint()
    extra |= s.ema_fingerprint() | s.eval_metric_fingerprint()
    if init_id is not None:
        extra["init_model_id"] = init_id
        extra["init_head"] = s.init_head
    if skipped:  # resuming with other videos readable would train on other data
        extra["skipped_videos"] = [item.video for item in skipped]
    return extra


def pos_weights(
    spec: Literal["auto"] | list[float] | None, train: ClipDataset
) -> tuple[float, ...] | None:
    """``--pos-weight``: None, the given numbers, or negatives/positives of the training clips."""
    if spec is None:
        return None
    if spec == "auto":
        return tuple(auto_pos_weight(dataset_labels(train)))
    return tuple(spec)


def dataset_labels(dataset: ClipDataset) -> np.ndarray:
    """float [N, P] clip labels (NaN = unknown) without loading any frame."""
    rows = [
        clip_labels(dataset.rows[c.row].labels, c.start, c.end, dataset.patterns)[0]
        for c in dataset.clips
    ]
    return np.array(rows, dtype=float).reshape(len(rows), len(dataset.patterns))
