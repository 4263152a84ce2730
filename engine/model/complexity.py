"""Parameter and multiply-accumulate counts (what ``luvnet info`` prints)."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from luvnet.engine.model.network import LUVNet


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_macs(fn, *args: Any) -> int:
    """Multiply-accumulates of one call (PyTorch counts a MAC as 2 FLOPs)."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn(*args)
    return counter.get_total_flops() // 2


def model_complexity(model: LUVNet, *, image_size: int = 256, window: int = 30) -> dict[str, Any]:
    model = model.eval()
    frame = torch.zeros(1, 3, image_size, image_size)
    emb = torch.zeros(1, window, model.embed_dim)
    return {
        "backbone": model.config.backbone,
        "variant": model.config.variant,
        "embed_dim": model.embed_dim,
        "params_total": count_params(model),
        "params_encoder": count_params(model.encoder),
        "params_head": count_params(model.clip_head),
        "image_size": image_size,
        "window": window,
        "macs_per_frame": count_macs(model.embed, frame),
        "macs_head": count_macs(model.head, emb),
    }
