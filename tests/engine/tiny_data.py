"""Tiny hand-made labelled videos for the training, evaluation and attention-plot tests.

Each video is grey noise plus the cue of its patterns, drawn with OpenCV so a small CNN can
learn them in a few steps: bright horizontal bands (a_lines), bright vertical streaks
(b_lines), a bright blob (consolidation), a dark wedge (pleural_effusion). :data:`TINY` is
the model those tests train on them, :func:`save_tiny_checkpoint` a checkpoint of it for the
``--init`` tests.
"""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import torch

from luvnet.engine.model.checkpoint import save_checkpoint
from luvnet.engine.model.config import ModelConfig, PreprocessConfig
from luvnet.engine.model.network import build_model

PATTERN_COLUMNS = ("a_lines", "b_lines", "consolidation", "pleural_effusion")
# `luvnet train` flags for a run of a few seconds on the 2-core CPU: tiny trunk input, short
# clips, small head (training, evaluation and demo-export tests add their own epochs).
TINY_TRAIN_ARGS = [
    "--backbone", "mobilenet_v3_small", "--image-size", "32", "--clip-length", "8",
    "--clip-step", "6", "--kernel-size", "3", "--fusion-hidden", "32",
    "--classifier-hidden", "16", "--folds", "2", "--fold", "0", "--test-fraction", "0.25",
    "--lr", "1e-3", "--device", "cpu", "--threads", "1",
]  # fmt: skip

# The architecture TINY_TRAIN_ARGS train.
TINY = ModelConfig(
    backbone="mobilenet_v3_small",
    kernel_size=3,
    fusion_hidden=32,
    classifier_hidden=16,
    clip_length=8,
    clip_step=6,
    preprocess=PreprocessConfig(image_size=32),
)


def save_tiny_checkpoint(out: Path, seed: int) -> Path:
    """A checkpoint of the :data:`TINY` architecture at ``out`` whose trunk BatchNorm
    statistics are not the defaults (so a copy that skipped buffers would show)."""
    torch.manual_seed(seed)
    model = build_model(TINY)
    model.train()
    with torch.no_grad():
        model.embed(torch.randn(6, 3, 32, 32))
    return save_checkpoint(model.eval(), out)


def draw_frame(rng: np.random.Generator, labels: tuple[int, ...], size: int) -> np.ndarray:
    frame = rng.integers(20, 70, (size, size), dtype=np.uint8)
    s = size
    if labels[0]:
        for y in (s // 4, s // 2, 3 * s // 4):
            cv2.line(frame, (2, y), (s - 3, y), 230, 2)
    if labels[1]:
        for x in (s // 3, 2 * s // 3):
            cv2.line(frame, (x, 2), (x, s - 3), 255, 3)
    if labels[2]:
        cv2.circle(frame, (s // 4, 3 * s // 4), s // 8, 200, -1)
    if labels[3]:
        pts = np.array([[s - 2, s - 2], [s // 2, s - 2], [s - 2, s // 2]], np.int32)
        cv2.fillPoly(frame, [pts], 0)
    return frame


def write_video(path: Path, labels: tuple[int, ...], frames: int, size: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (size, size))
    assert writer.isOpened(), f"cannot write {path}"
    for _ in range(frames):
        writer.write(cv2.cvtColor(draw_frame(rng, labels, size), cv2.COLOR_GRAY2BGR))
    writer.release()


def make_dataset(
    root: Path,
    *,
    patients: int = 8,
    videos_per_patient: int = 2,
    frames: int = 12,
    size: int = 48,
    seed: int = 0,
    unknown_effusion: bool = False,
) -> Path:
    """Write videos and ``manifest.csv`` under ``root``; returns the manifest path."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(patients):
        for v in range(videos_per_patient):
            # Every pattern both present and absent across the set, independent draws.
            labels = tuple(int(x) for x in rng.integers(0, 2, 4))
            name = f"p{p:02d}_v{v}.mp4"
            write_video(root / name, labels, frames, size, seed * 1000 + p * 10 + v)
            cells = [str(x) for x in labels]
            if unknown_effusion:
                cells[3] = ""
            rows.append([name, f"P{p:02d}", *cells])
    manifest = root / "manifest.csv"
    with manifest.open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["video", "patient_id", *PATTERN_COLUMNS])
        writer.writerows(rows)
    return manifest
