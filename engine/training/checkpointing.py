"""What a fold keeps on disk: the best checkpoint, the resumable state, and when to resume.

Layout of ``RUN/fold_<i>/`` (docs/formats.md): ``best/`` the model of the best validation
``--eval-metric`` figure (the loss by default) as a checkpoint with its Youden thresholds,
``metrics_val.json`` and ``predictions_val.csv`` of that epoch, ``last/`` the state a rerun
continues from (:mod:`~luvnet.engine.training.state`), and ``history.csv``.

A resumed run must share the settings that give the saved state its meaning (the
:func:`settings_fingerprint`); the epochs, patience, budget, workers and device may change
between invocations. The wall clock and CPU time a fold has used are summed over invocations
(:class:`FoldClock`), so a time budget holds across a kill and a resume.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from luvnet.engine.data.unreadable import SkippedVideo
from luvnet.engine.errors import LuvnetError
from luvnet.engine.evaluation.evaluate import write_results
from luvnet.engine.model.checkpoint import save_checkpoint
from luvnet.engine.model.config import ModelConfig
from luvnet.engine.model.network import LUVNet
from luvnet.engine.training.averaging import WeightAverage
from luvnet.engine.training.settings import FitSettings
from luvnet.engine.training.state import (
    Progress,
    check_fingerprint,
    load_state,
    restore_rng,
    save_state,
)
from luvnet.engine.training.validation import Validation, fitted_thresholds, threshold_sources

# What a resumed run must share with the saved state, besides the model config.
FINGERPRINT_SETTINGS = (
    "lr", "batch_size", "accumulate", "amp", "seed", "pos_weight", "lr_schedule",
    "freeze_bn_after",
)  # fmt: skip


@dataclass(frozen=True)
class FoldPaths:
    root: Path

    @property
    def best(self) -> Path:
        return self.root / "best"

    @property
    def last(self) -> Path:
        return self.root / "last"

    @property
    def history(self) -> Path:
        return self.root / "history.csv"

    def metrics(self, split: str) -> Path:
        return self.root / f"metrics_{split}.json"

    def predictions(self, split: str) -> Path:
        return self.root / f"predictions_{split}.csv"


def settings_fingerprint(
    config: ModelConfig, settings: FitSettings, extra: dict[str, Any]
) -> dict[str, Any]:
    """What a resumed run must share with the saved state (not epochs, patience, budget,
    workers or device: those may change between invocations)."""
    arch = config.to_dict()
    arch.pop("thresholds")
    chosen = asdict(settings)
    document = {"config": arch, **{k: chosen[k] for k in FINGERPRINT_SETTINGS}, **extra}
    return json.loads(json.dumps(document))  # tuples -> lists, as they come back from JSON


class FoldClock:
    """Wall clock and CPU seconds spent on a fold, summed over resumed invocations."""

    def __init__(self, elapsed_s: float = 0.0, cpu_s: float = 0.0) -> None:
        self.restore(elapsed_s, cpu_s)

    def restore(self, elapsed_s: float, cpu_s: float) -> None:
        """Continue from the totals of earlier invocations."""
        self._base_elapsed, self._t0 = elapsed_s, time.monotonic()
        self._base_cpu, self._cpu0 = cpu_s, time.process_time()

    def elapsed(self) -> float:
        return self._base_elapsed + (time.monotonic() - self._t0)

    def cpu(self) -> float:
        """CPU seconds this process used on the fold (all threads), summed over invocations."""
        return self._base_cpu + (time.process_time() - self._cpu0)


class Checkpointer:
    """Saves and restores one fold's model, optimizer, loss scaler, RNG and, with ``--ema``,
    weight average.

    Only the main process writes (``is_main``); every process resumes from the same files.
    """

    def __init__(
        self,
        paths: FoldPaths,
        *,
        model: LUVNet,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        fingerprint: dict[str, Any],
        provenance: dict[str, Any],
        is_main: bool = True,
        skipped_val: list[SkippedVideo] | None = None,
        average: WeightAverage | None = None,
    ) -> None:
        self.paths = paths
        self.model = model
        self.average = average
        self.optimizer = optimizer
        self.scaler = scaler
        self.fingerprint = fingerprint
        self.provenance = provenance
        self.is_main = is_main
        self.skipped_val = skipped_val  # unreadable validation videos left out

    def resume(self, clock: FoldClock) -> Progress | None:
        """Load ``last/`` into the model, optimizer, scaler, RNG and ``clock``; returns its
        progress, or None when there is no saved state yet.

        Raises:
            LuvnetError: a damaged state, or one saved with other settings.
        """
        state = load_state(self.paths.last)
        if state is None:
            return None
        check_fingerprint(self.paths.last, state.fingerprint, self.fingerprint)
        self.model.load_state_dict(state.model, strict=True)
        self.optimizer.load_state_dict(state.optimizer)
        if state.scaler:
            self.scaler.load_state_dict(state.scaler)
        if self.average is not None:  # the fingerprint matched, so it was saved with --ema
            try:
                self.average.load_state_dict(state.average)
            except LuvnetError as err:
                raise LuvnetError(
                    f"{self.paths.last}: {err}; delete {self.paths.last} to restart"
                ) from None
        restore_rng(state.rng["tensors"], state.rng["plain"])
        clock.restore(state.progress.elapsed_s, state.progress.cpu_s)
        return state.progress

    def save_last(self, progress: Progress, clock: FoldClock) -> None:
        """The resumable state, with the time spent so far (main process only)."""
        if not self.is_main:
            return
        progress.elapsed_s = clock.elapsed()
        progress.cpu_s = clock.cpu()
        save_state(
            self.paths.last,
            progress=progress,
            fingerprint=self.fingerprint,
            model=self.model,
            optimizer=self.optimizer,
            scaler=self.scaler,
            average=None if self.average is None else self.average.state_dict(),
        )

    def save_best(
        self, model: LUVNet, config: ModelConfig, validation: Validation, epoch: int
    ) -> None:
        """``model`` (the one validated: the trained weights, or their average with ``--ema``)
        as ``best/`` with the thresholds fitted on this validation, and the validation's
        metrics and predictions; ``epoch`` is 0-based."""
        names = config.pattern_names
        metrics = validation.metrics
        summary = {
            "epoch": epoch + 1,
            "val_loss": validation.loss,
            "val_micro_auc": metrics["micro_auc"],
            "val_macro_auc": metrics["macro_auc"],
            "val_auc": {n: metrics["patterns"][n]["auc"] for n in names},
            "threshold_source": threshold_sources(metrics, names),
        }
        save_checkpoint(
            model,
            self.paths.best,
            config=config.replace(thresholds=fitted_thresholds(metrics, names)),
            provenance=self.provenance,
            metrics=summary,
        )
        write_results(
            validation.scored,
            self.paths.metrics("val"),
            self.paths.predictions("val"),
            None,
            names,
            self.skipped_val,
        )
