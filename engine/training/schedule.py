"""The learning-rate schedule and the BatchNorm policy of one fold.

Both follow the run: what is decided here depends only on the settings and on the counters in
:class:`~luvnet.engine.training.state.Progress`, so every DDP rank decides the same and a
resumed run carries on where it stopped (the current lr travels in the optimizer state, the
frozen flag in the progress).

* ``plateau`` (default): the lr stays at ``--lr``, multiplied by ``--lr-decay`` after every
  ``--lr-patience`` epochs without a better ``--eval-metric`` figure, the validation loss by
  default (0: constant, the paper's).
* ``linear``: before each optimizer step the lr is ``--lr x (1 - share of the run spent)``.
  Under a fixed budget a decay tied to the budget ends at a settled model instead of wherever a
  plateau schedule happened to be (Li et al., ICLR 2020, "Budgeted training").
* ``--freeze-bn-after F``: once that share of the run is spent, BatchNorm is recalibrated once
  and the rest of the run trains with those statistics fixed, the ones validation and the
  stream normalise with. Batches of 8 clips hold frames of only 8 videos, so batch statistics
  swing from batch to batch and a network trained on them can depend on that: on the phantom,
  one set of weights scored validation losses from 0.20 to 0.51 depending on which 16 training
  batches recalibrated it (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021).
* ``--bn-recalibrate N``: re-estimate BatchNorm statistics on N training batches before every
  validation, unless they are frozen (:mod:`~luvnet.engine.training.batchnorm`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from luvnet.engine.training.batchnorm import batchnorm_layers


def steps_per_epoch(n_batches: int, accumulate: int) -> int:
    """Optimizer steps in an epoch of ``n_batches`` batches, ``accumulate`` per step."""
    return math.ceil(n_batches / accumulate)


def run_fraction(
    global_step: int,
    *,
    steps_per_epoch: int,
    epochs: int,
    elapsed_s: float | None = None,
    budget_s: float | None = None,
) -> float:
    """How much of the run is spent, 0..1: the larger of the optimizer steps over ``epochs``
    epochs and the wall clock over the time budget, whichever limit comes first."""
    fraction = global_step / max(1, epochs * steps_per_epoch)
    if budget_s is not None and elapsed_s is not None:
        fraction = max(fraction, elapsed_s / budget_s)
    return min(1.0, fraction)


@dataclass(frozen=True)
class Schedule:
    """The lr schedule and BatchNorm policy of a fold (module docstring)."""

    lr: float  # the starting (peak) learning rate
    kind: str = "plateau"  # one of settings.LR_SCHEDULES
    lr_decay: float = 1.0  # plateau: factor applied ...
    lr_patience: int = 0  # ... after every lr_patience epochs without gain (0 = off)
    freeze_bn_after: float | None = None  # share of the run after which BatchNorm is frozen
    bn_recalibrate: int = 0  # training batches per recalibration (0 = never)

    def follows_run(self, bn_frozen: bool) -> bool:
        """Whether the share of the run spent must be measured before the next optimizer step
        (under DDP that measure is a collective: every rank must agree, and does)."""
        freeze_pending = self.freeze_bn_after is not None and not bn_frozen
        return self.kind == "linear" or freeze_pending

    def lr_at(self, fraction: float) -> float | None:
        """The lr to set before a step at this share of the run; None: leave it as it is."""
        if self.kind == "linear":
            return self.lr * (1.0 - fraction)
        return None

    def freeze_due(self, fraction: float, bn_frozen: bool) -> bool:
        """Whether BatchNorm is to be recalibrated and frozen now."""
        if self.freeze_bn_after is None or bn_frozen:
            return False
        return fraction >= self.freeze_bn_after

    def plateau_decay_due(self, bad_epochs: int) -> bool:
        """Reduce-on-plateau at an epoch end, decided from the early-stopping counter alone,
        so it needs no state of its own and every rank agrees."""
        return self.lr_patience > 0 and bad_epochs > 0 and bad_epochs % self.lr_patience == 0

    def recalibrate_before_validation(self, bn_frozen: bool) -> bool:
        """Precise BN before each validation, unless the statistics are frozen."""
        return self.bn_recalibrate > 0 and not bn_frozen


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def scale_lr(optimizer: torch.optim.Optimizer, factor: float) -> float:
    """Multiply every group's lr by ``factor``; returns the first group's new lr."""
    for group in optimizer.param_groups:
        group["lr"] *= factor
    return float(optimizer.param_groups[0]["lr"])


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])


def train_mode(model: torch.nn.Module, bn_frozen: bool) -> None:
    """Train mode, except for BatchNorm once frozen (it then normalises with, and keeps, its
    running statistics)."""
    model.train()
    if bn_frozen:
        for layer in batchnorm_layers(model):
            layer.eval()
