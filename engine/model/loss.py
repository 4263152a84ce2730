"""BCE-with-logits over known labels only (docs/model.md, "Training"): NaN = unknown, not 0."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from luvnet.engine.errors import LuvnetError


def masked_bce_sum(
    logits: torch.Tensor, labels: torch.Tensor, pos_weight: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of per-label losses over known labels, number of known labels).

    Returning the sum and the count lets callers average over a whole epoch or over several
    accumulated micro-batches exactly, whatever the mix of known labels per batch.
    """
    known = ~torch.isnan(labels)
    target = torch.where(known, labels, torch.zeros_like(labels))
    per_label = F.binary_cross_entropy_with_logits(
        logits.float(), target.float(), pos_weight=pos_weight, reduction="none"
    )
    return (per_label * known).sum(), known.sum()


def masked_bce(
    logits: torch.Tensor, labels: torch.Tensor, pos_weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean BCE over the known labels of the batch; 0 (with a gradient) when none is known."""
    total, count = masked_bce_sum(logits, labels, pos_weight)
    return total / count.clamp_min(1)


def parse_pos_weight(
    text: str | None, pattern_names: Sequence[str]
) -> Literal["auto"] | list[float] | None:
    """``--pos-weight``: None, ``auto`` or one positive number per pattern, comma-separated."""
    if text is None:
        return None
    if text.strip().lower() == "auto":
        return "auto"
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != len(pattern_names) or not all(v > 0 and np.isfinite(v) for v in values):
        raise LuvnetError(
            f"--pos-weight: expected 'auto' or {len(pattern_names)} positive numbers "
            f"({','.join(pattern_names)}), got {text!r}"
        )
    return values


def auto_pos_weight(labels: np.ndarray) -> list[float]:
    """negatives / positives per pattern over the known training labels (1.0 if undefined)."""
    weights = []
    for column in np.asarray(labels, dtype=float).T:
        pos = float((column == 1).sum())
        neg = float((column == 0).sum())
        weights.append(neg / pos if pos > 0 and neg > 0 else 1.0)
    return weights
