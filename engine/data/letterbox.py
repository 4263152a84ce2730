"""Letterbox (crop, resize keeping the aspect ratio, centre on black) as a gather and two
weighted sums, in torch, so that it runs wherever the frame is: on the CPU for the clip cache
and the CPU stream, on the GPU for a stream that uploads the raw grey frame (docs/model.md,
"Videos and preprocessing").

Each axis of the S x S canvas gets *taps*: for output pixel i the K source indices and K
weights it sums (zero weights on the black border). Shrinking uses area weights (the overlap
of source pixel j with output pixel i's footprint, what OpenCV's ``INTER_AREA`` computes);
growing uses bilinear weights with half-pixel centres (``INTER_LINEAR``). The vertical
pass runs first, then the horizontal one, in float32, rounded half to even to uint8 at the end:
OpenCV to within one grey level (its integer fast paths round ties upwards).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from luvnet.engine.errors import LuvnetError

Box = tuple[int, int, int, int]  # (x, y, w, h) in source pixels


def letterbox_geometry(height: int, width: int, size: int) -> tuple[int, int, int, int]:
    """(new_w, new_h, x0, y0): the resized image's size and its offset on the canvas."""
    scale = size / max(height, width)
    new_w = min(size, max(1, round(width * scale)))
    new_h = min(size, max(1, round(height * scale)))
    return new_w, new_h, (size - new_w) // 2, (size - new_h) // 2


def clip_box(box: Box | None, height: int, width: int) -> Box:
    """The box cut to the image; a box that misses the image is an error."""
    if box is None:
        return (0, 0, width, height)
    x, y, w, h = (int(v) for v in box)
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(width, x + w), min(height, y + h)
    if x1 <= x0 or y1 <= y0:
        raise LuvnetError(
            f"crop_box: expected (x, y, w, h) overlapping the {width}x{height} image, got {box}"
        )
    return (x0, y0, x1 - x0, y1 - y0)


def as_tensor(array: np.ndarray) -> torch.Tensor:
    """A numpy frame as a tensor without a copy; read-only arrays (decoders, shared replay
    buffers) are copied first, since torch.from_numpy would share them writable."""
    return torch.from_numpy(array if array.flags.writeable else array.copy())


@dataclass(frozen=True)
class Taps:
    """One axis: ``index`` [S, K] int64 source positions (relative to the crop start) and
    ``weight`` [S, K] float32; rows of the black border have weight 0."""

    index: torch.Tensor
    weight: torch.Tensor

    def to(self, device: torch.device) -> Taps:
        return Taps(self.index.to(device), self.weight.to(device))


def _area_taps(src: int, dst: int) -> list[list[tuple[int, float]]]:
    scale = src / dst
    taps = []
    for i in range(dst):
        lo, hi = i * scale, (i + 1) * scale
        row = []
        for j in range(math.floor(lo), min(src, math.ceil(hi))):
            overlap = min(hi, j + 1) - max(lo, j)
            if overlap > 1e-9:
                row.append((j, overlap / scale))
        taps.append(row)
    return taps


def _linear_taps(src: int, dst: int) -> list[list[tuple[int, float]]]:
    scale = src / dst
    taps = []
    for i in range(dst):
        pos = (i + 0.5) * scale - 0.5
        j = math.floor(pos)
        frac = pos - j
        if j < 0:
            j, frac = 0, 0.0
        if j >= src - 1:
            j, frac = src - 1, 0.0
        taps.append([(j, 1.0 - frac), (min(j + 1, src - 1), frac)])
    return taps


def axis_taps(src: int, dst: int, offset: int, size: int) -> Taps:
    """Taps that map ``src`` pixels onto ``dst`` pixels placed at ``offset`` of a ``size`` axis."""
    if dst < src:
        inner = _area_taps(src, dst)
    elif dst > src:
        inner = _linear_taps(src, dst)
    else:
        inner = [[(j, 1.0)] for j in range(src)]
    width = max(len(row) for row in inner)
    index = torch.zeros(size, width, dtype=torch.int64)
    weight = torch.zeros(size, width, dtype=torch.float32)
    for i, row in enumerate(inner):
        for k, (j, w) in enumerate(row):
            index[offset + i, k] = j
            weight[offset + i, k] = w
    return Taps(index, weight)


@lru_cache(maxsize=64)
def letterbox_taps(height: int, width: int, size: int) -> tuple[Taps, Taps]:
    """(rows, cols) taps of the letterbox of a ``height`` x ``width`` crop onto [size, size]."""
    new_w, new_h, x0, y0 = letterbox_geometry(height, width, size)
    return axis_taps(height, new_h, y0, size), axis_taps(width, new_w, x0, size)


def apply_taps(crop: torch.Tensor, rows: Taps, cols: Taps) -> torch.Tensor:
    """uint8 [..., h, w] crop -> uint8 [..., S, S] through the two passes."""
    # Rows first: gathering whole rows is a contiguous copy, and the second pass then runs on
    # S rows instead of h. One tap at a time keeps the temporaries at [S, w]: a 924x1232
    # frame onto 256 on one core of the 2-core dev CPU, p50 2.4 ms against 5.4 ms for one
    # [S, K, w] gather and weighted sum.
    tall = None
    for k in range(rows.index.shape[1]):
        part = crop.index_select(-2, rows.index[:, k]).to(torch.float32)
        part.mul_(rows.weight[:, k, None])
        tall = part if tall is None else tall.add_(part)
    assert tall is not None
    out = None
    for k in range(cols.index.shape[1]):
        part = tall.index_select(-1, cols.index[:, k]).mul_(cols.weight[:, k])
        out = part if out is None else out.add_(part)
    assert out is not None
    return out.round_().clamp_(0, 255).to(torch.uint8)


class Letterbox:
    """Letterbox of uint8 [..., H, W] tensors on any device; taps are built once per crop
    size and kept on the device of the frames."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise LuvnetError(f"image_size: expected a positive integer, got {size}")
        self.size = size
        self._key: tuple | None = None
        self._taps: tuple[Taps, Taps] | None = None

    def __call__(self, gray: torch.Tensor, box: Box | None) -> torch.Tensor:
        if gray.dtype != torch.uint8 or gray.ndim < 2:
            raise LuvnetError(f"gray: expected uint8 [..., H, W], got {gray.dtype} {gray.shape}")
        x, y, w, h = clip_box(box, gray.shape[-2], gray.shape[-1])
        key = (h, w, gray.device)  # the taps depend on the crop's size only
        if key != self._key or self._taps is None:
            rows, cols = letterbox_taps(h, w, self.size)
            self._taps, self._key = (rows.to(gray.device), cols.to(gray.device)), key
        return apply_taps(gray[..., y : y + h, x : x + w], *self._taps)
