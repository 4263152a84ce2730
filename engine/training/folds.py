"""``luvnet train --manifest M --out RUN [options]``: cross-validated training (spec §3).

Defaults are the paper's: DenseNet-161, Adam lr 1e-6, batch 4, up to 150 epochs, early stopping
on the validation loss with patience 50, 10% of patients held out as test, 5 folds. Every fold
(or only ``--fold I``) is trained in turn into ``RUN/fold_<i>/`` (layout in docs/formats.md and
docs/training.md); rerunning the same command resumes where it stopped.

Multi-GPU: launch the same command under ``torchrun`` (see :mod:`engine.distributed`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from luvnet.engine.data.clips import ClipDataset, clip_labels, default_cache_dir
from luvnet.engine.data.manifest import Manifest, read_manifest
from luvnet.engine.data.splits import Fold, SplitPlan, rows_for, splits_from_manifest
from luvnet.engine.errors import LuvnetError
from luvnet.engine.evaluation.evaluate import write_results
from luvnet.engine.evaluation.inference import channels_last, predict, resolve_device, set_threads
from luvnet.engine.model.checkpoint import default_provenance, file_sha256, load_checkpoint
from luvnet.engine.model.config import MODEL_VARIANTS, ModelConfig, PreprocessConfig
from luvnet.engine.model.loss import auto_pos_weight, parse_pos_weight
from luvnet.engine.model.network import build_model
from luvnet.engine.progress import ProgressBar
from luvnet.engine.training import distributed as ddp
from luvnet.engine.training.fit import (
    LR_SCHEDULES,
    FitSettings,
    FoldPaths,
    FoldTrainer,
    settings_fingerprint,
)
from luvnet.engine.training.loaders import clip_dataset, eval_loader, require_clips


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage = "luvnet train --manifest M --out RUN [options]"
    add = parser.add_argument
    add("--manifest", type=Path, required=True, help="manifest CSV (docs/formats.md)")
    add("--out", type=Path, required=True, help="run directory (created; resumed if present)")
    model = parser.add_argument_group("model")
    model.add_argument("--model", default="luvnet", help=f"one of {', '.join(MODEL_VARIANTS)}")
    model.add_argument("--backbone", default="densenet161", help="torchvision trunk name")
    model.add_argument(
        "--weights",
        default=None,
        help="trunk weights: 'imagenet' (local torchvision file) or a path; default random init",
    )
    model.add_argument("--kernel-size", type=int, default=13, help="temporal conv kernel (odd)")
    model.add_argument("--num-heads", type=int, default=8, help="attention heads N_a")
    model.add_argument("--fusion-hidden", type=int, default=4096, help="fusion MLP width")
    model.add_argument("--classifier-hidden", type=int, default=512, help="classifier width")
    model.add_argument("--dropout", type=float, default=0.5, help="classifier dropout")
    model.add_argument("--image-size", type=int, default=256, help="letterbox canvas S")
    model.add_argument(
        "--crop-box", default=None, help="fixed sector box x,y,w,h (default: detect per video)"
    )
    model.add_argument("--clip-length", type=int, default=30, help="frames per clip L")
    model.add_argument("--clip-step", type=int, default=24, help="frames between clip starts")
    split = parser.add_argument_group("split")
    split.add_argument("--folds", type=int, default=5, help="cross-validation folds K")
    split.add_argument("--fold", type=int, default=None, help="train only this fold (0-based)")
    split.add_argument("--test-fraction", type=float, default=0.1, help="patients held out")
    split.add_argument("--seed", type=int, default=0, help="splits, init, shuffling, augmentation")
    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--epochs", type=int, default=150)
    opt.add_argument("--patience", type=int, default=50, help="epochs without a better val loss")
    opt.add_argument("--lr", type=float, default=1e-6, help="Adam learning rate")
    opt.add_argument("--batch-size", type=int, default=4, help="clips per batch per process")
    opt.add_argument("--accumulate", type=int, default=1, help="batches per optimizer step")
    opt.add_argument("--amp", action="store_true", help="mixed precision (fp16 CUDA, bf16 CPU)")
    opt.add_argument(
        "--pos-weight", default=None, help="BCE pos_weight: 'auto' (neg/pos) or P numbers"
    )
    run_group = parser.add_argument_group("running")
    run_group.add_argument("--device", default=None, help="cuda or cpu (default: cuda if any)")
    run_group.add_argument("--num-workers", type=int, default=None, help="DataLoader workers")
    run_group.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's; use 1 on a CPU shared with other jobs)",
    )
    run_group.add_argument(
        "--max-minutes", type=float, default=None, help="wall-clock budget for all folds"
    )
    run_group.add_argument(
        "--save-every", type=int, default=200, help="optimizer steps between state saves"
    )
    opt.add_argument(
        "--no-augment",
        dest="augment",
        action="store_false",
        help="no flip/rotation of training clips (default: on, as in the paper)",
    )
    opt.add_argument(
        "--lr-decay",
        type=float,
        default=1.0,
        help="multiply the lr by this after --lr-patience epochs without a better val loss",
    )
    opt.add_argument(
        "--lr-patience",
        type=int,
        default=0,
        help="epochs without a better validation loss before --lr-decay (0 = constant lr)",
    )
    opt.add_argument(
        "--lr-schedule",
        default="plateau",
        help="plateau (default: --lr-decay after --lr-patience bad epochs; constant when "
        "--lr-patience is 0, the paper's) or linear (decay to 0 over --max-minutes or "
        "--epochs, whichever ends first: for fixed-budget training from scratch)",
    )
    opt.add_argument(
        "--freeze-bn-after",
        type=float,
        default=None,
        metavar="F",
        help="after this share of the run (0-1, measured as for --lr-schedule linear) "
        "recalibrate BatchNorm once and train on with those statistics fixed; needs "
        "--bn-recalibrate (default: off)",
    )
    opt.add_argument(
        "--bn-recalibrate",
        type=int,
        default=0,
        metavar="N",
        help="re-estimate BatchNorm statistics on N training batches before each validation "
        "(for high-lr training from scratch; default 0 = off, the paper's protocol)",
    )
    run_group.add_argument(
        "--cache", type=Path, default=None, help="frame cache folder (default $LUVNET_CACHE)"
    )


def _positive(name: str, value: float | int | None, *, zero_ok: bool = False) -> None:
    if value is None:
        return
    ok = value >= 0 if zero_ok else value > 0
    if not ok:
        expected = "0 or more" if zero_ok else "a positive number"
        raise LuvnetError(f"{name}: expected {expected}, got {value}")


def check_args(args: argparse.Namespace) -> None:
    """Every bad value as one LuvnetError naming the flag (argparse only checks types)."""
    if args.model not in MODEL_VARIANTS:
        raise LuvnetError(
            f"--model: expected one of {', '.join(MODEL_VARIANTS)}, got {args.model!r}"
        )
    for name in ("epochs", "batch_size", "accumulate", "folds", "image_size", "clip_length"):
        _positive(f"--{name.replace('_', '-')}", getattr(args, name))
    for name in ("lr", "max_minutes", "clip_step", "num_heads", "fusion_hidden"):
        _positive(f"--{name.replace('_', '-')}", getattr(args, name))
    _positive("--classifier-hidden", args.classifier_hidden)
    zero_ok = ("patience", "save_every", "num_workers", "seed", "bn_recalibrate", "threads")
    for name in (*zero_ok, "lr_patience"):
        _positive(f"--{name.replace('_', '-')}", getattr(args, name), zero_ok=True)
    if args.kernel_size < 1 or args.kernel_size % 2 == 0:
        raise LuvnetError(f"--kernel-size: expected an odd positive number, got {args.kernel_size}")
    if not 0.0 <= args.test_fraction < 1.0:
        raise LuvnetError(f"--test-fraction: expected a number in [0, 1), got {args.test_fraction}")
    if args.lr_schedule not in LR_SCHEDULES:
        raise LuvnetError(
            f"--lr-schedule: expected one of {', '.join(LR_SCHEDULES)}, got {args.lr_schedule!r}"
        )
    if args.lr_schedule != "plateau" and args.lr_patience > 0:
        raise LuvnetError(
            f"--lr-patience: applies to --lr-schedule plateau only, not {args.lr_schedule}"
        )
    if args.freeze_bn_after is not None:
        if not 0.0 <= args.freeze_bn_after < 1.0:
            raise LuvnetError(
                f"--freeze-bn-after: expected a share of the run in [0, 1), "
                f"got {args.freeze_bn_after}"
            )
        if args.bn_recalibrate <= 0:
            raise LuvnetError(
                "--freeze-bn-after: needs --bn-recalibrate N (the training batches the frozen "
                "statistics come from)"
            )
    if not 0.0 < args.lr_decay <= 1.0:
        raise LuvnetError(f"--lr-decay: expected a factor in (0, 1], got {args.lr_decay}")
    if not 0.0 <= args.dropout < 1.0:
        raise LuvnetError(f"--dropout: expected a number in [0, 1), got {args.dropout}")
    if args.fold is not None and args.fold < 0:
        raise LuvnetError(f"--fold: expected 0..{args.folds - 1}, got {args.fold}")
    if args.folds < 2:
        raise LuvnetError(f"--folds: expected at least 2, got {args.folds}")


def model_config(args: argparse.Namespace) -> ModelConfig:
    return ModelConfig(
        backbone=args.backbone,
        variant=args.model,
        num_heads=args.num_heads,
        kernel_size=args.kernel_size,
        fusion_hidden=args.fusion_hidden,
        classifier_hidden=args.classifier_hidden,
        dropout=args.dropout,
        clip_length=args.clip_length,
        clip_step=args.clip_step,
        preprocess=PreprocessConfig(
            image_size=args.image_size, crop_box=parse_crop_box(args.crop_box)
        ),
    )


def parse_crop_box(text: str | None) -> tuple[int, int, int, int] | None:
    if text is None:
        return None
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError:
        raise LuvnetError(f"--crop-box: expected x,y,w,h (4 integers), got {text!r}") from None
    if x < 0 or y < 0 or w < 1 or h < 1:
        raise LuvnetError(f"--crop-box: expected x, y >= 0 and w, h >= 1, got {text!r}")
    return (x, y, w, h)


def build_fold_model(config: ModelConfig, weights: str | None, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    try:
        return build_model(config, weights)
    except ValueError as err:  # e.g. --num-heads not dividing the embedding width
        raise LuvnetError(f"model {config.backbone}/{config.variant}: {err}") from None


def plan_splits(manifest: Manifest, args: argparse.Namespace) -> tuple[SplitPlan, list[int]]:
    plan = splits_from_manifest(
        manifest, test_fraction=args.test_fraction, k=args.folds, seed=args.seed
    )
    if args.fold is None:
        return plan, list(range(len(plan)))
    plan.fold(args.fold)  # range check with the plan's own message
    return plan, [args.fold]


def write_run_json(
    out: Path, args: argparse.Namespace, config: ModelConfig, plan: SplitPlan, manifest_sha: str
) -> None:
    document = {
        "model": config.variant,
        "backbone": config.backbone,
        "config": config.to_dict(),
        "manifest": str(args.manifest.resolve()),
        "manifest_sha256": manifest_sha,
        "split_mode": plan.mode,
        "folds": len(plan),
        "test_patients": sorted(plan.test),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "command": " ".join(sys.argv),
        "updated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
    }
    tmp = out / "run.json.tmp"
    tmp.write_text(json.dumps(document, indent=2) + "\n")
    os.replace(tmp, out / "run.json")


def split_record(plan: SplitPlan, fold: Fold, args: argparse.Namespace) -> dict[str, Any]:
    """What evaluate needs to find this fold's patients again (checkpoint provenance)."""
    return {
        "mode": plan.mode,
        "seed": args.seed,
        "test_fraction": args.test_fraction,
        "folds": len(plan),
        "fold": fold.index,
        "patients": {
            "train": sorted(fold.train),
            "val": sorted(fold.val),
            "test": sorted(fold.test),
        },
    }


def pos_weights(spec: str | list[float] | None, train: ClipDataset) -> tuple[float, ...] | None:
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


def run(args: argparse.Namespace) -> int:
    check_args(args)
    set_threads(args.threads)
    env = ddp.from_environment()
    device_name = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    device = resolve_device(device_name)
    device = ddp.setup(env, device.type) if env.enabled else device
    try:
        return _train(args, env, device)
    finally:
        ddp.teardown(env)


def _train(args: argparse.Namespace, env: ddp.DistEnv, device: torch.device) -> int:
    config = model_config(args)
    pos_spec = parse_pos_weight(args.pos_weight, config.pattern_names)
    manifest = read_manifest(args.manifest)
    manifest_sha = file_sha256(args.manifest)
    plan, folds = plan_splits(manifest, args)
    num_workers = args.num_workers
    if num_workers is None:
        num_workers = min(4, os.cpu_count() or 1) if device.type == "cuda" else 0
    cache = args.cache or default_cache_dir()
    root = manifest.path.resolve().parent
    build_fold_model(config, args.weights, args.seed)  # bad heads/kernel/weights fail here, early
    if env.is_main:
        args.out.mkdir(parents=True, exist_ok=True)
        write_run_json(args.out, args, config, plan, manifest_sha)
        if args.weights is None:
            _note("trunk randomly initialised (the paper used ImageNet: --weights imagenet)")
    ddp.barrier(env)
    test_rows = rows_for(manifest.rows, plan.test)
    test_set = clip_dataset(test_rows, config, cache) if test_rows else None
    budget = None if args.max_minutes is None else args.max_minutes * 60.0 / len(folds)
    for index in folds:
        fold = plan.fold(index)
        train_set = clip_dataset(rows_for(manifest.rows, fold.train), config, cache)
        val_set = clip_dataset(rows_for(manifest.rows, fold.val), config, cache)
        require_clips(train_set, f"fold {index} training set")
        require_clips(val_set, f"fold {index} validation set")
        settings = FitSettings(
            epochs=args.epochs,
            patience=args.patience,
            lr=args.lr,
            batch_size=args.batch_size,
            accumulate=args.accumulate,
            amp=args.amp,
            seed=args.seed * 1000 + index,
            save_every=args.save_every,
            budget_s=budget,
            num_workers=num_workers,
            pos_weight=pos_weights(pos_spec, train_set),
            bn_recalibrate=args.bn_recalibrate,
            augment=args.augment,
            lr_decay=args.lr_decay,
            lr_patience=args.lr_patience,
            lr_schedule=args.lr_schedule,
            freeze_bn_after=args.freeze_bn_after,
        )
        extra = {
            "manifest_sha256": manifest_sha,
            "weights": args.weights,
            "fold": index,
            "world_size": env.world_size,
        }
        provenance = default_provenance(args.manifest) | {
            "split": split_record(plan, fold, args),
            "weights": args.weights,
            "lr": args.lr,
            "seed": args.seed,
        }
        paths = FoldPaths(args.out / f"fold_{index}")
        trainer = FoldTrainer(
            model=build_fold_model(config, args.weights, settings.seed),
            config=config,
            train=train_set,
            val=val_set,
            paths=paths,
            settings=settings,
            env=env,
            device=device,
            fingerprint=settings_fingerprint(config, settings, extra),
            provenance=provenance,
            manifest_root=root,
            label=f"fold {index}",
        )
        if env.is_main:
            _note(
                f"fold {index}: {len(train_set)} training clips ({len(fold.train)} patients), "
                f"{len(val_set)} validation clips ({len(fold.val)} patients) on {device}"
            )
        trainer.fit()
        if env.is_main and test_set is not None:
            evaluate_best(paths, test_set, root, args, device, num_workers)
        ddp.barrier(env)
    return 0


def evaluate_best(
    paths: FoldPaths,
    test_set: ClipDataset,
    root: Path,
    args: argparse.Namespace,
    device: torch.device,
    num_workers: int,
) -> None:
    """The fold's best checkpoint on the held-out test set, at its stored thresholds."""
    ckpt = load_checkpoint(paths.best, map_location=device)
    loader = eval_loader(
        test_set, batch_size=args.batch_size, num_workers=num_workers, pin_memory=False
    )
    bar = ProgressBar(len(loader), f"{paths.root.name} test", show_loss=False)
    scored = predict(
        channels_last(ckpt.model),
        loader,
        ckpt.config.preprocess,
        root=root,
        amp=args.amp,
        on_batch=bar.update,
    )
    bar.close()
    metrics = write_results(
        scored,
        paths.metrics("test"),
        paths.predictions("test"),
        list(ckpt.config.thresholds),
        ckpt.config.pattern_names,
    )
    macro = metrics["macro_auc"]
    _note(
        f"{paths.root.name}: test macro AUC {'n/a' if macro is None else f'{macro:.3f}'} "
        f"on {metrics['n_clips']} clips"
    )


def _note(message: str) -> None:
    print(f"luvnet train: {message}", file=sys.stderr, flush=True)
