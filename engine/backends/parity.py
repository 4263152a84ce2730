"""Parity against eager fp32: every non-reference backend is checked when it loads.

One fixed seeded input (a normalised-looking frame; a window made from its embedding with
seeded per-element gains, so magnitudes and signs are those of real embeddings) goes
through the eager fp32 model and through the backend. The window is scored twice: full,
and half padded with a mask (what the streamer sends before the window fills). The
backend's own embedding feeds its head, so encoder error shows in the logits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from luvnet.engine.backends.base import Backend, Parity, Tolerance
from luvnet.engine.errors import LuvnetError

if TYPE_CHECKING:
    from luvnet.engine.model.network import LUVNet

PARITY_SEED = 20250701


class ParityError(LuvnetError):
    """A backend computes something other than eager fp32 on the fixed input."""


TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(logits=1e-3, scores=1e-3),
    "fp16": Tolerance(logits=5e-2, scores=1e-2),
}


@dataclass(frozen=True)
class Reference:
    """The fixed input and eager fp32 outputs on it, on the backend's device."""

    frame: torch.Tensor  # [1, 3, S, S]
    gains: torch.Tensor  # [1, L, D]: window = embedding * gains
    masks: tuple[torch.Tensor, ...]  # full, half padded
    embedding: torch.Tensor  # [1, D]
    logits: tuple[torch.Tensor, ...]
    attention: tuple[torch.Tensor, ...]


def parity_inputs(
    image_size: int, window: int, embed_dim: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
    """(frame, gains, masks), the same on every machine (CPU generator, then moved)."""
    gen = torch.Generator().manual_seed(PARITY_SEED)
    frame = torch.randn(1, 3, image_size, image_size, generator=gen)
    gains = 0.5 + torch.rand(1, window, embed_dim, generator=gen)
    full = torch.ones(1, window, dtype=torch.bool)
    padded = full.clone()
    padded[:, max(1, window // 2) :] = False
    return frame.to(device), gains.to(device), (full.to(device), padded.to(device))


@torch.inference_mode()
def reference_outputs(model: LUVNet, image_size: int, window: int) -> Reference:
    """Eager fp32 outputs of ``model`` (eval, on its device) on the fixed input."""
    device = next(model.parameters()).device
    frame, gains, masks = parity_inputs(image_size, window, model.embed_dim, device)
    embedding = model.embed(frame)
    outputs = [model.head(embedding.unsqueeze(1) * gains, mask) for mask in masks]
    return Reference(
        frame=frame,
        gains=gains,
        masks=masks,
        embedding=embedding,
        logits=tuple(o[0] for o in outputs),
        attention=tuple(o[1] for o in outputs),
    )


def _max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    diff = (a.float() - b.float()).abs()
    return math.nan if diff.isnan().any() else diff.max().item()


def _worst(*values: float) -> float:
    """max() that keeps NaN (the builtin drops it depending on argument order)."""
    return math.nan if any(math.isnan(v) for v in values) else max(values)


@torch.inference_mode()
def measure_parity(backend: Backend, reference: Reference, tolerance: Tolerance) -> Parity:
    embedding = backend.encode(reference.frame)
    window = embedding.float().unsqueeze(1) * reference.gains
    logits, scores, attention = 0.0, 0.0, 0.0
    for mask, ref_logits, ref_attention in zip(
        reference.masks, reference.logits, reference.attention, strict=True
    ):
        out_logits, out_attention = backend.head(window, mask)
        logits = _worst(logits, _max_abs(out_logits, ref_logits))
        scores = _worst(scores, _max_abs(out_logits.sigmoid(), ref_logits.sigmoid()))
        attention = _worst(attention, _max_abs(out_attention, ref_attention))
    return Parity(
        logits=logits,
        scores=scores,
        attention=attention,
        embedding=_max_abs(embedding, reference.embedding),
        tolerance=tolerance,
    )


def verify(backend: Backend, reference: Reference, tolerance: Tolerance) -> Backend:
    """The backend with its parity figures attached; a ParityError past the tolerance."""
    parity = measure_parity(backend, reference, tolerance)
    if not parity.ok:
        raise ParityError(
            f"backend {backend.name} ({backend.info.device} {backend.info.precision}) FAILED "
            f"the parity check against eager fp32: {parity.summary()}; refusing to use it "
            "(use the eager backend, or delete its cache directory if it was loaded from one)"
        )
    return backend.with_info(parity=parity)
