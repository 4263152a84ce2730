"""Score a checkpoint on a manifest split (``luvnet evaluate``): metrics.json and predictions.csv.

Scores every clip of the chosen split with :func:`engine.inference.predict` (the same function
training uses for validation) and writes ``OUT/metrics.json`` (``engine.metrics`` schema, at the
checkpoint's stored thresholds) and ``OUT/predictions.csv`` (``engine.predictions``).

Which patients a split holds: the checkpoint's provenance records how its fold's train/val/test
sets were drawn and one digest per set (``luvnet train`` stores them; never the patient ids, see
:mod:`luvnet.engine.data.split_record`). The split is re-derived from the manifest and used only
when its digest matches, so a checkpoint is always scored on the patients it was really held out
from; older checkpoints that list the ids in clear are read as before. A checkpoint without a
recorded split uses the manifest's ``split`` column (train/val/test values). Split ``all``
takes every row, e.g. for an external test set.

Every video of the split is decoded before scoring starts; unreadable ones end the run with
one error that lists them all, or with ``skip_unreadable`` are left out and listed in
metrics.json under ``"skipped_videos"`` (:mod:`luvnet.engine.data.unreadable`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from luvnet.engine.data.datasets import clip_dataset, eval_loader
from luvnet.engine.data.frame_cache import default_cache_dir
from luvnet.engine.data.manifest import Manifest, ManifestRow, read_manifest
from luvnet.engine.data.split_record import recorded_patients
from luvnet.engine.data.timing import DEFAULT_DECIMATE_ABOVE, Timing
from luvnet.engine.data.unreadable import SkippedVideo, readable_rows
from luvnet.engine.errors import LuvnetError
from luvnet.engine.evaluation.inference import Scored, channels_last, predict
from luvnet.engine.evaluation.metrics import compute_metrics, write_metrics
from luvnet.engine.evaluation.predictions import write_predictions
from luvnet.engine.model.checkpoint import file_sha256, load_checkpoint
from luvnet.engine.progress import ProgressBar
from luvnet.engine.runtime import resolve_device, set_threads

log = logging.getLogger(__name__)

SPLITS = ("test", "val", "train", "all")


def write_results(
    scored: Scored,
    metrics_path: Path,
    predictions_path: Path,
    thresholds: Sequence[float | None] | None,
    pattern_names: Sequence[str],
    skipped: Sequence[SkippedVideo] | None = None,
    decimated: int | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """predictions CSV + metrics.json of one scored split; thresholds None = fit Youden.

    ``skipped``: the split's unreadable videos left out (``--skip-unreadable``), recorded as
    ``"skipped_videos"``: [{"video", "reason"}]; None (not skipping) leaves the key out.
    ``decimated``: how many of the split's videos were decimated to the model's frame rate
    (``"decimated_videos"``; None leaves the key out). ``extra``: more keys for metrics.json
    (``luvnet ensemble``'s ``"ensemble"`` record).

    Raises:
        LuvnetError: a figure that is not a finite number or null (``write_metrics``).
        OSError: a file that cannot be written.
    """
    write_predictions(predictions_path, scored.clips, scored.labels, scored.probs, pattern_names)
    metrics = compute_metrics(scored.labels, scored.probs, thresholds, pattern_names)
    metrics["loss"] = scored.loss
    if skipped is not None:
        metrics["skipped_videos"] = [item.to_dict() for item in skipped]
    if decimated is not None:
        metrics["decimated_videos"] = decimated
    metrics |= extra or {}
    write_metrics(metrics_path, metrics)
    return metrics


def select_rows(
    manifest: Manifest, provenance: dict[str, Any], split: str, checkpoint: Path
) -> list[ManifestRow]:
    """The manifest rows of ``split`` (module docstring for where the split comes from)."""
    if split == "all":
        return list(manifest.rows)
    wanted = recorded_patients(manifest, provenance, split, checkpoint)
    if wanted is not None:
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


@dataclass(frozen=True)
class Evaluation:
    """What :func:`evaluate` scored: the metrics.json dictionary and how many videos."""

    metrics: dict[str, Any]
    n_videos: int  # scored
    split: str
    n_skipped: int = 0  # unreadable, left out (--skip-unreadable)

    def summary(self) -> str:
        line = summary_line(self.metrics, self.n_videos, self.split)
        return line + (f"; {self.n_skipped} unreadable video(s) skipped" if self.n_skipped else "")


def evaluate(
    checkpoint: Path,
    manifest: Path,
    out: Path,
    *,
    split: str = "test",
    batch_size: int = 4,
    device: str | None = None,
    num_workers: int = 0,
    cache: Path | None = None,
    amp: bool = False,
    threads: int | None = None,
    skip_unreadable: bool = False,
    decimate_above: float = DEFAULT_DECIMATE_ABOVE,
) -> Evaluation:
    """Score ``checkpoint`` on the ``split`` rows of ``manifest``; write both files into ``out``.

    Args:
        device: ``auto``/``None`` (CUDA when visible), ``cpu``, ``cuda`` or ``cuda:N``.
        cache: the frame cache folder (default ``$LUVNET_CACHE``).
        amp: mixed precision.
        threads: torch CPU threads (None: torch's default).
        skip_unreadable: leave out videos that cannot be decoded (listed in metrics.json)
            instead of refusing the run.
        decimate_above: videos this many times faster than the checkpoint's frame rate are
            decimated to it by timestamp (0 = never; engine/data/timing.py); how many were is
            logged and recorded in metrics.json (``"decimated_videos"``).

    Raises:
        LuvnetError: a bad checkpoint, manifest or device, or an empty split.
        UnreadableVideos: some videos of the split cannot be read (all named), without
            ``skip_unreadable``.
    """
    set_threads(threads)
    torch_device = resolve_device(device)
    ckpt = load_checkpoint(checkpoint, map_location=torch_device)
    table = read_manifest(manifest)
    rows = select_rows(table, ckpt.provenance, split, ckpt.path)
    cache_dir = cache or default_cache_dir()
    timing = Timing(ckpt.config.frame_rate, decimate_above)
    rows, skipped = readable_rows(
        rows, ckpt.config.preprocess, cache_dir, table.path, skip=skip_unreadable, timing=timing
    )
    if not rows:
        raise LuvnetError(
            f"--split {split}: all {len(skipped)} of its videos in {table.path} are unreadable "
            "(skipped above); expected at least one that decodes"
        )
    dataset = clip_dataset(rows, ckpt.config, cache_dir, decimate_above)
    log.info("%s", decimation_line(timing, dataset.decimated_videos, len(rows)))
    loader = eval_loader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=torch_device.type == "cuda",
    )
    bar = ProgressBar(len(loader), f"evaluate {split}", show_loss=False)
    scored = predict(
        channels_last(ckpt.model),
        loader,
        ckpt.config.preprocess,
        root=table.path.resolve().parent,
        amp=amp,
        on_batch=bar.update,
    )
    bar.close()
    out.mkdir(parents=True, exist_ok=True)
    metrics = write_results(
        scored,
        out / "metrics.json",
        out / "predictions.csv",
        list(ckpt.config.thresholds),
        ckpt.config.pattern_names,
        skipped if skip_unreadable else None,
        dataset.decimated_videos,
    )
    recorded = ckpt.provenance.get("manifest_sha256")
    if recorded and recorded != file_sha256(manifest):
        log.warning(
            "%s differs from the manifest the checkpoint was trained on (SHA-256 mismatch)",
            manifest,
        )
    return Evaluation(metrics, len(rows), split, len(skipped))


def decimation_line(timing: Timing, decimated: int, total: int) -> str:
    """How many videos were decimated to the model's frame rate, in words (train, evaluate)."""
    if timing.model_fps is None:
        return (
            f"frame rate: the checkpoint does not record the rate it was trained at; all {total} "
            "videos used at their own rate (no decimation)"
        )
    return (
        f"frame rate: {decimated} of {total} videos decimated to the model's "
        f"{timing.model_fps:.2f} fps (sources at {timing.decimate_above:g}x that or faster; "
        "0 = off)"
    )


def summary_line(metrics: dict[str, Any], n_videos: int, split: str) -> str:
    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    parts = [f"{name} {fmt(m['auc'])}" for name, m in metrics["patterns"].items()]
    return (
        f"{split}: {metrics['n_clips']} clips from {n_videos} videos; AUC "
        + ", ".join(parts)
        + f"; micro {fmt(metrics['micro_auc'])}, macro {fmt(metrics['macro_auc'])}"
    )
