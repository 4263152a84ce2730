"""Per-frame embeddings of a frozen trunk, computed once per video and cached on disk.

``luvnet train --freeze-encoder`` trains only the clip head; the trunk's embedding of a frame
then never changes, so each video's frames go through ``model.embed`` once (eval mode, no
gradient, BatchNorm running statistics as initialised) and every epoch, fold and variant
reads the cached ``float32 [T, D]`` array instead. The frames are the frame cache's
(:mod:`luvnet.engine.data.frame_cache`: the same decode, sector crop and letterbox as
training, evaluation and the stream), normalised by
:func:`~luvnet.engine.data.preprocess.normalize`.

Cache layout, beside the frame cache::

    <frame cache>/embeddings/<trunk 16>-<preprocess 10>-<frames 16>.npy   float32 [T, D]

keyed by a SHA-256 of the trunk's weights (names, shapes, dtypes, values), of the
preprocessing settings (image size, crop box, mean/std, the intensity mode when not "none")
and of the video's preprocessed uint8 frames (its content after decoding, cropping and
letterboxing). A different trunk, other
settings or a changed video therefore never reuse a stale file; the file is written
atomically, so concurrent runs cannot tear it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from luvnet.engine.data.clips import ClipDataset
from luvnet.engine.data.frame_cache import CachedVideo
from luvnet.engine.data.preprocess import normalize
from luvnet.engine.files import atomic_open
from luvnet.engine.model.config import PreprocessConfig
from luvnet.engine.model.network import LUVNet

_CHUNK = 256  # frames per trunk pass while embedding a video


def trunk_digest(model: LUVNet) -> str:
    """SHA-256 (hex) of the trunk's state: parameter and buffer names, shapes, dtypes, values."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.encoder.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)};".encode())
        digest.update(value.numpy().tobytes() if value.dtype != torch.bfloat16 else b"bf16")
    return digest.hexdigest()


class EmbeddingCache:
    """Embeddings of ``model``'s trunk per cached video, under ``frame_cache_root/embeddings``.

    The trunk is put in eval mode with gradients off for good: this is for a frozen encoder.
    """

    def __init__(
        self,
        frame_cache_root: str | Path,
        model: LUVNet,
        preprocess: PreprocessConfig,
        device: torch.device,
    ) -> None:
        self.root = Path(frame_cache_root) / "embeddings"
        self.model = model
        self.preprocess = preprocess
        self.device = device
        model.encoder.eval().requires_grad_(False)
        self.trunk = trunk_digest(model)
        keyed: dict[str, object] = {
            "image_size": preprocess.image_size,
            "crop_box": preprocess.crop_box,
            "mean": preprocess.mean,
            "std": preprocess.std,
        }
        if preprocess.intensity != "none":  # keyed only when on: older caches keep their key
            keyed["intensity"] = preprocess.intensity
        settings = json.dumps(keyed, sort_keys=True)
        self.settings = hashlib.sha256(settings.encode()).hexdigest()

    def path(self, frames: np.ndarray) -> Path:
        """The cache file of these uint8 [T, S, S] frames under this trunk and settings."""
        content = hashlib.sha256(np.ascontiguousarray(frames).tobytes()).hexdigest()
        return self.root / f"{self.trunk[:16]}-{self.settings[:10]}-{content[:16]}.npy"

    def load(self, video: CachedVideo) -> np.ndarray:
        """float32 [T, D] embeddings of the video's cached frames, computed on first use."""
        frames = np.asarray(video.frames())
        path = self.path(frames)
        if path.is_file():
            try:
                cached = np.load(path)
                if cached.shape == (len(frames), self.model.embed_dim):
                    return cached
            except (OSError, ValueError, EOFError):
                pass  # unreadable: compute again and replace it
        emb = self.compute(frames)
        self.root.mkdir(parents=True, exist_ok=True)
        with atomic_open(path, "wb") as handle:
            np.save(handle, emb)
        return emb

    @torch.inference_mode()
    def compute(self, frames: np.ndarray) -> np.ndarray:
        """float32 [T, D] from uint8 [T, S, S]: normalise, then ``model.embed`` in eval mode."""
        self.model.encoder.eval()
        out = []
        for start in range(0, len(frames), _CHUNK):
            batch = torch.from_numpy(np.array(frames[start : start + _CHUNK]))  # a writable copy
            x = normalize(batch.to(self.device), self.preprocess)
            x = x.contiguous(memory_format=torch.channels_last)
            out.append(self.model.embed(x).float().cpu().numpy())
        return np.concatenate(out).astype(np.float32, copy=False)


class EmbeddedClips(Dataset):
    """The clips of ``base`` as cached embeddings. Item: ``emb`` float32 [L, D] (zeros at
    padded positions, as :func:`~luvnet.engine.evaluation.inference.embed_real_frames`
    leaves them), ``mask``, ``labels``, ``label_mask``, ``video``, ``patient_id``, ``start``,
    ``end``, ``clip``: the keys of :class:`ClipDataset` with ``emb`` in place of ``frames``.
    Every video is embedded (or read from the cache) on construction.
    """

    def __init__(self, base: ClipDataset, cache: EmbeddingCache) -> None:
        self.base = base
        self.embeddings = [cache.load(video) for video in base.videos]

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict[str, Any]:
        base = self.base
        ref = base.clips[index]
        real = self.embeddings[ref.row][ref.start : ref.end + 1]
        emb = np.zeros((base.clip_length, real.shape[1]), dtype=np.float32)
        emb[: len(real)] = real
        mask = np.zeros(base.clip_length, dtype=bool)
        mask[: len(real)] = True
        return {"emb": torch.from_numpy(emb), **base.clip_fields(index, mask)}


class HeadOnEmbeddings(torch.nn.Module):
    """``forward(emb, mask) = model.head(emb, mask)``: what frozen-encoder training runs (and
    DistributedDataParallel wraps), the twin of ``inference.RealFrameModel``."""

    def __init__(self, model: LUVNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, emb: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.head(emb, mask)
