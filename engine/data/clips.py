"""Clips of preprocessed frames for training and evaluation (spec §3 of
``../shared/docs/luvnet-spec.md``).

* :func:`clip_spans`: L = 30 consecutive frames every 24 (``ModelConfig.clip_length`` and
  ``clip_step``); the last short clip is padded by repeating its final frame and masked.
* :class:`FrameCache`: each video decoded, sector-cropped and letterboxed once, kept as
  ``uint8`` [T, S, S] on disk so epochs never decode video again.
* :class:`ClipDataset`: a torch ``Dataset`` of clips with labels from frame-range overlap.
* :class:`ClipAugment`: flip and rotation drawn once per clip, applied to all its frames.

Cache layout, one pair per (video path, geometric parameters)::

    <root>/<video stem>-<path hash 10>-<params hash 10>.npy   uint8 [T, S, S]
    <root>/<video stem>-<path hash 10>-<params hash 10>.json  sidecar, written last

The sidecar holds ``key`` (format version, OpenCV version, image_size, crop_box, sector
parameters, and the video's size, mtime_ns and SHA-256 of its first and last MiB) plus
``n_frames``, ``fps``, ``source_size`` [W, H], ``box`` [x, y, w, h], ``detected`` and
``reason``. A key mismatch (the video or a parameter changed) rebuilds the pair in place;
both files are written to temporaries and renamed, so concurrent builders cannot tear them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as tvf

from luvnet.engine.data.manifest import LabelSpec, ManifestRow
from luvnet.engine.data.preprocess import SectorParams, preprocess_frames
from luvnet.engine.data.video import read_video
from luvnet.engine.errors import LuvnetError
from luvnet.engine.model.config import PATTERNS, ModelConfig, PreprocessConfig

log = logging.getLogger(__name__)

CACHE_VERSION = 2  # bump when decoding or preprocessing changes what a cache file holds
_EDGE_BYTES = 1 << 20

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


# --------------------------------------------------------------------------- frame cache


@dataclass(frozen=True)
class CachedVideo:
    video: Path
    frames_path: Path  # the .npy file: open with np.load(path, mmap_mode="r")
    n_frames: int
    fps: float
    source_size: tuple[int, int]  # (W, H) of the decoded video
    box: tuple[int, int, int, int]  # sector crop (x, y, w, h) in source pixels
    detected: bool  # box found from the pixels (False: fixed or full-frame fallback)
    reason: str
    built: bool  # decoded on this call (False: served from the cache)

    def frames(self) -> np.ndarray:
        """uint8 [T, S, S], memory-mapped: cheap to open, shared through the page cache."""
        return np.load(self.frames_path, mmap_mode="r")


def default_cache_dir() -> Path:
    """``$LUVNET_CACHE`` or ``~/.cache/luvnet/frames``."""
    env = os.environ.get("LUVNET_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "luvnet" / "frames"


def video_fingerprint(path: Path) -> dict[str, Any]:
    """Size, mtime_ns and a SHA-256 of the first and last MiB: changes when the file does."""
    stat = path.stat()
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        digest.update(handle.read(_EDGE_BYTES))
        if stat.st_size > _EDGE_BYTES:
            handle.seek(max(_EDGE_BYTES, stat.st_size - _EDGE_BYTES))
            digest.update(handle.read(_EDGE_BYTES))
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "edges_sha256": digest.hexdigest()}


class FrameCache:
    """Decoded, cropped, letterboxed uint8 frames per video, on disk, keyed by content and
    parameters. Only the geometric part of preprocessing is cached; mean/std are applied
    later by :func:`engine.preprocess.normalize`, so they are not part of the key."""

    def __init__(
        self,
        root: str | Path,
        cfg: PreprocessConfig,
        sector: SectorParams | None = None,
    ) -> None:
        self.root = Path(root)
        self.cfg = cfg
        self.sector = sector or SectorParams()
        self.params = _json_clean(
            {
                "version": CACHE_VERSION,
                "opencv": cv2.__version__,
                "image_size": cfg.image_size,
                "crop_box": cfg.crop_box,
                "sector": self.sector.to_dict(),
            }
        )
        self._params_hash = _short_hash(self.params)

    def paths(self, video: Path) -> tuple[Path, Path]:
        """(.npy, .json) cache files of a video."""
        video = Path(video).resolve()
        stem = f"{video.stem[:60]}-{_short_hash(str(video))}-{self._params_hash}"
        return self.root / f"{stem}.npy", self.root / f"{stem}.json"

    def load(self, video: str | Path) -> CachedVideo:
        """The cached frames of ``video``, decoded and stored first when missing or stale."""
        video = Path(video).resolve()
        npy, sidecar = self.paths(video)
        if not video.is_file():
            raise LuvnetError(f"{video}: no such video file")
        key = {**self.params, "video": video_fingerprint(video)}
        meta = _read_sidecar(sidecar)
        if meta is not None and meta.get("key") == key and npy.is_file():
            return _cached(video, npy, meta, built=False)
        return self._build(video, npy, sidecar, key)

    def _build(self, video: Path, npy: Path, sidecar: Path, key: dict[str, Any]) -> CachedVideo:
        decoded = read_video(video)
        frames, found = preprocess_frames(decoded.frames, self.cfg, self.sector)
        height, width = decoded.frames.shape[1:]
        meta = _json_clean(
            {
                "key": key,
                "n_frames": len(frames),
                "fps": decoded.fps,
                "source_size": [width, height],
                "box": found.box,
                "detected": found.detected,
                "reason": found.reason,
            }
        )
        self.root.mkdir(parents=True, exist_ok=True)
        _atomic_write(npy, lambda handle: np.save(handle, frames))
        _atomic_write(sidecar, lambda handle: handle.write(json.dumps(meta, indent=1).encode()))
        log.info(
            "cached %s: %d frames, box %s (%s)", video.name, len(frames), found.box, found.reason
        )
        return _cached(video, npy, meta, built=True)


def _cached(video: Path, npy: Path, meta: dict[str, Any], *, built: bool) -> CachedVideo:
    return CachedVideo(
        video=video,
        frames_path=npy,
        n_frames=int(meta["n_frames"]),
        fps=float(meta["fps"]),
        source_size=(int(meta["source_size"][0]), int(meta["source_size"][1])),
        box=(int(meta["box"][0]), int(meta["box"][1]), int(meta["box"][2]), int(meta["box"][3])),
        detected=bool(meta["detected"]),
        reason=str(meta["reason"]),
        built=built,
    )


def _read_sidecar(path: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # absent or unreadable: rebuild
    return meta if isinstance(meta, dict) else None


def _json_clean(value: Any) -> Any:
    # Tuples become lists, as they will after a JSON round trip, so keys compare equal.
    return json.loads(json.dumps(value))


def _short_hash(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def _atomic_write(path: Path, write: Callable[[Any], Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- dataset


@dataclass(frozen=True)
class ClipRef:
    """One clip: which video (index into the dataset's rows) and which real frames."""

    row: int
    start: int
    end: int  # inclusive


class ClipDataset(Dataset):
    """Clips of the given manifest rows. Item: ``frames`` uint8 [L, S, S], ``mask`` bool [L],
    ``labels`` float32 [P] (NaN = unknown), ``label_mask`` bool [P], ``video`` (str),
    ``patient_id``, ``start``, ``end`` (inclusive real frames), ``clip`` (index).

    Construction fills the cache for every video (decoding the ones not cached yet).
    ``transform`` (e.g. :class:`ClipAugment`) gets the uint8 [L, S, S] frames tensor.
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
            _check_ranges(row, cached.n_frames)
            for start, end in clip_spans(cached.n_frames, clip_length, clip_step):
                self.clips.append(ClipRef(i, start, end))
        self._open: dict[int, np.ndarray] = {}

    @classmethod
    def from_config(
        cls,
        rows: Sequence[ManifestRow],
        cfg: ModelConfig,
        cache_dir: str | Path | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> ClipDataset:
        cache = FrameCache(cache_dir or default_cache_dir(), cfg.preprocess)
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

    def __getitem__(self, index: int) -> dict[str, Any]:
        ref = self.clips[index]
        row = self.rows[ref.row]
        clip, mask = take_clip(self._frames(ref.row), ref.start, ref.end, self.clip_length)
        frames = torch.from_numpy(clip)
        if self.transform is not None:
            frames = self.transform(frames)
        labels, known = clip_labels(row.labels, ref.start, ref.end, self.patterns)
        return {
            "frames": frames,
            "mask": torch.from_numpy(mask),
            "labels": torch.from_numpy(labels),
            "label_mask": torch.from_numpy(known),
            "video": str(row.video),
            "patient_id": row.patient_id,
            "start": ref.start,
            "end": ref.end,
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
    (p = ``p_rotate``), drawn once per clip and applied identically to every frame.

    Accepts [L, H, W] or [L, C, H, W], uint8 or float; dtype and shape are kept, corners
    rotated in are black. Randomness: an explicit ``generator`` argument wins; otherwise a
    generator seeded from ``seed`` in the main process, and from ``seed`` plus the worker's
    seed inside a DataLoader worker (so workers and epochs differ, yet runs repeat when
    the global torch seed is fixed).
    """

    def __init__(
        self,
        p_flip: float = 0.5,
        p_rotate: float = 0.5,
        max_degrees: float = 10.0,
        seed: int = 0,
    ) -> None:
        self.p_flip = p_flip
        self.p_rotate = p_rotate
        self.max_degrees = max_degrees
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
        if draws[0] < self.p_flip:
            clip = torch.flip(clip, dims=(-1,))
        if draws[1] < self.p_rotate:
            angle = (2.0 * draws[2] - 1.0) * self.max_degrees
            clip = tvf.rotate(clip, angle, interpolation=InterpolationMode.BILINEAR, fill=0.0)
        return clip

    def _own_generator(self) -> torch.Generator:
        info = torch.utils.data.get_worker_info()
        worker = None if info is None else int(info.seed)
        if self._generator is None or worker != self._worker:
            seed = self.seed if worker is None else (self.seed * 1_000_003 + worker) % (2**63)
            self._generator = torch.Generator().manual_seed(seed)
            self._worker = worker
        return self._generator
