"""Cross-validated training (docs/model.md, "Training"): :func:`train` runs ``luvnet train``.

Defaults are the paper's: DenseNet-161, Adam lr 1e-6, batch 4, up to 150 epochs, early stopping
on the validation loss with patience 50, 10% of patients held out as test, 5 folds. Every fold
(or only ``fold``) is trained in turn into ``RUN/fold_<i>/`` (layout in docs/formats.md and
docs/training.md); rerunning the same settings resumes where it stopped.

Every video of the manifest is decoded (into the frame cache) before any fold is trained:
unreadable ones end the run with one error naming them all, or with ``skip_unreadable`` are
left out and recorded in run.json, each checkpoint's provenance and the metrics files
(``"skipped_videos"``, :mod:`luvnet.engine.data.unreadable`). Multi-GPU: launch the same
command under ``torchrun`` (see :mod:`.distributed`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from luvnet.engine.data.clips import ClipDataset
from luvnet.engine.data.datasets import clip_dataset, eval_loader
from luvnet.engine.data.frame_cache import default_cache_dir
from luvnet.engine.data.manifest import Manifest, ManifestRow, read_manifest
from luvnet.engine.data.split_record import fold_record, new_salt
from luvnet.engine.data.splits import Fold, SplitPlan, rows_for, splits_from_manifest
from luvnet.engine.data.timing import Timing, model_frame_rate, rate_record, video_rate
from luvnet.engine.data.unreadable import SkippedVideo, readable_rows
from luvnet.engine.errors import LuvnetError
from luvnet.engine.evaluation.embeddings import EmbeddedClips, EmbeddingCache
from luvnet.engine.evaluation.evaluate import decimation_line, write_results
from luvnet.engine.evaluation.inference import channels_last, predict
from luvnet.engine.model.checkpoint import default_provenance, file_sha256, load_checkpoint
from luvnet.engine.model.config import ModelConfig, PreprocessConfig
from luvnet.engine.model.loss import parse_pos_weight
from luvnet.engine.progress import ProgressBar
from luvnet.engine.runtime import command_line, resolve_device, set_threads
from luvnet.engine.training import distributed as ddp
from luvnet.engine.training.checkpointing import FoldPaths, settings_fingerprint
from luvnet.engine.training.fit import FoldTrainer
from luvnet.engine.training.fold_init import fold_starts
from luvnet.engine.training.fold_settings import (
    dataset_labels,
    fold_extra,
    fold_fit_settings,
    pos_weights,
)
from luvnet.engine.training.init import build_fold_model
from luvnet.engine.training.loaders import require_clips
from luvnet.engine.training.run_record import check_run_split, write_run_json
from luvnet.engine.training.settings import TrainSettings
from luvnet.engine.training.state import check_saved_fingerprint
from luvnet.engine.training.stopping import require_auc

log = logging.getLogger(__name__)


def train(settings: TrainSettings, *, command: str | None = None) -> list[Path]:
    """Train the folds ``settings`` ask for; returns their directories (``RUN/fold_<i>``).

    ``command`` is the command line recorded in ``run.json`` (default: this process's).
    Under torchrun every process calls this; rank 0 alone writes the run's files.

    Raises:
        LuvnetError: a bad setting, an unreadable manifest, a model that cannot be built, or a
            split without clips; always before any fold is trained.
    """
    settings.check()
    set_threads(settings.threads)
    env = ddp.from_environment()
    device = resolve_device(settings.device or None)
    device = ddp.setup(env, device.type) if env.enabled else device
    command = command_line() if command is None else command
    try:
        return _train(settings, env, device, command)
    finally:
        ddp.teardown(env)


def model_config(settings: TrainSettings) -> ModelConfig:
    return ModelConfig(
        backbone=settings.backbone,
        variant=settings.model,
        num_heads=settings.usvn_heads if settings.model == "usvn" else settings.num_heads,
        kernel_size=settings.kernel_size,
        fusion_hidden=settings.fusion_hidden,
        classifier_hidden=settings.classifier_hidden,
        dropout=settings.dropout,
        clip_length=settings.clip_length,
        clip_step=settings.clip_step,
        preprocess=PreprocessConfig(
            image_size=settings.image_size,
            crop_box=settings.crop_box,
            intensity=settings.intensity,
        ),
    )


def plan_splits(manifest: Manifest, settings: TrainSettings) -> tuple[SplitPlan, list[int]]:
    plan = splits_from_manifest(
        manifest,
        test_fraction=settings.test_fraction,
        k=settings.folds,
        seed=settings.patient_split_seed,
    )
    if settings.fold is None:
        return plan, list(range(len(plan)))
    plan.fold(settings.fold)  # range check with the plan's own message
    return plan, [settings.fold]


def split_record(plan: SplitPlan, fold: Fold, settings: TrainSettings, salt: str) -> dict[str, Any]:
    """What evaluate needs to find this fold's patients again (checkpoint provenance): the
    settings that re-derive the split, and per set a patient count and digest (no ids)."""
    return fold_record(
        plan,
        fold.index,
        seed=settings.patient_split_seed,
        test_fraction=settings.test_fraction,
        salt=salt,
    )


def usable_rows(
    rows: list[ManifestRow], bad: dict[Path, SkippedVideo], what: str
) -> tuple[list[ManifestRow], list[SkippedVideo]]:
    """``rows`` without the skipped unreadable videos ``bad``, and those skipped among them.

    Raises:
        LuvnetError: every video of a non-empty set was skipped.
    """
    kept = [row for row in rows if row.video not in bad]
    if rows and not kept:
        raise LuvnetError(
            f"{what}: all {len(rows)} of its videos are unreadable (skipped above); expected at "
            "least one that decodes: fix or replace them, or use other --split-seed/--seed/--folds"
        )
    return kept, [bad[row.video] for row in rows if row.video in bad]


def _train(
    settings: TrainSettings, env: ddp.DistEnv, device: torch.device, command: str
) -> list[Path]:
    s = settings
    manifest = read_manifest(s.manifest)
    # The rate the model is trained at, from the videos' own timestamps (every fold the same).
    rates = [video_rate(row.video) for row in manifest.rows]
    config = model_config(s).replace(frame_rate=model_frame_rate(rates))
    timing = Timing(config.frame_rate, s.decimate_above)
    pos_spec = parse_pos_weight(s.pos_weight, config.pattern_names)
    manifest_sha = file_sha256(s.manifest)
    plan, folds = plan_splits(manifest, s)
    check_run_split(s, plan)  # a resume that would draw another split: the clearest refusal
    salt = new_salt()  # one per run: the digests of a set differ between runs
    num_workers = s.num_workers
    if num_workers is None:
        num_workers = min(4, os.cpu_count() or 1) if device.type == "cuda" else 0
    cache = s.cache or default_cache_dir()
    root = manifest.path.resolve().parent
    # Bad heads/kernel/weights/--init fail here, early; so does an --init that has seen
    # patients a fold holds out.
    inits, init_ids, seen = fold_starts(s, config, manifest, plan, folds, quiet=not env.is_main)
    _, skipped = readable_rows(
        manifest.rows,
        config.preprocess,
        cache,
        manifest.path,
        skip=s.skip_unreadable,
        quiet=not env.is_main,
        timing=timing,
    )
    bad = {item.path: item for item in skipped}
    # Splits are drawn from the whole manifest (evaluate redraws them the same way); the sets
    # then lose their unreadable videos. A set left empty fails here, before any training.
    test_rows, test_skipped = usable_rows(rows_for(manifest.rows, plan.test), bad, "test set")
    fold_rows = {}
    for index in folds:
        fold = plan.fold(index)
        fold_rows[index] = (
            usable_rows(rows_for(manifest.rows, fold.train), bad, f"fold {index} training set"),
            usable_rows(rows_for(manifest.rows, fold.val), bad, f"fold {index} validation set"),
        )
    recorded = skipped if s.skip_unreadable else None
    budget = None if s.max_minutes is None else s.max_minutes * 60.0 / len(folds)
    # Every fold's clips and settings before anything is written: a fold without clips, or a
    # resume with other settings (any fold's saved fingerprint), leaves run.json as it was.
    # Only the settings are kept: a fold's datasets are built again when it trains, so one
    # fold's at a time hold their memory-mapped frame files open.
    setups = {}
    for index in folds:
        train_set, val_set = _fold_sets(fold_rows[index], config, cache, s.decimate_above)
        require_clips(train_set, f"fold {index} training set")
        require_clips(val_set, f"fold {index} validation set")
        if s.eval_metric == "macro_auc":
            require_auc(dataset_labels(val_set), f"fold {index} validation set")
        fit = fold_fit_settings(s, index, budget, num_workers, pos_weights(pos_spec, train_set))
        extra = fold_extra(s, index, env.world_size, manifest_sha, init_ids[index], skipped)
        fingerprint = settings_fingerprint(config, fit, extra)
        check_saved_fingerprint(FoldPaths(s.out / f"fold_{index}").last, fingerprint)
        setups[index] = (fit, fingerprint)
    del train_set, val_set
    if env.is_main:
        s.out.mkdir(parents=True, exist_ok=True)
        write_run_json(s, config, plan, manifest_sha, command, salt, recorded)
        for index in (k for k in folds if init_ids[k] is not None):
            log.info("fold %d: from %s (model id %s)", index, inits[index], init_ids[index])
        if s.init is None and s.weights is None:
            log.info("trunk randomly initialised (the paper used ImageNet: --weights imagenet)")
    ddp.barrier(env)
    test_set = clip_dataset(test_rows, config, cache, s.decimate_above) if test_rows else None
    trained = []
    for index in folds:
        fold = plan.fold(index)
        _, (_, val_skipped) = fold_rows[index]
        fit, fingerprint = setups[index]
        train_set, val_set = _fold_sets(fold_rows[index], config, cache, s.decimate_above)
        decimated = train_set.decimated_videos + val_set.decimated_videos
        if env.is_main:
            log.info(
                "fold %d: %s",
                index,
                decimation_line(timing, decimated, len(train_set.videos) + len(val_set.videos)),
            )
        init_id = init_ids[index]
        provenance = default_provenance(s.manifest, command) | {
            "split": split_record(plan, fold, s, salt),
            "weights": s.weights,
            "lr": s.lr,
            "seed": s.seed,
        }
        provenance["frame_rate"] = rate_record(rates, timing, decimated)
        if init_id is not None:  # the model id, never the checkpoint's path
            provenance["init"] = {"model_id": init_id, "head": s.init_head} | seen[index]
        provenance |= s.trunk_fingerprint() | s.ema_fingerprint()
        provenance |= s.eval_metric_fingerprint()
        model, _ = build_fold_model(config, s.weights, fit.seed, s, inits[index])
        train_data: ClipDataset | EmbeddedClips = train_set
        val_data: ClipDataset | EmbeddedClips = val_set
        if s.freeze_encoder:
            embeddings = EmbeddingCache(cache, model, config.preprocess, device)
            train_data = EmbeddedClips(train_set, embeddings)
            val_data = EmbeddedClips(val_set, embeddings)
            if env.is_main:
                log.info(
                    "fold %d: embeddings of %d training and %d validation videos ready (%s)",
                    index, len(train_set.videos), len(val_set.videos), embeddings.root,
                )  # fmt: skip
        if recorded is not None:
            provenance["skipped_videos"] = [item.to_dict() for item in recorded]
        paths = FoldPaths(s.out / f"fold_{index}")
        trainer = FoldTrainer(
            model=model,
            config=config,
            train=train_data,
            val=val_data,
            paths=paths,
            settings=fit,
            env=env,
            device=device,
            fingerprint=fingerprint,
            provenance=provenance,
            manifest_root=root,
            label=f"fold {index}",
            skipped_val=val_skipped if recorded is not None else None,
        )
        if env.is_main:
            log.info(
                "fold %d: %d training clips (%d patients), %d validation clips (%d patients) on %s",
                index, len(train_set), len(fold.train), len(val_set), len(fold.val), device,
            )  # fmt: skip
        trainer.fit()
        if env.is_main and test_set is not None:
            evaluate_best(
                paths,
                test_set,
                root,
                s,
                device,
                num_workers,
                test_skipped if recorded is not None else None,
                label=trainer.label,
            )
        ddp.barrier(env)
        trained.append(paths.root)
    return trained


def _fold_sets(
    rows: tuple[tuple[list[ManifestRow], list[SkippedVideo]], ...],
    config: ModelConfig,
    cache: Path,
    decimate_above: float,
) -> tuple[ClipDataset, ClipDataset]:
    """A fold's training and validation clips (no frame is read until one is asked for)."""
    (train_rows, _), (val_rows, _) = rows
    return (
        clip_dataset(train_rows, config, cache, decimate_above),
        clip_dataset(val_rows, config, cache, decimate_above),
    )


def evaluate_best(
    paths: FoldPaths,
    test_set: ClipDataset,
    root: Path,
    settings: TrainSettings,
    device: torch.device,
    num_workers: int,
    skipped: list[SkippedVideo] | None = None,
    *,
    label: str,
) -> None:
    """The fold's best checkpoint on the held-out test set, at its stored thresholds;
    ``skipped``: the test set's unreadable videos left out, for metrics_test.json; ``label``
    names the fold in the log, as its training lines do."""
    ckpt = load_checkpoint(paths.best, map_location=device)
    loader = eval_loader(
        test_set, batch_size=settings.batch_size, num_workers=num_workers, pin_memory=False
    )
    bar = ProgressBar(len(loader), f"{label} test", show_loss=False)
    scored = predict(
        channels_last(ckpt.model),
        loader,
        ckpt.config.preprocess,
        root=root,
        amp=settings.amp,
        on_batch=bar.update,
    )
    bar.close()
    metrics = write_results(
        scored,
        paths.metrics("test"),
        paths.predictions("test"),
        list(ckpt.config.thresholds),
        ckpt.config.pattern_names,
        skipped,
        test_set.decimated_videos,
    )
    macro = metrics["macro_auc"]
    log.info(
        "%s: test macro AUC %s on %d clips",
        label, "n/a" if macro is None else f"{macro:.3f}", metrics["n_clips"],
    )  # fmt: skip
