"""Clips of preprocessed frames for training and evaluation (docs/model.md, "Clips").

* :func:`clip_spans`: L = 30 consecutive frames every 24 (``ModelConfig.clip_length`` and
  ``clip_step``); the last short clip is padded by repeating its final frame and masked.
* :class:`ClipDataset`: a torch ``Dataset`` of clips with labels from frame-range overlap, read
  from the :class:`~luvnet.engine.data.frame_cache.FrameCache` (decoded frames on disk).
* :class:`ClipAugment`: flip and rotation (and optionally zoom and intensity jitter) drawn once
  per clip, applied to all its frames.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as tvf

from luvnet.engine.data.frame_cache import FrameCache, default_cache_dir
from luvnet.engine.data.manifest import LabelSpec, ManifestRow
from luvnet.engine.data.timing import DEFAULT_DECIMATE_ABOVE, Timing
from luvnet.engine.data.views import ViewParams, apply_views, check_view_range
from luvnet.engine.errors import LuvnetError
from luvnet.engine.model.config import PATTERNS, ModelConfig

# --------------------------------------------------------------------------- clip geometry


def clip_spans(n_frames: int, length: int, step: int) -> list[tuple[int, int]]:
    """(start, end) of each clip's real frames, end inclusive. Clips start every ``step``
    frames until one reaches the last frame; only that last one can be short."""
    if n_frames < 1 or length < 1:
        raise LuvnetError(f"clips: expected n_frames and length >= 1, got {n_frames}, {length}")
    if not 1 <= step <= length:
        # A step beyond the length would skip frames that no clip ever shows.
        raise LuvnetError(f"clip_step: expected 1..{length} (the clip length), got {step}")
    spans, start = [], 0
    while True:
        end = min(start + length, n_frames) - 1
        spans.append((start, end))
        if end == n_frames - 1:
            return spans
        start += step


def take_clip(
    frames: np.ndarray, start: int, end: int, length: int
) -> tuple[np.ndarray, np.ndarray]:
    """Frames start..end (inclusive) padded to ``length`` by repeating the last one, and the
    mask (True = real frame)."""
    real = np.asarray(frames[start : end + 1])
    count = len(real)
    if count < 1 or count > length:
        raise LuvnetError(f"clip {start}-{end}: expected 1..{length} frames, got {count}")
    clip = np.empty((length, *real.shape[1:]), dtype=real.dtype)
    clip[:count] = real
    clip[count:] = real[-1]
    mask = np.zeros(length, dtype=bool)
    mask[:count] = True
    return clip, mask


def clip_labels(
    labels: dict[str, LabelSpec], start: int, end: int, patterns: Sequence[str] = PATTERNS
) -> tuple[np.ndarray, np.ndarray]:
    """float32 [P] (1 = a marked range overlaps start..end, 0 = none, NaN = unknown) and the
    bool [P] ``label_mask`` (True = known)."""
    values = np.array([labels[p].clip_label(start, end) for p in patterns], dtype=np.float32)
    return values, ~np.isnan(values)


# --------------------------------------------------------------------------- dataset


@dataclass(frozen=True)
class ClipRef:
    """One clip: which video (index into the dataset's rows) and which real frames of its
    cached (decimated) sequence; ``source`` is the same span in source frame numbers, which
    label ranges and predictions count (equal unless the video was decimated)."""

    row: int
    start: int
    end: int  # inclusive
    source: tuple[int, int] = (-1, -1)  # (first, last) source frames, inclusive


class ClipDataset(Dataset):
    """Clips of the given manifest rows. Item: ``frames`` uint8 [L, S, S], ``mask`` bool [L],
    ``labels`` float32 [P] (NaN = unknown), ``label_mask`` bool [P], ``video`` (str),
    ``patient_id``, ``start``, ``end`` (inclusive real frames), ``clip`` (index).

    Construction fills the cache for every video (decoding the ones not cached yet).
    ``transform`` (e.g. :class:`ClipAugment`) gets the uint8 [L, S, S] frames tensor.
    Clips are cut from each video's cached sequence, so a decimated video's clips are cut by
    time (engine/data/timing.py); ``start``/``end`` of an item are source frame numbers.
    """

    def __init__(
        self,
        rows: Sequence[ManifestRow],
        cache: FrameCache,
        *,
        clip_length: int = 30,
        clip_step: int = 24,
        patterns: Sequence[str] = PATTERNS,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.rows = list(rows)
        self.clip_length = clip_length
        self.clip_step = clip_step
        self.patterns = tuple(patterns)
        self.transform = transform
        self.videos = [cache.load(row.video) for row in self.rows]
        self.clips: list[ClipRef] = []
        for i, (row, cached) in enumerate(zip(self.rows, self.videos, strict=True)):
            _check_ranges(row, cached.source_frames or cached.n_frames)
            for start, end in clip_spans(cached.n_frames, clip_length, clip_step):
                span = (cached.source_index(start), cached.source_index(end))
                self.clips.append(ClipRef(i, start, end, span))
        self._open: dict[int, np.ndarray] = {}

    @classmethod
    def from_config(
        cls,
        rows: Sequence[ManifestRow],
        cfg: ModelConfig,
        cache_dir: str | Path | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        decimate_above: float = DEFAULT_DECIMATE_ABOVE,
    ) -> ClipDataset:
        """Clips of ``rows`` for a model of config ``cfg`` (its size, clips and frame rate)."""
        timing = Timing(cfg.frame_rate, decimate_above)
        cache = FrameCache(cache_dir or default_cache_dir(), cfg.preprocess, timing=timing)
        return cls(
            rows,
            cache,
            clip_length=cfg.clip_length,
            clip_step=cfg.clip_step,
            patterns=cfg.pattern_names,
            transform=transform,
        )

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def decimated_videos(self) -> int:
        """How many of its videos were decimated to the model's frame rate."""
        return sum(video.decimated for video in self.videos)

    def __getitem__(self, index: int) -> dict[str, Any]:
        ref = self.clips[index]
        clip, mask = take_clip(self._frames(ref.row), ref.start, ref.end, self.clip_length)
        frames = torch.from_numpy(clip)
        if self.transform is not None:
            frames = self.transform(frames)
        return {"frames": frames, **self.clip_fields(index, mask)}

    def clip_fields(self, index: int, mask: np.ndarray) -> dict[str, Any]:
        """Every item key but the clip's content (``frames`` here, ``emb`` for cached
        embeddings): ``mask`` bool [L], the labels of the clip's source frames, where from."""
        ref = self.clips[index]
        row = self.rows[ref.row]
        first, last = ref.source  # source frame numbers (label ranges count these)
        labels, known = clip_labels(row.labels, first, last, self.patterns)
        return {
            "mask": torch.from_numpy(mask),
            "labels": torch.from_numpy(labels),
            "label_mask": torch.from_numpy(known),
            "video": str(row.video),
            "patient_id": row.patient_id,
            "start": first,
            "end": last,
            "clip": index,
        }

    def _frames(self, row: int) -> np.ndarray:
        # Opened lazily in whichever process reads, never pickled into DataLoader workers.
        if row not in self._open:
            self._open[row] = self.videos[row].frames()
        return self._open[row]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_open"] = {}
        return state


def _check_ranges(row: ManifestRow, n_frames: int) -> None:
    for name, spec in row.labels.items():
        if spec.ranges and spec.ranges[-1][0] >= n_frames:
            a, b = spec.ranges[-1]
            raise LuvnetError(
                f"manifest line {row.line}: {name} range {a}-{b} starts after the last frame "
                f"of {row.video.name} ({n_frames - 1}); expected frames 0..{n_frames - 1}"
            )


# --------------------------------------------------------------------------- augmentation


class ClipAugment:
    """Horizontal flip (p = ``p_flip``) and rotation by U(-``max_degrees``, +``max_degrees``)
    (p = ``p_rotate``), the paper's, then, when ``max_zoom`` > 1 or ``jitter`` > 0, a zoom by
    U(1, ``max_zoom``) with a random shift and gain, gamma and noise for ``jitter``
    (:class:`~luvnet.engine.data.views.ViewParams`, the views of ``luvnet pretrain``), all drawn
    once per clip and applied identically to every frame.

    Accepts [L, H, W] or [L, C, H, W], uint8 or float, for flip and rotation, and uint8
    [L, S, S] (the frame cache's) with zoom or jitter, which warp flip, rotation and zoom in one
    resampling; dtype and shape are kept, corners rotated in are black. Gain, gamma and the
    noise's sd are the clip's; the noise itself is fresh in every frame. The defaults draw
    exactly what they drew before zoom and jitter existed. Raises LuvnetError for a clip of
    another shape, zoom or jitter on frames that are not uint8 [L, S, S], or ``max_zoom`` /
    ``jitter`` outside [1, inf) / [0, 1) (at construction). Randomness: an explicit
    ``generator`` argument wins; otherwise a generator seeded from ``seed`` in the main
    process, and from ``seed`` plus the worker's seed inside a DataLoader worker (so workers
    and epochs differ, yet runs repeat when the global torch seed is fixed).
    """

    def __init__(
        self,
        p_flip: float = 0.5,
        p_rotate: float = 0.5,
        max_degrees: float = 10.0,
        seed: int = 0,
        *,
        max_zoom: float = 1.0,
        jitter: float = 0.0,
    ) -> None:
        self.p_flip = p_flip
        self.p_rotate = p_rotate
        self.max_degrees = max_degrees
        check_view_range(max_zoom, jitter, ("max_zoom", "jitter"))
        self.max_zoom = max_zoom
        self.jitter = jitter
        self.seed = seed
        self._generator: torch.Generator | None = None
        self._worker: int | None = None

    def __call__(
        self, clip: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        if clip.ndim not in (3, 4):
            raise LuvnetError(f"clip: expected [L, H, W] or [L, C, H, W], got {tuple(clip.shape)}")
        gen = generator or self._own_generator()
        draws = torch.rand(3, generator=gen).tolist()
        flip, rotate = draws[0] < self.p_flip, draws[1] < self.p_rotate
        angle = (2.0 * draws[2] - 1.0) * self.max_degrees if rotate else 0.0
        if self.max_zoom > 1.0 or self.jitter > 0.0:
            return self._view(clip, flip, angle, gen)
        if flip:
            clip = torch.flip(clip, dims=(-1,))
        if rotate:
            clip = tvf.rotate(clip, angle, interpolation=InterpolationMode.BILINEAR, fill=0.0)
        return clip

    def _view(
        self, clip: torch.Tensor, flip: bool, degrees: float, gen: torch.Generator
    ) -> torch.Tensor:
        """Flip, rotation, zoom, shift and jitter as one warp (one resampling), the same for
        every frame."""
        if clip.dtype != torch.uint8 or clip.ndim != 3:
            raise LuvnetError(
                f"clip: zoom and jitter expect uint8 [L, S, S] frames, got {clip.dtype} "
                f"{tuple(clip.shape)}"
            )
        view = ViewParams.draw(1, gen, max_zoom=self.max_zoom, jitter=self.jitter)
        # the flip and angle drawn in __call__ replace the view's own draws of them
        mirror, radians = torch.tensor([-1.0 if flip else 1.0]), torch.tensor([degrees])
        view = replace(view, flip=mirror, angle=torch.deg2rad(radians))
        return apply_views(clip, view.repeat(clip.shape[0]), gen)

    def _own_generator(self) -> torch.Generator:
        info = torch.utils.data.get_worker_info()
        worker = None if info is None else int(info.seed)
        if self._generator is None or worker != self._worker:
            seed = self.seed if worker is None else (self.seed * 1_000_003 + worker) % (2**63)
            self._generator = torch.Generator().manual_seed(seed)
            self._worker = worker
        return self._generator
