"""Eager PyTorch: the reference. fp32 on CPU or CUDA, fp16 on CUDA; channels_last trunk."""

from __future__ import annotations

import torch

from luvnet.engine.backends.base import Backend, BackendInfo, BackendSpec
from luvnet.engine.backends.modules import model_copy
from luvnet.engine.model.network import LUVNet


def load(model: LUVNet, spec: BackendSpec) -> Backend:
    # A private copy: channels_last (which convolutions prefer on CPU and CUDA) and the
    # dtype must not leak into the caller's model or the parity reference.
    runner = model_copy(model, spec.dtype, channels_last=True)

    @torch.inference_mode()
    def encode(frames: torch.Tensor) -> torch.Tensor:
        return runner.embed(frames.contiguous(memory_format=torch.channels_last))

    @torch.inference_mode()
    def head(window: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return runner.head(window, mask)

    info = BackendInfo(
        name="eager",
        device=str(spec.device),
        precision=spec.precision,
        image_size=spec.image_size,
        window=spec.window,
        embed_dim=model.embed_dim,
        details={"channels_last": True},
    )
    return Backend(info, encode, head, device=spec.device, dtype=spec.dtype, any_batch=True)
