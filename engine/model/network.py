"""LUV-Net and its baselines: a frame encoder (``embed``) and a clip head (``head``).

``forward(clip)`` is exactly ``head(embed(frames))``. Training, evaluation and the live
streamer all call the same two methods; the streamer caches ``embed`` per frame and reruns
only ``head`` (or its incremental twin in :mod:`engine.incremental`).

Builders follow torchvision/timm: one small function per variant fills a dict of
architecture arguments that the caller's keyword arguments override; :func:`build_model`
does the shared work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from luvnet.engine.model.backbones import Trunk, create_trunk
from luvnet.engine.model.config import ModelConfig
from luvnet.engine.model.heads import FrameHead, LUVNetHead, NoTemporalHead, USVNHead


class LUVNet(nn.Module):
    """Encoder + clip head. ``config`` holds every fact a consumer needs (ModelConfig)."""

    def __init__(self, config: ModelConfig, trunk: Trunk) -> None:
        super().__init__()
        self.config = config
        self.encoder = trunk
        self.embed_dim = trunk.embed_dim
        self.clip_head = _make_head(config, trunk.embed_dim)

    @property
    def num_patterns(self) -> int:
        return self.config.num_patterns

    def embed(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames [N, 3, H, W] (normalised) -> embeddings [N, D]."""
        return self.encoder(frames)

    def head(
        self, emb: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings [B, L, D], mask [B, L] (True = real) -> logits [B, P], attn [B, P, L, N_a]."""
        return self.clip_head(emb, mask)

    def forward(
        self, clip: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, length = clip.shape[:2]
        emb = self.embed(clip.flatten(0, 1)).reshape(b, length, -1)
        return self.head(emb, mask)


def _make_head(config: ModelConfig, embed_dim: int) -> nn.Module:
    p = config.num_patterns
    if config.variant == "luvnet":
        return LUVNetHead(
            embed_dim,
            num_patterns=p,
            num_heads=config.num_heads,
            kernel_size=config.kernel_size,
            fusion_hidden=config.fusion_hidden,
            classifier_hidden=config.classifier_hidden,
            dropout=config.dropout,
        )
    if config.variant == "no-temporal":
        return NoTemporalHead(
            embed_dim,
            num_patterns=p,
            num_heads=config.num_heads,
            fusion_hidden=config.fusion_hidden,
        )
    if config.variant == "usvn":
        return USVNHead(embed_dim, num_patterns=p, num_heads=config.num_heads)
    if config.variant == "frame":
        return FrameHead(embed_dim, num_patterns=p)
    raise ValueError(f"variant: unknown {config.variant!r}")


def build_model(config: ModelConfig, weights: str | Path | None = None) -> LUVNet:
    """The shared builder: trunk (random, or local ImageNet weights) + the config's head."""
    return LUVNet(config, create_trunk(config.backbone, weights))


def _build(variant: str, backbone: str, weights: str | Path | None, **kwargs: Any) -> LUVNet:
    return build_model(ModelConfig(backbone=backbone, variant=variant, **kwargs), weights)


def build_luvnet(
    backbone: str = "densenet161",
    *,
    num_patterns: int = 4,
    num_heads: int = 8,
    kernel_size: int = 13,
    temporal: bool = True,
    fusion_hidden: int = 4096,
    weights: str | Path | None = None,
    **config: Any,
) -> LUVNet:
    """LUV-Net (docs/model.md, "Architecture"); ``temporal=False``: the 'w/o temporal' one."""
    if not temporal:
        return build_luvnet_no_temporal(
            backbone,
            num_patterns=num_patterns,
            num_heads=num_heads,
            fusion_hidden=fusion_hidden,
            weights=weights,
            **config,
        )
    args = dict(num_patterns=num_patterns, num_heads=num_heads, kernel_size=kernel_size)
    return _build("luvnet", backbone, weights, fusion_hidden=fusion_hidden, **args, **config)


def build_luvnet_no_temporal(
    backbone: str = "densenet161", *, weights: str | Path | None = None, **config: Any
) -> LUVNet:
    """Attention branch only: Linear(P*D -> 4096), ReLU, Linear(4096 -> P)."""
    return _build("no-temporal", backbone, weights, **config)


def build_frame_baseline(
    backbone: str = "densenet161", *, weights: str | Path | None = None, **config: Any
) -> LUVNet:
    """Frame-based baseline: per-frame logits, clip score = max over frames."""
    return _build("frame", backbone, weights, **config)


USVN_HEADS = 32  # attention heads of the USVN authors' runs (training script and notebook)


def build_usvn(
    backbone: str = "densenet161",
    *,
    num_heads: int = USVN_HEADS,
    weights: str | Path | None = None,
    **config: Any,
) -> LUVNet:
    """USVN baseline: one query set shared by all patterns, Linear(D -> P); ``num_heads``
    defaults to its authors' 32 (``ModelConfig``'s 8 is LUV-Net's)."""
    return _build("usvn", backbone, weights, num_heads=num_heads, **config)


VARIANT_BUILDERS = {
    "luvnet": build_luvnet,
    "no-temporal": build_luvnet_no_temporal,
    "frame": build_frame_baseline,
    "usvn": build_usvn,
}
