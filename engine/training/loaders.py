"""Training data of one fold: resumable shuffling, per-clip augmentation, the training loader.

Every random choice of an epoch is a pure function of (seed, epoch, clip), so a run killed
mid-epoch and resumed sees exactly the batches and augmentations it would have seen:

* :class:`ResumableSampler` shuffles with ``DistributedSampler`` (seed + epoch; one shard per
  rank under torchrun, the whole set otherwise) and can start at any batch of the epoch;
* :class:`AugmentedClips` draws each clip's augmentation from a generator seeded by
  (seed, epoch, clip index), whichever DataLoader worker loads it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Self, cast

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from luvnet.engine.data.clips import ClipAugment, ClipDataset
from luvnet.engine.errors import LuvnetError
from luvnet.engine.evaluation.embeddings import EmbeddedClips
from luvnet.engine.training.distributed import DistEnv
from luvnet.engine.training.settings import FitSettings


class AugmentedClips(Dataset):
    """``base[i]`` with a clip-consistent augmentation (flip/rotation, optionally zoom and
    jitter) seeded by (seed, epoch, i); no change when ``augment`` is None."""

    def __init__(
        self, base: ClipDataset | EmbeddedClips, augment: ClipAugment | None, seed: int
    ) -> None:
        self.base = base
        self.augment = augment
        self.seed = seed
        self.epoch = 0  # set before each epoch's DataLoader iterator is created

    @classmethod
    def for_training(cls, train: ClipDataset | EmbeddedClips, settings: FitSettings) -> Self:
        """``train`` with the settings' augmentation: flip/rotation, with zoom and jitter when
        set; none with ``--no-augment`` or for cached embeddings (their frames are fixed)."""
        augment = None
        if settings.augment and isinstance(train, ClipDataset):
            augment = ClipAugment(max_zoom=settings.augment_zoom, jitter=settings.augment_jitter)
        return cls(train, augment, settings.seed)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.base[index]
        if self.augment is None:  # --no-augment
            return item
        generator = torch.Generator().manual_seed(
            (self.seed * 1_000_003 + self.epoch) * 10_000_019 + index
        )
        item["frames"] = self.augment(item["frames"], generator=generator)
        return item


class ResumableSampler(Sampler[int]):
    """This rank's shuffled indices for an epoch, starting at batch ``start_batch``."""

    def __init__(self, size: int, env: DistEnv, seed: int, batch_size: int) -> None:
        # DistributedSampler only takes len() of its dataset; the stub asks for a Dataset.
        self.inner: DistributedSampler[int] = DistributedSampler(
            cast("Dataset[int]", range(size)),
            num_replicas=env.world_size,
            rank=env.rank,
            shuffle=True,
            seed=seed,
        )
        self.batch_size = batch_size
        self.start_batch = 0

    def set_position(self, epoch: int, start_batch: int) -> None:
        self.inner.set_epoch(epoch)
        self.start_batch = start_batch

    def batches_per_epoch(self) -> int:
        return -(-len(self.inner) // self.batch_size)

    def __iter__(self) -> Iterator[int]:
        indices = list(iter(self.inner))
        return iter(indices[self.start_batch * self.batch_size :])

    def __len__(self) -> int:
        return max(0, len(self.inner) - self.start_batch * self.batch_size)


def train_loader(
    dataset: AugmentedClips,
    sampler: ResumableSampler,
    *,
    batch_size: int,
    num_workers: int,
    pin_memory: bool,
    generator: torch.Generator,
) -> DataLoader:
    """``generator`` seeds the workers, so the global RNG (dropout) is not drawn from here."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        generator=generator,
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=False,
        persistent_workers=False,  # workers must see the new epoch set on the dataset
    )


def require_clips(dataset: ClipDataset, what: str) -> None:
    if len(dataset) == 0:
        raise LuvnetError(f"{what}: expected at least one clip, got none")
