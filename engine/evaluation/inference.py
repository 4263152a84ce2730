"""Scoring clips: the single path validation, ``luvnet evaluate`` and the attention plot share.

``score_clips`` normalises uint8 frames on the model's device (``engine.preprocess.normalize``)
and runs ``model.embed`` per frame then ``model.head`` over the clip, exactly the two calls the
live streamer makes. ``predict`` runs it over a loader of :class:`engine.clips.ClipDataset`
items and returns per-clip labels, probabilities and the masked BCE loss.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from luvnet.engine.data.preprocess import normalize
from luvnet.engine.evaluation.predictions import ClipRef
from luvnet.engine.model.config import PreprocessConfig
from luvnet.engine.model.loss import masked_bce_sum
from luvnet.engine.model.network import LUVNet


@dataclass
class Scored:
    """Per-clip results of :func:`predict`, rows in loader order."""

    clips: list[ClipRef]
    labels: np.ndarray  # float [N, P], NaN = unknown
    probs: np.ndarray  # float [N, P]
    loss: float | None  # mean BCE over the known labels; None when no label is known
    n_known: int


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager[Any]:
    """Mixed precision: fp16 on CUDA, bfloat16 on CPU (CPUs have no fast fp16 path)."""
    if not enabled:
        return contextlib.nullcontext()
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def score_clips(
    model: LUVNet,
    frames_u8: torch.Tensor,
    mask: torch.Tensor,
    preprocess: PreprocessConfig,
    *,
    amp: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 [B, L, S, S] + mask [B, L] -> (logits [B, P] float32, attention [B, P, L, N_a])."""
    device = next(model.parameters()).device
    clip = model_input(frames_u8, preprocess, device)
    mask = mask.to(device, non_blocking=True)
    with autocast(device, amp):
        logits, attention = model.head(embed_real_frames(model, clip, mask), mask)
    return logits.float(), attention.float()


def embed_real_frames(model: LUVNet, clip: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Embeddings [B, L, D] of a clip [B, L, 3, S, S], running ``model.embed`` on the real
    frames only; padded positions hold zeros.

    Exact: every head ignores padded frames (engine/heads.py), so their embeddings never
    reach the output. It saves the trunk pass over the padding of each video's last clip
    (20% of the frames of a 60-frame video), and in training it keeps the padding copies out
    of the trunk's BatchNorm statistics.
    """
    real = mask.to(torch.bool)
    if bool(real.all()):
        return model.embed(clip.flatten(0, 1)).unflatten(0, clip.shape[:2])
    feats = model.embed(clip[real])
    emb = feats.new_zeros((*clip.shape[:2], feats.shape[-1]))
    emb[real] = feats
    return emb


class RealFrameModel(torch.nn.Module):
    """``forward(clip, mask) = head(embed_real_frames(...))``: what training runs (and what
    DistributedDataParallel wraps, so gradient synchronisation sees one forward call)."""

    def __init__(self, model: LUVNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, clip: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.head(embed_real_frames(self.model, clip, mask), mask)


def model_input(
    frames_u8: torch.Tensor, preprocess: PreprocessConfig, device: torch.device
) -> torch.Tensor:
    """uint8 [B, L, S, S] -> normalised float [B, L, 3, S, S] on ``device``: only the uint8
    frames cross to the device, the 12x larger float frames are made there.

    The frames are laid out channels-last (NHWC strides once ``flatten(0, 1)`` folds the clip
    into the batch): with a channels-last model that made convolutions ~1.7x faster on the
    2-core CPU (mobilenet_v3_small, 112 px, training); the values are the same either way.
    """
    b, length = frames_u8.shape[:2]
    flat = normalize(frames_u8.to(device, non_blocking=True).flatten(0, 1), preprocess)
    return flat.contiguous(memory_format=torch.channels_last).unflatten(0, (b, length))


_M = TypeVar("_M", bound=torch.nn.Module)


def channels_last(model: _M) -> _M:
    """The model with 4-D weights in channels-last layout (see :func:`model_input`)."""
    return model.to(memory_format=torch.channels_last)


def clip_refs(batch: dict[str, Any], root: Path | None) -> list[ClipRef]:
    """Predictions-CSV identities of a batch; video paths relative to ``root`` when given."""
    refs = []
    for video, patient, start, end in zip(
        batch["video"], batch["patient_id"], batch["start"], batch["end"], strict=True
    ):
        name = Path(video)
        shown = Path(os.path.relpath(name, root)).as_posix() if root is not None else str(name)
        refs.append(
            ClipRef(
                clip_id=f"{shown}@{int(start)}",
                video=shown,
                patient_id=str(patient),
                start=int(start),
                end=int(end) + 1,  # the dataset's end is inclusive, the CSV's exclusive
            )
        )
    return refs


@torch.inference_mode()
def predict(
    model: LUVNet,
    batches: Iterable[dict[str, Any]],
    preprocess: PreprocessConfig,
    *,
    root: Path | None = None,
    pos_weight: torch.Tensor | None = None,
    amp: bool = False,
    on_batch: Callable[[], None] | None = None,
) -> Scored:
    """Score every clip (model in eval mode); ``on_batch`` is called after each batch.

    A batch holds uint8 ``frames`` (embedded here) or, from a frozen trunk's cache
    (:class:`~luvnet.engine.evaluation.embeddings.EmbeddedClips`), float ``emb`` [B, L, D]
    that go straight to ``model.head``."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    weight = None if pos_weight is None else pos_weight.to(device)
    clips: list[ClipRef] = []
    labels: list[np.ndarray] = []
    probs: list[np.ndarray] = []
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    known = 0
    try:
        for batch in batches:
            if "emb" in batch:  # cached embeddings of a frozen trunk (evaluation/embeddings.py)
                mask = batch["mask"].to(device)
                with autocast(device, amp):
                    logits = model.head(batch["emb"].to(device), mask)[0].float()
            else:
                logits, _ = score_clips(model, batch["frames"], batch["mask"], preprocess, amp=amp)
            target = batch["labels"].to(device)
            total, count = masked_bce_sum(logits, target, weight)
            loss_sum += total.double()
            known += int(count)
            clips += clip_refs(batch, root)
            labels.append(batch["labels"].numpy().astype(float))
            probs.append(torch.sigmoid(logits).cpu().numpy().astype(float))
            if on_batch is not None:
                on_batch()
    finally:
        model.train(was_training)
    n_patterns = model.num_patterns
    return Scored(
        clips=clips,
        labels=np.concatenate(labels) if labels else np.zeros((0, n_patterns)),
        probs=np.concatenate(probs) if probs else np.zeros((0, n_patterns)),
        loss=float(loss_sum.item()) / known if known else None,
        n_known=known,
    )
