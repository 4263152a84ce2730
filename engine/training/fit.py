"""The training loop of one fold: epochs, validation, early stopping, best checkpoint, resume.

Protocol (spec §3 of ``../shared/docs/luvnet-spec.md``): Adam, BCE-with-logits over the known
labels, clip-consistent augmentation on the training clips only, early stopping on the
validation loss, the best-validation-loss model kept in ``best/`` with per-pattern Youden
thresholds fitted on that epoch's validation predictions.

Resume: the state in ``last/`` (:mod:`engine.train_state`) is written every ``save_every``
optimizer steps and at the end of every epoch. A rerun of the same command continues from it:
same epoch, same batch, same shuffling and augmentation (:mod:`engine.train_data`), same RNG.

Under torchrun (``engine.distributed``) every rank trains on its shard through
DistributedDataParallel; rank 0 alone validates, writes files and saves state while the others
wait at a barrier. Budget and stop decisions are agreed on by all ranks.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Subset

from luvnet.engine.data.clips import ClipAugment, ClipDataset
from luvnet.engine.errors import LuvnetError
from luvnet.engine.evaluation.evaluate import write_results
from luvnet.engine.evaluation.inference import (
    RealFrameModel,
    Scored,
    autocast,
    channels_last,
    model_input,
    predict,
)
from luvnet.engine.evaluation.metrics import compute_metrics
from luvnet.engine.model.checkpoint import save_checkpoint
from luvnet.engine.model.config import ModelConfig
from luvnet.engine.model.loss import masked_bce
from luvnet.engine.model.network import LUVNet
from luvnet.engine.progress import ProgressBar, format_duration
from luvnet.engine.training import distributed as ddp
from luvnet.engine.training.batchnorm import batchnorm_layers, recalibrate_batchnorm
from luvnet.engine.training.distributed import DistEnv
from luvnet.engine.training.history import TensorBoardLog, write_history
from luvnet.engine.training.loaders import (
    AugmentedClips,
    ResumableSampler,
    eval_loader,
    train_loader,
)
from luvnet.engine.training.state import (
    Progress,
    check_fingerprint,
    load_state,
    restore_rng,
    save_state,
)

DEFAULT_THRESHOLD = 0.5  # kept for a pattern whose validation labels cannot fit Youden's J


@dataclass(frozen=True)
class FitSettings:
    epochs: int = 150
    patience: int = 50
    lr: float = 1e-6
    batch_size: int = 4
    accumulate: int = 1
    amp: bool = False
    seed: int = 0
    save_every: int = 200  # optimizer steps between mid-epoch state saves; 0 = epoch ends only
    budget_s: float | None = None  # wall clock for this fold, summed over resumed invocations
    num_workers: int = 0
    pos_weight: tuple[float, ...] | None = None
    tensorboard: bool = True
    bn_recalibrate: int = 0  # training batches to re-estimate BatchNorm statistics before val
    augment: bool = True  # flip/rotation on training clips (spec §3)
    lr_decay: float = 1.0  # multiply the lr by this ...
    lr_patience: int = 0  # ... after every lr_patience epochs without a better val loss (0 = off)
    lr_schedule: str = "plateau"  # or "linear": to 0 over the run (FoldTrainer.follow_run)
    freeze_bn_after: float | None = None  # share of the run after which BatchNorm is frozen


LR_SCHEDULES = ("plateau", "linear")


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


def stop_reason(progress: Progress, settings: FitSettings, elapsed_s: float) -> str | None:
    """Why this fold is finished under the current settings, or None to keep training."""
    if progress.epoch >= settings.epochs:
        return "max_epochs"
    if progress.best_val_loss is not None and progress.bad_epochs >= settings.patience:
        return "early_stop"
    if settings.budget_s is not None and elapsed_s >= settings.budget_s:
        return "budget"
    return None


def fitted_thresholds(metrics: dict[str, Any], names: tuple[str, ...]) -> tuple[float, ...]:
    """Youden thresholds from validation metrics; 0.5 where a pattern has none (no known
    labels or a single class in validation; metrics_val.json says why)."""
    values = [metrics["patterns"][n]["threshold"] for n in names]
    return tuple(DEFAULT_THRESHOLD if v is None else float(v) for v in values)


class FoldTrainer:
    """Trains ``model`` on one fold; :meth:`fit` returns the final :class:`Progress`."""

    def __init__(
        self,
        *,
        model: LUVNet,
        config: ModelConfig,
        train: ClipDataset,
        val: ClipDataset,
        paths: FoldPaths,
        settings: FitSettings,
        env: DistEnv,
        device: torch.device,
        fingerprint: dict[str, Any],
        provenance: dict[str, Any],
        manifest_root: Path,
        label: str,
    ) -> None:
        self.model = channels_last(model.to(device))
        self.config = config
        self.val = val
        self.paths = paths
        self.s = settings
        self.env = env
        self.device = device
        self.fingerprint = fingerprint
        self.provenance = provenance
        self.root = manifest_root
        self.label = label
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=settings.lr)
        # Loss scaling is for fp16 on CUDA; CPU autocast uses bfloat16, which needs none.
        use_scaler = settings.amp and device.type == "cuda"
        self.scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
        self.pos_weight = (
            None
            if settings.pos_weight is None
            else torch.tensor(settings.pos_weight, dtype=torch.float32, device=device)
        )
        augment = ClipAugment() if settings.augment else None
        self.train_set = AugmentedClips(train, augment, settings.seed)
        self.sampler = ResumableSampler(len(train), env, settings.seed, settings.batch_size)
        self.progress = Progress()
        self.pin = device.type == "cuda"
        self.wrapped: torch.nn.Module = RealFrameModel(self.model)
        self._t0 = time.monotonic()
        self._base_elapsed = 0.0
        self._cpu0 = time.process_time()
        self._base_cpu = 0.0

    # --- state ---------------------------------------------------------------------------

    def elapsed(self) -> float:
        return self._base_elapsed + (time.monotonic() - self._t0)

    def cpu(self) -> float:
        """CPU seconds this process used on the fold (all threads), summed over invocations."""
        return self._base_cpu + (time.process_time() - self._cpu0)

    def resume(self) -> bool:
        state = load_state(self.paths.last)
        if state is None:
            return False
        check_fingerprint(self.paths.last, state.fingerprint, self.fingerprint)
        self.model.load_state_dict(state.model, strict=True)
        self.optimizer.load_state_dict(state.optimizer)
        if state.scaler:
            self.scaler.load_state_dict(state.scaler)
        restore_rng(state.rng["tensors"], state.rng["plain"])
        self.progress = state.progress
        self._base_elapsed = state.progress.elapsed_s
        self._t0 = time.monotonic()
        self._base_cpu = state.progress.cpu_s
        self._cpu0 = time.process_time()
        return True

    def save(self) -> None:
        if not self.env.is_main:
            return
        self.progress.elapsed_s = self.elapsed()
        self.progress.cpu_s = self.cpu()
        save_state(
            self.paths.last,
            progress=self.progress,
            fingerprint=self.fingerprint,
            model=self.model,
            optimizer=self.optimizer,
            scaler=self.scaler,
        )

    # --- loop ----------------------------------------------------------------------------

    def fit(self) -> Progress:
        self.paths.root.mkdir(parents=True, exist_ok=True)
        if self.resume():
            p = self.progress
            self.log(
                f"resuming from {self.paths.last}: epoch {p.epoch + 1}, batch {p.step}, "
                f"{format_duration(p.elapsed_s)} trained so far"
            )
        reason = stop_reason(self.progress, self.s, self.elapsed())
        if reason is not None:
            self.progress.stop_reason = reason
            self.log(f"nothing to train: {reason}")
            return self.progress
        if self.env.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.wrapped = DistributedDataParallel(self.wrapped, device_ids=ids)
        tb_on = self.s.tensorboard and self.env.is_main
        tb = TensorBoardLog(self.paths.root / "tensorboard", tb_on)
        try:
            while True:
                out_of_time = self.train_epoch()
                self.end_epoch(out_of_time, tb)
                reason = "budget" if out_of_time else stop_reason(self.progress, self.s, 0.0)
                self.progress.stop_reason = reason
                self.save()
                ddp.barrier(self.env)
                if reason is not None:
                    break
        finally:
            tb.close()
        best = self.progress.best_epoch
        shown = "n/a" if best is None else best + 1
        self.log(f"stopped: {self.progress.stop_reason}; best epoch {shown}")
        return self.progress

    def validation_reserve(self) -> float:
        """Seconds to keep for the validation pass when a budget is set (last one measured)."""
        for row in reversed(self.progress.history):
            if row.get("val_s") is not None:
                return float(row["val_s"])
        return 0.0

    def train_epoch(self) -> bool:
        """Train from the saved position to the end of the epoch; True when out of time."""
        p, s = self.progress, self.s
        self.sampler.set_position(p.epoch, p.step)
        self.train_set.epoch = p.epoch
        generator = torch.Generator().manual_seed(s.seed * 7919 + p.epoch)
        loader = train_loader(
            self.train_set,
            self.sampler,
            batch_size=s.batch_size,
            num_workers=s.num_workers,
            pin_memory=self.pin,
            generator=generator,
        )
        n_batches = self.sampler.batches_per_epoch()
        bar = ProgressBar(
            n_batches,
            f"{self.label} epoch {p.epoch + 1}/{s.epochs}",
            start=p.step,
            enabled=self.env.is_main,
        )
        reserve = self.validation_reserve()
        self.train_mode()
        self.optimizer.zero_grad(set_to_none=True)
        out_of_time = False
        for batch in loader:
            if p.step % s.accumulate == 0 and s.budget_s is not None:
                late = self.elapsed() + reserve >= s.budget_s
                if ddp.any_true(self.env, late, self.device):
                    out_of_time = True
                    break
            if p.step % s.accumulate == 0:
                self.follow_run(n_batches)
            group_start = p.step - p.step % s.accumulate
            group = min(s.accumulate, n_batches - group_start)
            last_micro = p.step + 1 == group_start + group
            loss = self.train_batch(batch, group, sync=last_micro)
            p.step += 1
            p.epoch_loss_sum += loss
            p.epoch_loss_count += 1
            bar.update(loss=loss)
            if last_micro:
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad(set_to_none=True)
                p.global_step += 1
                if s.save_every and p.global_step % s.save_every == 0 and p.step < n_batches:
                    self.save()
        bar.close()
        return out_of_time

    def train_batch(self, batch: dict[str, Any], group: int, *, sync: bool) -> float:
        clip = model_input(batch["frames"], self.config.preprocess, self.device)
        mask = batch["mask"].to(self.device, non_blocking=True)
        labels = batch["labels"].to(self.device, non_blocking=True)
        no_sync = self.env.enabled and not sync
        context = self.wrapped.no_sync() if no_sync else contextlib.nullcontext()  # type: ignore[operator]
        with context:
            with autocast(self.device, self.s.amp):
                logits, _ = self.wrapped(clip, mask)
            loss = masked_bce(logits, labels, self.pos_weight)
            self.scaler.scale(loss / group).backward()
        value = float(loss.detach().item())
        if not math.isfinite(value):
            raise LuvnetError(
                f"{self.label}: training loss is {value} at epoch {self.progress.epoch + 1}, "
                f"batch {self.progress.step + 1}; expected a finite loss (lower --lr"
                f"{' or drop --amp' if self.s.amp else ''})"
            )
        return value

    # --- validation, best checkpoint, history --------------------------------------------

    def end_epoch(self, out_of_time: bool, tb: TensorBoardLog) -> None:
        p = self.progress
        trained = p.epoch_loss_count > 0
        if trained or not p.history:
            if self.env.is_main:
                self.validate_and_record(partial=out_of_time, tb=tb)
            # Only rank 0 validated: every rank adopts its early-stopping counters.
            best_loss = -1.0 if p.best_val_loss is None else p.best_val_loss
            best_epoch = -1.0 if p.best_epoch is None else float(p.best_epoch)
            values = [float(p.bad_epochs), best_epoch, best_loss]
            bad, best_epoch, best_loss = ddp.broadcast_floats(self.env, values, self.device)
            p.bad_epochs = int(bad)
            p.best_epoch = None if best_epoch < 0 else int(best_epoch)
            p.best_val_loss = None if best_loss < 0 else best_loss
            self.decay_lr()
            p.epoch += 1
        p.step = 0
        p.epoch_loss_sum, p.epoch_loss_count = 0.0, 0

    def train_mode(self) -> None:
        """Train mode, except for BatchNorm once frozen (see freeze_batchnorm)."""
        self.model.train()
        if self.progress.bn_frozen:
            for layer in batchnorm_layers(self.model):
                layer.eval()

    def follow_run(self, n_batches: int) -> None:
        """Before each optimizer step, what follows the share of the run spent (measured once,
        one clock broadcast under DDP): the linear lr and the BatchNorm freeze."""
        s, p = self.s, self.progress
        freeze_pending = s.freeze_bn_after is not None and not p.bn_frozen
        if s.lr_schedule != "linear" and not freeze_pending:
            return
        fraction = self.run_fraction(n_batches)
        if freeze_pending and fraction >= s.freeze_bn_after:
            self.freeze_batchnorm()
        if s.lr_schedule == "linear":
            # lr x (1 - share spent): under a fixed budget a decay tied to the budget ends at
            # a settled model instead of wherever a plateau schedule happened to be (Li et
            # al., ICLR 2020, "Budgeted training"); the plateau schedule acts at epoch ends.
            for group in self.optimizer.param_groups:
                group["lr"] = s.lr * (1.0 - fraction)

    def freeze_batchnorm(self) -> None:
        """Recalibrate BatchNorm once and train the rest of the run with those fixed
        statistics, the ones validation and the stream normalise with.

        Batches of 8 clips hold frames of only 8 videos, so batch statistics swing from batch
        to batch and a network trained on them can depend on that: on the phantom, one set
        of weights scored validation losses from 0.20 to 0.51 depending on which 16 training
        batches recalibrated it. Training the last part of the run with frozen statistics
        removes that train/test difference (Wu & Johnson, "Rethinking 'Batch' in BatchNorm",
        2021, on the same inconsistency)."""
        p = self.progress
        self.recalibrate_batchnorm()
        p.bn_frozen = True
        self.train_mode()
        self.log(
            f"BatchNorm frozen at epoch {p.epoch + 1}, batch {p.step}: statistics from "
            f"{self.s.bn_recalibrate} training batches"
        )

    def run_fraction(self, n_batches: int) -> float:
        """How much of the run is spent, 0..1: the larger of the optimizer steps over
        --epochs and the wall clock over the time budget, whichever limit comes first."""
        s, p = self.s, self.progress
        steps_per_epoch = math.ceil(n_batches / s.accumulate)
        fraction = p.global_step / max(1, s.epochs * steps_per_epoch)
        if s.budget_s is not None:
            # Rank 0's clock, so that every DDP replica takes the same step size.
            (elapsed,) = ddp.broadcast_floats(self.env, [self.elapsed()], self.device)
            fraction = max(fraction, elapsed / s.budget_s)
        return min(1.0, fraction)

    def decay_lr(self) -> None:
        """Reduce-on-plateau, decided from the early-stopping counter alone, so it needs no state
        of its own (the current lr travels in the optimizer state) and every rank agrees."""
        s, bad = self.s, self.progress.bad_epochs
        if s.lr_patience > 0 and bad > 0 and bad % s.lr_patience == 0:
            for group in self.optimizer.param_groups:
                group["lr"] *= s.lr_decay
            self.log(f"lr -> {self.optimizer.param_groups[0]['lr']:.3g} ({bad} epochs w/o gain)")

    def validate_and_record(self, *, partial: bool, tb: TensorBoardLog) -> None:
        p, names = self.progress, self.config.pattern_names
        t0 = time.monotonic()
        if self.s.bn_recalibrate > 0 and not p.bn_frozen:
            self.recalibrate_batchnorm()
        loader = eval_loader(
            self.val, batch_size=self.s.batch_size, num_workers=self.s.num_workers,
            pin_memory=self.pin,
        )  # fmt: skip
        bar = ProgressBar(
            len(loader), f"{self.label} validate", enabled=self.env.is_main, show_loss=False
        )
        scored = predict(
            self.model,
            loader,
            self.config.preprocess,
            root=self.root,
            pos_weight=self.pos_weight,
            amp=self.s.amp,
            on_batch=bar.update,
        )
        bar.close()
        val_s = time.monotonic() - t0
        if scored.loss is None or not math.isfinite(scored.loss):
            raise LuvnetError(
                f"{self.label}: validation loss is {scored.loss} at epoch {p.epoch + 1}; "
                "expected a finite number (lower --lr, or check the validation labels)"
            )
        metrics = compute_metrics(scored.labels, scored.probs, None, names)
        improved = p.best_val_loss is None or scored.loss < p.best_val_loss
        if improved:
            p.best_val_loss, p.best_epoch, p.bad_epochs = scored.loss, p.epoch, 0
            self.save_best(scored, metrics)
        else:
            p.bad_epochs += 1
        row = {
            "epoch": p.epoch + 1,
            "train_loss": p.epoch_loss_sum / p.epoch_loss_count if p.epoch_loss_count else None,
            "val_loss": scored.loss,
            "val_micro_auc": metrics["micro_auc"],
            "val_macro_auc": metrics["macro_auc"],
            **{f"val_auc_{n}": metrics["patterns"][n]["auc"] for n in names},
            "lr": self.optimizer.param_groups[0]["lr"],
            "epoch_s": None,
            "val_s": val_s,
            "elapsed_s": self.elapsed(),
            "cpu_s": self.cpu(),
            "best": improved,
            "partial": partial,
        }
        previous = p.history[-1]["elapsed_s"] if p.history else 0.0
        row["epoch_s"] = row["elapsed_s"] - previous
        p.history.append(row)
        write_history(self.paths.history, p.history, names)
        tb.log_epoch(row)
        macro = "n/a" if metrics["macro_auc"] is None else f"{metrics['macro_auc']:.3f}"
        train_loss = "n/a" if row["train_loss"] is None else f"{row['train_loss']:.4f}"
        self.log(
            f"epoch {p.epoch + 1}: train loss {train_loss}, "
            f"val loss {scored.loss:.4f}, val macro AUC {macro}"
            + (" (best)" if improved else f" (best epoch {p.best_epoch + 1})")
            + (" [stopped early: time budget]" if partial else "")
        )

    def recalibrate_batchnorm(self) -> None:
        """Precise BN (engine/bn_calibration.py) on a fixed, epoch-seeded set of training
        clips without augmentation; the global RNG is left as it was (dropout draws)."""
        base = self.train_set.base
        generator = torch.Generator().manual_seed(self.s.seed * 7907 + self.progress.epoch)
        count = min(len(base), self.s.bn_recalibrate * self.s.batch_size)
        indices = torch.randperm(len(base), generator=generator)[:count].tolist()
        loader = eval_loader(
            Subset(base, indices),
            batch_size=self.s.batch_size,
            num_workers=self.s.num_workers,
            pin_memory=self.pin,
        )
        forward_model = RealFrameModel(self.model)

        def forward(batch: dict[str, Any]) -> object:
            clip = model_input(batch["frames"], self.config.preprocess, self.device)
            mask = batch["mask"].to(self.device, non_blocking=True)
            with autocast(self.device, self.s.amp):
                return forward_model(clip, mask)

        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            recalibrate_batchnorm(self.model, loader, forward)

    def save_best(self, scored: Scored, metrics: dict[str, Any]) -> None:
        names = self.config.pattern_names
        thresholds = fitted_thresholds(metrics, names)
        config = self.config.replace(thresholds=thresholds)
        summary = {
            "epoch": self.progress.epoch + 1,
            "val_loss": scored.loss,
            "val_micro_auc": metrics["micro_auc"],
            "val_macro_auc": metrics["macro_auc"],
            "val_auc": {n: metrics["patterns"][n]["auc"] for n in names},
            "threshold_source": {
                n: "youden" if metrics["patterns"][n]["threshold"] is not None else "default"
                for n in names
            },
        }
        save_checkpoint(
            self.model, self.paths.best, config=config, provenance=self.provenance, metrics=summary
        )
        write_results(scored, self.paths.metrics("val"), self.paths.predictions("val"), None, names)

    def log(self, message: str) -> None:
        if self.env.is_main:
            print(f"luvnet train: {self.label}: {message}", file=sys.stderr, flush=True)


def settings_fingerprint(
    config: ModelConfig, settings: FitSettings, extra: dict[str, Any]
) -> dict[str, Any]:
    """What a resumed run must share with the saved state (not epochs, patience, budget,
    workers or device: those may change between invocations)."""
    arch = config.to_dict()
    arch.pop("thresholds")
    chosen = asdict(settings)
    keep = (
        "lr", "batch_size", "accumulate", "amp", "seed", "pos_weight", "lr_schedule",
        "freeze_bn_after",
    )  # fmt: skip
    document = {"config": arch, **{k: chosen[k] for k in keep}, **extra}
    return json.loads(json.dumps(document))  # tuples -> lists, as they come back from JSON
