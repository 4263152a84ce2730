"""The frame cache: each video decoded, sector-cropped and letterboxed once, kept on disk.

Frames are stored as ``uint8`` [T, S, S] so training epochs and evaluation never decode video
again; :class:`~luvnet.engine.data.clips.ClipDataset` reads its clips from here.

Cache layout, one pair per (video path, geometric parameters)::

    <root>/<video stem>-<path hash 10>-<params hash 10>.npy   uint8 [T, S, S]
    <root>/<video stem>-<path hash 10>-<params hash 10>.json  sidecar, written last

The sidecar holds ``key`` (format version, OpenCV version, image_size, crop_box, sector
parameters, the decimation :class:`~luvnet.engine.data.timing.Timing`, and the video's size,
mtime_ns and SHA-256 of its first and last MiB) plus ``n_frames``, ``fps``, ``source_size``
[W, H], ``box`` [x, y, w, h], ``detected``, ``reason``, ``source_frames`` (frames decoded),
``kept`` (the source index of each cached frame when decimated, else null) and ``timestamps``
(seconds, each cached frame's presentation time).

Decimation comes first (:func:`~luvnet.engine.data.timing.kept_indices`), then the sector is
found from the first frames that remain (:func:`~luvnet.engine.data.preprocess.detect_sector`):
the frames a live stream of the same file keeps and locks its crop on. A fixed ``crop_box``, or
else a DICOM file's declared imaging region, is used instead.

A key mismatch (the video or a parameter changed) rebuilds the pair in place; both files are
written to temporaries and renamed, so concurrent builders cannot tear them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from luvnet.engine.data.preprocess import SectorParams, preprocess_frames
from luvnet.engine.data.timing import Timing, kept_indices
from luvnet.engine.data.video import read_video
from luvnet.engine.errors import LuvnetError
from luvnet.engine.files import atomic_open, read_json_object
from luvnet.engine.model.config import PreprocessConfig

log = logging.getLogger(__name__)

CACHE_VERSION = 5  # bump when decoding or preprocessing changes what a cache file holds
_EDGE_BYTES = 1 << 20


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
    source_frames: int = 0  # frames decoded (n_frames unless decimated)
    kept: tuple[int, ...] | None = None  # source index of each cached frame when decimated
    timestamps: tuple[float, ...] = ()  # seconds, each cached frame's presentation time

    @property
    def decimated(self) -> bool:
        return self.kept is not None

    def source_index(self, index: int) -> int:
        """The source frame number (manifest label ranges count these) of cached frame
        ``index``."""
        return index if self.kept is None else self.kept[index]

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
        timing: Timing | None = None,
    ) -> None:
        self.root = Path(root)
        self.cfg = cfg
        self.sector = sector or SectorParams()
        self.timing = timing or Timing()
        self.params = _json_clean(
            {
                "version": CACHE_VERSION,
                "opencv": cv2.__version__,
                "image_size": cfg.image_size,
                "crop_box": cfg.crop_box,
                "sector": self.sector.to_dict(),
                "timing": self.timing.to_dict() if self.timing.active else None,
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
        kept = kept_indices(decoded.timestamps, self.timing, decoded.fps)
        source = decoded.frames if kept is None else decoded.frames[kept]
        times = decoded.timestamps if kept is None else decoded.timestamps[kept]
        frames, found = preprocess_frames(source, self.cfg, self.sector, decoded.region)
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
                "source_frames": len(decoded.frames),
                "kept": None if kept is None else kept.tolist(),
                "timestamps": times.tolist(),
            }
        )
        self.root.mkdir(parents=True, exist_ok=True)
        # The sidecar goes last: a reader that finds it also finds a complete .npy beside it.
        with atomic_open(npy, "wb") as handle:
            np.save(handle, frames)
        with atomic_open(sidecar) as handle:
            handle.write(json.dumps(meta, indent=1))
        shrunk = "" if kept is None else f" of {len(decoded.frames)}, decimated to the model's rate"
        log.info(
            "cached %s: %d frames%s, box %s (%s)",
            video.name, len(frames), shrunk, found.box, found.reason,
        )  # fmt: skip
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
        source_frames=int(meta["source_frames"]),
        kept=None if meta["kept"] is None else tuple(int(i) for i in meta["kept"]),
        timestamps=tuple(float(t) for t in meta["timestamps"]),
    )


def _read_sidecar(path: Path) -> dict[str, Any] | None:
    try:
        return read_json_object(path)
    except LuvnetError:
        return None  # absent or unreadable: rebuild


def _json_clean(value: Any) -> Any:
    # Tuples become lists, as they will after a JSON round trip, so keys compare equal.
    return json.loads(json.dumps(value))


def _short_hash(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:10]
