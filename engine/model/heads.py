"""Everything after the frame encoder: the clip heads of LUV-Net and its baselines.

Every head maps frame embeddings ``emb`` [B, L, D] and ``mask`` [B, L] (True = real frame)
to ``(logits [B, P], attention [B, P, L, N_a])``. Padded frames are excluded exactly: they
are zeroed before the temporal convolution (identical to the conv's own zero padding of a
shorter clip), get no attention weight, and are left out of every mean and max.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def valid_mask(emb: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The mask as bool [B, L], all True when None."""
    if mask is None:
        return torch.ones(emb.shape[:2], dtype=torch.bool, device=emb.device)
    return mask.to(device=emb.device, dtype=torch.bool)


class TemporalBranch(nn.Module):
    """Conv1d over time (D -> D, kernel k, 'same' zero padding, no bias), BN, ReLU, mean."""

    def __init__(self, embed_dim: int, kernel_size: int = 13) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size: expected an odd number, got {kernel_size}")
        self.kernel_size = kernel_size
        self.conv = nn.Conv1d(
            embed_dim, embed_dim, kernel_size, padding=kernel_size // 2, bias=False
        )
        self.norm = nn.BatchNorm1d(embed_dim)

    def positionwise(self, conv_out: torch.Tensor) -> torch.Tensor:
        """BN + ReLU on conv outputs [..., D]; per time step, so reusable incrementally."""
        if self.training:
            raise RuntimeError("positionwise() is for inference (BatchNorm in eval mode)")
        mean, var = self.norm.running_mean, self.norm.running_var
        assert mean is not None and var is not None  # built with track_running_stats
        scale = self.norm.weight * torch.rsqrt(var + self.norm.eps)
        shift = self.norm.bias - mean * scale
        return torch.relu(conv_out * scale + shift)

    def forward(self, emb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = (emb * mask.unsqueeze(-1)).transpose(1, 2)  # [B, D, L]
        y = self.conv(x)
        # In training, batch statistics over real frames only, as on unpadded clips.
        y = torch.relu(self._masked_batch_norm(y, mask) if self.training else self.norm(y))
        weights = mask.unsqueeze(1).to(y.dtype)
        return (y * weights).sum(-1) / weights.sum(-1).clamp_min(1.0)

    def _masked_batch_norm(self, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if bool(mask.all()):
            return self.norm(y)
        real = y.transpose(1, 2)[mask]  # [n_real, D]
        normed = self.norm(real.unsqueeze(-1)).squeeze(-1)
        out = torch.zeros_like(y.transpose(1, 2))
        out[mask] = normed
        return out.transpose(1, 2)


class PatternAttention(nn.Module):
    """One learned query per (pattern, head) attending over frames (docs/model.md, "Architecture").

    No key/value projections: frame features are cut into ``num_heads`` chunks of size
    D / num_heads, scored against the queries, softmaxed over time and pooled.
    """

    def __init__(self, embed_dim: int, num_patterns: int, num_heads: int = 8) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"num_heads: {num_heads} does not divide embed_dim {embed_dim}")
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.queries = nn.Parameter(torch.randn(num_patterns, num_heads, self.head_dim))

    def forward(self, emb: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns pooled [B, P, D] and attention [B, P, L, N_a]."""
        b, length, _ = emb.shape
        chunks = emb.reshape(b, length, self.num_heads, self.head_dim)
        scores = torch.einsum("blkd,pkd->bplk", chunks, self.queries) / math.sqrt(self.head_dim)
        scores = scores.masked_fill(~mask[:, None, :, None], float("-inf"))
        attention = torch.softmax(scores, dim=2)
        pooled = torch.einsum("bplk,blkd->bpkd", attention, chunks)
        return pooled.reshape(b, self.queries.shape[0], -1), attention


class LUVNetHead(nn.Module):
    """Temporal branch + pattern attention, summed, then the classifier (docs/model.md)."""

    def __init__(
        self,
        embed_dim: int,
        *,
        num_patterns: int = 4,
        num_heads: int = 8,
        kernel_size: int = 13,
        fusion_hidden: int = 4096,
        classifier_hidden: int = 512,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.temporal = TemporalBranch(embed_dim, kernel_size)
        self.attention = PatternAttention(embed_dim, num_patterns, num_heads)
        self.fusion = nn.Sequential(
            nn.Linear(num_patterns * embed_dim, fusion_hidden),
            nn.ReLU(inplace=True),
            nn.Linear(fusion_hidden, embed_dim),
        )
        self.classifier = nn.Sequential(
            nn.Linear(embed_dim, classifier_hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(classifier_hidden, num_patterns),
        )

    def classify(self, temporal: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        """Fusion and classifier, shared with the incremental streaming state."""
        spatial = self.fusion(pooled.flatten(1))
        return self.classifier(temporal + spatial)

    def forward(
        self, emb: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        mask = valid_mask(emb, mask)
        pooled, attention = self.attention(emb, mask)
        return self.classify(self.temporal(emb, mask), pooled), attention


class NoTemporalHead(nn.Module):
    """LUV-Net without the temporal branch: attention -> Linear -> ReLU -> Linear."""

    def __init__(
        self,
        embed_dim: int,
        *,
        num_patterns: int = 4,
        num_heads: int = 8,
        fusion_hidden: int = 4096,
    ) -> None:
        super().__init__()
        self.attention = PatternAttention(embed_dim, num_patterns, num_heads)
        self.classifier = nn.Sequential(
            nn.Linear(num_patterns * embed_dim, fusion_hidden),
            nn.ReLU(inplace=True),
            nn.Linear(fusion_hidden, num_patterns),
        )

    def forward(
        self, emb: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        mask = valid_mask(emb, mask)
        pooled, attention = self.attention(emb, mask)
        return self.classifier(pooled.flatten(1)), attention


class USVNHead(nn.Module):
    """USVN baseline (Smith et al. 2023): one query set shared by all patterns, Linear(D->P)."""

    def __init__(self, embed_dim: int, *, num_patterns: int = 4, num_heads: int = 8) -> None:
        super().__init__()
        self.num_patterns = num_patterns
        self.attention = PatternAttention(embed_dim, 1, num_heads)
        self.classifier = nn.Linear(embed_dim, num_patterns)

    def forward(
        self, emb: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        mask = valid_mask(emb, mask)
        pooled, attention = self.attention(emb, mask)
        logits = self.classifier(pooled[:, 0])
        return logits, attention.expand(-1, self.num_patterns, -1, -1)


class FrameHead(nn.Module):
    """Frame-based baseline: per-frame logits, clip logit = max over real frames.

    The 'attention' is the one-hot argmax frame per pattern (the frame that decided).
    """

    def __init__(self, embed_dim: int, *, num_patterns: int = 4) -> None:
        super().__init__()
        self.classifier = nn.Linear(embed_dim, num_patterns)

    def forward(
        self, emb: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        mask = valid_mask(emb, mask)
        frame_logits = self.classifier(emb).masked_fill(~mask.unsqueeze(-1), float("-inf"))
        logits, best = frame_logits.max(dim=1)
        one_hot = nn.functional.one_hot(best, emb.shape[1]).to(emb.dtype)  # [B, P, L]
        return logits, one_hot.unsqueeze(-1)
