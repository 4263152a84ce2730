"""``luvnet evaluate --checkpoint C --manifest M [--split test|val|train|all] --out DIR``.

Scores every clip of the chosen split with :func:`engine.inference.predict` (the same function
training uses for validation) and writes ``DIR/metrics.json`` (``engine.metrics`` schema, at the
checkpoint's stored thresholds) and ``DIR/predictions.csv`` (``engine.predictions``).

Which patients a split holds: the checkpoint's provenance records the patients of its fold's
train/val/test sets (``luvnet train`` stores them), and those win, so a checkpoint is always
scored on the patients it was really held out from. A checkpoint without them (e.g. the demo
model) uses the manifest's ``split`` column (train/val/test values). ``--split all`` takes every
row, e.g. for an external test set.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from luvnet.engine.data.clips import default_cache_dir
from luvnet.engine.data.manifest import Manifest, ManifestRow, read_manifest
from luvnet.engine.errors import LuvnetError
from luvnet.engine.evaluation.inference import (
    Scored,
    channels_last,
    predict,
    resolve_device,
    set_threads,
)
from luvnet.engine.evaluation.metrics import compute_metrics, write_metrics
from luvnet.engine.evaluation.predictions import write_predictions
from luvnet.engine.model.checkpoint import file_sha256, load_checkpoint
from luvnet.engine.progress import ProgressBar
from luvnet.engine.training.loaders import clip_dataset, eval_loader

SPLITS = ("test", "val", "train", "all")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage = (
        "luvnet evaluate --checkpoint C --manifest M [--split test|val|train|all] --out DIR"
    )
    parser.add_argument("--checkpoint", type=Path, required=True, help="checkpoint directory")
    parser.add_argument("--manifest", type=Path, required=True, help="manifest CSV of videos")
    parser.add_argument("--split", choices=SPLITS, default="test", help="default: test")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--batch-size", type=int, default=4, help="clips per batch (default 4)")
    parser.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda if any)")
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument(
        "--cache", type=Path, default=None, help="frame cache folder (default $LUVNET_CACHE)"
    )
    parser.add_argument("--amp", action="store_true", help="mixed precision")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def write_results(
    scored: Scored,
    metrics_path: Path,
    predictions_path: Path,
    thresholds: Sequence[float | None] | None,
    pattern_names: Sequence[str],
) -> dict[str, Any]:
    """predictions CSV + metrics.json of one scored split; thresholds None = fit Youden."""
    write_predictions(predictions_path, scored.clips, scored.labels, scored.probs, pattern_names)
    metrics = compute_metrics(scored.labels, scored.probs, thresholds, pattern_names)
    metrics["loss"] = scored.loss
    write_metrics(metrics_path, metrics)
    return metrics


def split_patients(provenance: dict[str, Any]) -> dict[str, list[str]] | None:
    """The fold's {"train", "val", "test"} patient lists recorded by ``luvnet train``."""
    split = provenance.get("split")
    patients = split.get("patients") if isinstance(split, dict) else None
    if isinstance(patients, dict) and all(isinstance(patients.get(k), list) for k in SPLITS[:3]):
        return {k: [str(p) for p in patients[k]] for k in SPLITS[:3]}
    return None


def select_rows(
    manifest: Manifest, provenance: dict[str, Any], split: str, checkpoint: Path
) -> list[ManifestRow]:
    """The manifest rows of ``split`` (module docstring for where the split comes from)."""
    if split == "all":
        return list(manifest.rows)
    patients = split_patients(provenance)
    if patients is not None:
        wanted = set(patients[split])
        rows = [row for row in manifest.rows if row.patient_id in wanted]
        source = f"the {split} patients recorded in {checkpoint}"
    else:
        rows = [row for row in manifest.rows if row.split == split]
        source = f"the manifest's split column (value {split!r})"
    if not rows:
        raise LuvnetError(
            f"--split {split}: {manifest.path} has no video of {source}; "
            "expected at least one (use --split all to score every video)"
        )
    return rows


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise LuvnetError(f"--batch-size: expected a positive integer, got {args.batch_size}")
    if args.num_workers < 0:
        raise LuvnetError(f"--num-workers: expected 0 or more, got {args.num_workers}")
    if args.threads is not None and args.threads < 1:
        raise LuvnetError(f"--threads: expected a positive integer, got {args.threads}")
    set_threads(args.threads)
    device = resolve_device(args.device)
    ckpt = load_checkpoint(args.checkpoint, map_location=device)
    manifest = read_manifest(args.manifest)
    rows = select_rows(manifest, ckpt.provenance, args.split, ckpt.path)
    dataset = clip_dataset(rows, ckpt.config, args.cache or default_cache_dir())
    loader = eval_loader(
        dataset,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        pin_memory=device.type == "cuda",
    )
    bar = ProgressBar(len(loader), f"evaluate {args.split}", show_loss=False)
    scored = predict(
        channels_last(ckpt.model),
        loader,
        ckpt.config.preprocess,
        root=manifest.path.resolve().parent,
        amp=args.amp,
        on_batch=bar.update,
    )
    bar.close()
    args.out.mkdir(parents=True, exist_ok=True)
    metrics = write_results(
        scored,
        args.out / "metrics.json",
        args.out / "predictions.csv",
        list(ckpt.config.thresholds),
        ckpt.config.pattern_names,
    )
    recorded = ckpt.provenance.get("manifest_sha256")
    if recorded and recorded != file_sha256(args.manifest):
        print(
            f"luvnet evaluate: note: {args.manifest} differs from the manifest the checkpoint "
            "was trained on (SHA-256 mismatch)",
            file=sys.stderr,
        )
    print(summary_line(metrics, len(rows), args.split))
    return 0


def summary_line(metrics: dict[str, Any], n_videos: int, split: str) -> str:
    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    parts = [f"{name} {fmt(m['auc'])}" for name, m in metrics["patterns"].items()]
    return (
        f"{split}: {metrics['n_clips']} clips from {n_videos} videos; AUC "
        + ", ".join(parts)
        + f"; micro {fmt(metrics['micro_auc'])}, macro {fmt(metrics['macro_auc'])}"
    )
