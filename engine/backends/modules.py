"""The two graphs every backend compiles, as standalone modules with plain tensor signatures.

Exporters and compilers (ONNX, torch.export, torch-tensorrt, torch.compile) want a module
whose ``forward`` takes tensors only. Both wrappers are put in eval mode on creation: the
legacy ONNX exporter restores the wrapper's own training flag recursively after exporting,
which would silently switch a freshly built (training-mode) wrapper's model to training.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from luvnet.engine.model.network import LUVNet


class EncoderGraph(nn.Module):
    """frames [1, 3, S, S] -> embedding [1, D]."""

    def __init__(self, model: LUVNet) -> None:
        super().__init__()
        self.encoder = model.encoder
        self.eval()

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.encoder(frames)


class HeadGraph(nn.Module):
    """embeddings [1, L, D], mask [1, L] bool -> (logits [1, P], attention [1, P, L, N_a])."""

    def __init__(self, model: LUVNet) -> None:
        super().__init__()
        self.clip_head = model.clip_head
        self.eval()

    def forward(
        self, embeddings: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.clip_head(embeddings, mask)


def model_copy(model: LUVNet, dtype: torch.dtype, *, channels_last: bool = False) -> LUVNet:
    """An eval copy in ``dtype`` (the caller's model and the parity reference stay as they are)."""
    clone = copy.deepcopy(model).eval().to(dtype=dtype)
    if channels_last:
        clone.encoder.to(memory_format=torch.channels_last)
    return clone
