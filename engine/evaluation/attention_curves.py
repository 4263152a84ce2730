"""Per-frame attention curves of a video (docs/model.md, "Attention curves").

For each clip and pattern p: alpha_t^p = sum over heads of the attention weights a_{t,k}^p,
min-max normalised over the clip's real frames. A video longer than one clip has overlapping
clips (6 frames with the default 30/24); each frame takes its value from the clip whose centre
is nearest, so the stitched curve has one value per frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from luvnet.engine.errors import LuvnetError


@dataclass(frozen=True)
class VideoCurves:
    """Stitched curves of one video: ``normalised`` and ``raw`` float [P, T]; ``source`` [T]
    is the clip each frame was taken from; ``probs`` [K, P] is each clip's sigmoid output."""

    normalised: np.ndarray
    raw: np.ndarray
    source: np.ndarray
    spans: tuple[tuple[int, int], ...]  # per clip: first and last real frame (inclusive)
    probs: np.ndarray

    def top_frames(self, pattern: int, k: int = 3) -> list[int]:
        """The k frames with the highest normalised alpha (ties: higher raw alpha, earlier)."""
        order = np.lexsort(
            (np.arange(self.raw.shape[1]), -self.raw[pattern], -self.normalised[pattern])
        )
        return [int(i) for i in order[:k]]


def clip_alpha(attention: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """attention [K, P, L, N_a], mask [K, L] -> (raw alpha [K, P, L], min-max normalised).

    Padded frames are NaN in both. A clip whose alpha is constant (e.g. one real frame)
    normalises to 0 everywhere: no frame stands out.
    """
    attention = np.asarray(attention, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if attention.ndim != 4 or mask.shape != (attention.shape[0], attention.shape[2]):
        raise LuvnetError(
            f"attention: expected [K, P, L, N_a] with mask [K, L], got {attention.shape} "
            f"and {mask.shape}"
        )
    raw = attention.sum(axis=-1)
    raw = np.where(mask[:, None, :], raw, np.nan)
    low = np.nanmin(raw, axis=-1, keepdims=True)
    span = np.nanmax(raw, axis=-1, keepdims=True) - low
    normalised = np.where(span > 0, (raw - low) / np.where(span > 0, span, 1.0), 0.0)
    return raw, np.where(mask[:, None, :], normalised, np.nan)


def stitch(
    attention: np.ndarray,
    mask: np.ndarray,
    spans: Sequence[tuple[int, int]],
    probs: np.ndarray,
) -> VideoCurves:
    """One value per frame from the clips' curves (module docstring)."""
    raw, normalised = clip_alpha(attention, mask)
    if len(spans) != raw.shape[0]:
        raise LuvnetError(f"spans: expected {raw.shape[0]} (one per clip), got {len(spans)}")
    n_frames = max(end for _, end in spans) + 1
    centres = np.array([(start + end) / 2.0 for start, end in spans])
    frames = np.arange(n_frames)
    distance = np.abs(frames[:, None] - centres[None, :])
    covers = np.array([[start <= t <= end for start, end in spans] for t in frames])
    distance[~covers] = np.inf
    source = np.argmin(distance, axis=1)  # ties go to the earlier clip
    offsets = frames - np.array([spans[k][0] for k in source])
    return VideoCurves(
        normalised=normalised[source, :, offsets].T,
        raw=raw[source, :, offsets].T,
        source=source,
        spans=tuple((int(a), int(b)) for a, b in spans),
        probs=np.asarray(probs, dtype=np.float64),
    )
