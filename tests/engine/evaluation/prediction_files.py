"""Predictions files for the ``luvnet compare`` and ``luvnet ensemble`` tests: N clips of 8
videos of 4 patients, labels of both classes with some unknown, two models' probabilities."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from luvnet.engine.evaluation.predictions import ClipRef, write_predictions

N = 24


def prediction_data(seed: int = 0) -> tuple[list[ClipRef], np.ndarray, np.ndarray, np.ndarray]:
    """Clips, labels ``[N, 4]`` (NaN unknown), probabilities ``[N, 4]`` of a model that
    carries some signal and of one that is noise."""
    rng = np.random.default_rng(seed)
    clips = [ClipRef(f"c{i:02d}", f"v{i // 3}.mp4", f"p{i // 6}", 24 * (i % 3), 24 * (i % 3) + 30)
             for i in range(N)]  # fmt: skip
    labels = np.tile([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0]], (N // 2, 1))
    labels[:6, 2] = np.nan  # consolidation partly unknown
    labels[:, 3] = np.nan  # effusion never labelled
    probs_a = np.clip(0.3 * np.nan_to_num(labels) + 0.7 * rng.random((N, 4)), 0, 1)
    probs_b = rng.random((N, 4))
    return clips, labels, probs_a, probs_b


def write_file(
    folder: Path,
    name: str,
    clips: list[ClipRef],
    labels: np.ndarray,
    probs: np.ndarray,
    order: np.ndarray | None = None,
) -> Path:
    """``folder/name``, a predictions CSV of the rows in ``order`` (default: as given)."""
    order = np.arange(len(clips)) if order is None else order
    path = folder / name
    write_predictions(path, [clips[i] for i in order], labels[order], probs[order])
    return path
