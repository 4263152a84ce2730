"""The training loop of one fold: epochs, early stopping, time budget, DDP.

Protocol (docs/model.md, "Data and training protocol"): Adam, BCE-with-logits over the known
labels, clip-consistent augmentation on the training clips only, early stopping on the
validation loss, the best-validation-loss model kept in ``best/`` with per-pattern Youden
thresholds fitted on that epoch's validation predictions (``--eval-metric macro_auc``: the
validation macro AUC in the loss's place, :mod:`.stopping`). With ``--ema`` the validated and
kept model is the moving average of the weights (:mod:`.averaging`).

:class:`FoldTrainer` composes the units that do the rest: the lr schedule and BatchNorm policy
(:mod:`.schedule`), validation and thresholds (:mod:`.validation`), saving and resume
(:mod:`.checkpointing`). The state in ``last/`` is written every ``save_every`` optimizer steps
and at the end of every epoch; a rerun of the same command continues from it: same epoch, same
batch, same shuffling and augmentation (:mod:`.loaders`), same RNG.

Under torchrun (:mod:`.distributed`) every rank trains on its shard through
DistributedDataParallel; rank 0 alone validates, writes files and saves state while the others
wait at a barrier. Budget and stop decisions are agreed on by all ranks.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from luvnet.engine.data.clips import ClipDataset
from luvnet.engine.data.unreadable import SkippedVideo
from luvnet.engine.errors import LuvnetError
from luvnet.engine.evaluation.embeddings import EmbeddedClips, HeadOnEmbeddings
from luvnet.engine.evaluation.inference import RealFrameModel, autocast, channels_last, model_input
from luvnet.engine.model.backbones import freeze_trunk
from luvnet.engine.model.config import ModelConfig
from luvnet.engine.model.loss import masked_bce
from luvnet.engine.model.network import LUVNet
from luvnet.engine.progress import ProgressBar, format_duration
from luvnet.engine.training import distributed as ddp
from luvnet.engine.training.averaging import WeightAverage
from luvnet.engine.training.batchnorm import recalibrate_on_clips
from luvnet.engine.training.checkpointing import Checkpointer, FoldClock, FoldPaths
from luvnet.engine.training.distributed import DistEnv
from luvnet.engine.training.history import TensorBoardLog, write_history
from luvnet.engine.training.loaders import AugmentedClips, ResumableSampler, train_loader
from luvnet.engine.training.schedule import (
    Schedule,
    current_lr,
    run_fraction,
    scale_lr,
    set_lr,
    steps_per_epoch,
    train_mode,
)
from luvnet.engine.training.settings import FitSettings
from luvnet.engine.training.state import Progress
from luvnet.engine.training.stopping import record_validation, stop_reason, validation_score
from luvnet.engine.training.validation import epoch_summary, history_row, validate

log = logging.getLogger(__name__)


class FoldTrainer:
    """Trains ``model`` on one fold; :meth:`fit` returns the final :class:`Progress`."""

    def __init__(
        self,
        *,
        model: LUVNet,
        config: ModelConfig,
        train: ClipDataset | EmbeddedClips,
        val: ClipDataset | EmbeddedClips,
        paths: FoldPaths,
        settings: FitSettings,
        env: DistEnv,
        device: torch.device,
        fingerprint: dict[str, Any],
        provenance: dict[str, Any],
        manifest_root: Path,
        label: str,
        skipped_val: list[SkippedVideo] | None = None,  # for metrics_val.json
    ) -> None:
        self.model = model.to(device)
        channels_last(self.model)  # in place: Module.to keeps the object
        self.config = config
        self.val = val
        self.paths = paths
        self.s = settings
        self.env = env
        self.device = device
        self.root = manifest_root
        self.label = label
        # The fixed trunk blocks stay as initialised: eval mode, no gradient.
        blocks = 0 if settings.freeze_encoder else settings.trainable_blocks
        self.frozen = freeze_trunk(self.model.encoder, blocks)
        trainable = [q for q in self.model.parameters() if q.requires_grad]
        self.optimizer = torch.optim.Adam(trainable, lr=settings.lr)
        # Loss scaling is for fp16 on CUDA; CPU autocast uses bfloat16, which needs none.
        use_scaler = settings.amp and device.type == "cuda"
        self.scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
        self.pos_weight = (
            None
            if settings.pos_weight is None
            else torch.tensor(settings.pos_weight, dtype=torch.float32, device=device)
        )
        self.train_set = AugmentedClips.for_training(train, settings)
        self.sampler = ResumableSampler(len(train), env, settings.seed, settings.batch_size)
        # With --ema the average is what is validated, kept and tested; training is unchanged.
        self.average = None if not settings.ema else WeightAverage(self.model, settings.ema)
        self.kept: LUVNet = self.model if self.average is None else self.average.module
        self.schedule = Schedule(
            lr=settings.lr,
            kind=settings.lr_schedule,
            lr_decay=settings.lr_decay,
            lr_patience=settings.lr_patience,
            freeze_bn_after=settings.freeze_bn_after,
            bn_recalibrate=settings.bn_recalibrate,
        )
        self.checkpoints = Checkpointer(
            paths,
            model=self.model,
            optimizer=self.optimizer,
            scaler=self.scaler,
            fingerprint=fingerprint,
            provenance=provenance,
            is_main=env.is_main,
            skipped_val=skipped_val,
            average=self.average,
        )
        self.progress = Progress()
        self.clock = FoldClock()
        self.pin = device.type == "cuda"
        self.wrapped: torch.nn.Module = (
            HeadOnEmbeddings(self.model) if settings.freeze_encoder else RealFrameModel(self.model)
        )

    # --- loop ----------------------------------------------------------------------------

    def fit(self) -> Progress:
        self.paths.root.mkdir(parents=True, exist_ok=True)
        resumed = self.checkpoints.resume(self.clock)
        if resumed is not None:
            self.progress = p = resumed
            self.log(
                f"resuming from {self.paths.last}: epoch {p.epoch + 1}, batch {p.step}, "
                f"{format_duration(p.elapsed_s)} trained so far"
            )
        reason = stop_reason(self.progress, self.s, self.clock.elapsed())
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
                self.checkpoints.save_last(self.progress, self.clock)
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
                late = self.clock.elapsed() + reserve >= s.budget_s
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
                if self.average is not None:
                    self.average.update(self.model)
                p.global_step += 1
                if s.save_every and p.global_step % s.save_every == 0 and p.step < n_batches:
                    self.checkpoints.save_last(p, self.clock)
        bar.close()
        return out_of_time

    def train_mode(self) -> None:
        """Train mode, but BatchNorm once frozen, and the trunk's fixed blocks."""
        train_mode(self.model, self.progress.bn_frozen)
        for module in self.frozen:
            module.eval()

    def train_batch(self, batch: dict[str, Any], group: int, *, sync: bool) -> float:
        if "emb" in batch:  # frozen trunk: its cached embeddings go to the head
            clip = batch["emb"].to(self.device, non_blocking=True)
        else:
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

    # --- schedule and BatchNorm ----------------------------------------------------------

    def follow_run(self, n_batches: int) -> None:
        """Before each optimizer step, what follows the share of the run spent (measured once,
        one clock broadcast under DDP): the linear lr and the BatchNorm freeze."""
        p = self.progress
        if not self.schedule.follows_run(p.bn_frozen):
            return
        elapsed = None
        if self.s.budget_s is not None:
            # Rank 0's clock, so that every DDP replica takes the same step size.
            (elapsed,) = ddp.broadcast_floats(self.env, [self.clock.elapsed()], self.device)
        fraction = run_fraction(
            p.global_step,
            steps_per_epoch=steps_per_epoch(n_batches, self.s.accumulate),
            epochs=self.s.epochs,
            elapsed_s=elapsed,
            budget_s=self.s.budget_s,
        )
        if self.schedule.freeze_due(fraction, p.bn_frozen):
            self.freeze_batchnorm()
        lr = self.schedule.lr_at(fraction)
        if lr is not None:
            set_lr(self.optimizer, lr)

    def freeze_batchnorm(self) -> None:
        """Recalibrate BatchNorm once and train the rest of the run with those fixed
        statistics (schedule.py says why)."""
        p = self.progress
        self.recalibrate_batchnorm()
        p.bn_frozen = True
        self.train_mode()
        self.log(
            f"BatchNorm frozen at epoch {p.epoch + 1}, batch {p.step}: statistics from "
            f"{self.s.bn_recalibrate} training batches"
        )

    def recalibrate_batchnorm(self) -> None:
        """Precise BN on a fixed, epoch-seeded set of training clips without augmentation."""
        clips = self.train_set.base
        assert isinstance(clips, ClipDataset)  # settings refuse it with a frozen encoder
        recalibrate_on_clips(
            self.model,
            clips,
            preprocess=self.config.preprocess,
            device=self.device,
            amp=self.s.amp,
            batches=self.s.bn_recalibrate,
            batch_size=self.s.batch_size,
            num_workers=self.s.num_workers,
            pin_memory=self.pin,
            seed=self.s.seed * 7907 + self.progress.epoch,
        )

    # --- epoch end: validation, early stopping, best checkpoint, history ------------------

    def end_epoch(self, out_of_time: bool, tb: TensorBoardLog) -> None:
        p = self.progress
        trained = p.epoch_loss_count > 0
        if trained or not p.history:
            if self.env.is_main:
                self.validate_and_record(partial=out_of_time, tb=tb)
            # Only rank 0 validated: every rank adopts its early-stopping counters.
            # Both metrics' figures are >= 0, so -1 stands for "none yet".
            best_score = -1.0 if p.best_score is None else p.best_score
            best_epoch = -1.0 if p.best_epoch is None else float(p.best_epoch)
            values = [float(p.bad_epochs), best_epoch, best_score]
            bad, best_epoch, best_score = ddp.broadcast_floats(self.env, values, self.device)
            p.bad_epochs = int(bad)
            p.best_epoch = None if best_epoch < 0 else int(best_epoch)
            p.best_score = None if best_score < 0 else best_score
            if self.schedule.plateau_decay_due(p.bad_epochs):
                lr = scale_lr(self.optimizer, self.schedule.lr_decay)
                self.log(f"lr -> {lr:.3g} ({p.bad_epochs} epochs w/o gain)")
            p.epoch += 1
        p.step = 0
        p.epoch_loss_sum, p.epoch_loss_count = 0.0, 0

    def validate_and_record(self, *, partial: bool, tb: TensorBoardLog) -> None:
        p, names = self.progress, self.config.pattern_names
        t0 = time.monotonic()
        if self.schedule.recalibrate_before_validation(p.bn_frozen):
            self.recalibrate_batchnorm()
        validation = validate(
            self.kept,
            self.val,
            self.config,
            root=self.root,
            batch_size=self.s.batch_size,
            num_workers=self.s.num_workers,
            pin_memory=self.pin,
            pos_weight=self.pos_weight,
            amp=self.s.amp,
            label=self.label,
            epoch=p.epoch,
            show_progress=self.env.is_main,
        )
        val_s = time.monotonic() - t0
        metric = self.s.eval_metric
        score = validation_score(validation, metric, label=self.label)
        improved = record_validation(p, score, metric)
        if improved:
            self.checkpoints.save_best(self.kept, self.config, validation, p.epoch)
        row = history_row(
            validation,
            names,
            epoch=p.epoch,
            train_loss=p.epoch_loss_sum / p.epoch_loss_count if p.epoch_loss_count else None,
            lr=current_lr(self.optimizer),
            val_s=val_s,
            elapsed_s=self.clock.elapsed(),
            previous_elapsed_s=p.history[-1]["elapsed_s"] if p.history else 0.0,
            cpu_s=self.clock.cpu(),
            best=improved,
            partial=partial,
        )
        p.history.append(row)
        write_history(self.paths.history, p.history, names)
        tb.log_epoch(row)
        self.log(epoch_summary(row, p.best_epoch))

    def log(self, message: str) -> None:
        if self.env.is_main:
            log.info("%s: %s", self.label, message)
