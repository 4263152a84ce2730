"""Clip datasets and the plain (unshuffled) loader that scores them, for training and evaluation.

Both rooms read clips the same way: :func:`clip_dataset` cuts manifest rows into clips from
the frame cache and :func:`eval_loader` serves them in order. Training's shuffled, resumable
loader lives with the training loop (:mod:`luvnet.engine.training.loaders`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torch.utils.data import DataLoader, Dataset

from luvnet.engine.data.clips import ClipDataset
from luvnet.engine.data.manifest import ManifestRow
from luvnet.engine.data.timing import DEFAULT_DECIMATE_ABOVE
from luvnet.engine.model.config import ModelConfig


def clip_dataset(
    rows: Sequence[ManifestRow],
    config: ModelConfig,
    cache_dir: str | Path,
    decimate_above: float = DEFAULT_DECIMATE_ABOVE,
) -> ClipDataset:
    """Clips of these rows from the frame cache (videos decoded once, on first use), each
    video decimated to ``config.frame_rate`` when it is ``decimate_above`` times faster."""
    return ClipDataset.from_config(rows, config, cache_dir, decimate_above=decimate_above)


def eval_loader(
    dataset: Dataset, *, batch_size: int, num_workers: int, pin_memory: bool
) -> DataLoader:
    """Batches of ``dataset`` in order, every item once (validation, test, recalibration)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=pin_memory,
    )
