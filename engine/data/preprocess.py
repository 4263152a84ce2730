# Over 400 lines because the one preprocessing path keeps grey conversion, the crop rule and the
# stream's hold-then-lock calibration together, so training, evaluation and the stream share them.
"""The one preprocessing path shared by training, evaluation and the live streamer.

docs/model.md, "Data and training protocol": crop to the imaging sector (drop scanner UI and
text), resize keeping the aspect ratio onto a black S x S canvas, grey replicated to 3
channels, ImageNet mean/std. It is split in two on purpose:

* the geometric part: grey ``uint8`` frames (:func:`to_gray_u8`), the sector box found on the
  CPU from the first frames (:func:`find_sector_box`), then the letterbox of
  :mod:`engine.letterbox` (:func:`letterbox_u8`, :class:`FramePreprocessor`), a torch function
  that runs on the CPU for the clip cache and on the GPU for a GPU stream, which uploads the
  grey frame and letterboxes it there; its uint8 [S, S] output is what the clip cache stores;
* :func:`normalize` turns ``uint8`` [..., S, S] into float [..., 3, S, S] on whatever device
  the tensor lives on, so the 4x larger float frames never cross the PCIe bus.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Generic, TypeVar

import cv2
import numpy as np
import torch

from luvnet.engine.data.letterbox import Box, Letterbox, as_tensor, clip_box
from luvnet.engine.errors import LuvnetError
from luvnet.engine.model.config import PreprocessConfig

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- grey conversion


def to_gray_u8(image: np.ndarray, *, uint16_max: int | None = 65535) -> np.ndarray:
    """One-channel ``uint8`` [H, W] from HxW, HxWx1, HxWx3 (BGR) or HxWx4 (BGRA).

    dtypes: ``uint8`` as is; ``uint16`` mapped 0..``uint16_max`` -> 0..255 (65535: divide by
    257; pass 4095 for 12-bit data; ``None`` scales each image by its own maximum, which makes
    brightness flicker between frames, so it is not the default); float in [0, 1] times 255.
    """
    if not isinstance(image, np.ndarray):
        raise LuvnetError(f"image: expected a numpy array, got {type(image).__name__}")
    shape = image.shape
    if image.ndim == 3 and shape[2] == 1:
        image = image[:, :, 0]
    if not (image.ndim == 2 or (image.ndim == 3 and shape[2] in (3, 4))):
        raise LuvnetError(f"image: expected shape HxW, HxWx1, HxWx3 or HxWx4, got {shape}")
    if shape[0] == 0 or shape[1] == 0:
        raise LuvnetError(f"image: expected a non-empty image, got shape {shape}")
    image = _to_u8(image, uint16_max)
    if image.ndim == 3:
        code = cv2.COLOR_BGR2GRAY if image.shape[2] == 3 else cv2.COLOR_BGRA2GRAY
        image = cv2.cvtColor(np.ascontiguousarray(image), code)
    return np.ascontiguousarray(image)


def _to_u8(image: np.ndarray, uint16_max: int | None) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        top = int(image.max()) if uint16_max is None else int(uint16_max)
        if top <= 0:
            return np.zeros(image.shape, np.uint8)
        if top == 65535:
            # Exact integer mapping with rounding: 65535 -> 255, 257*k -> k.
            return ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
        scaled = image.astype(np.float32) * (255.0 / top)
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    if image.dtype.kind == "f":
        lo, hi = float(np.min(image)), float(np.max(image))
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < -1e-6 or hi > 1 + 1e-6:
            raise LuvnetError(
                f"image: expected float values in [0, 1], got range [{lo:.4g}, {hi:.4g}]"
            )
        return np.clip(np.rint(image.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
    raise LuvnetError(f"image: expected dtype uint8, uint16 or float in [0, 1], got {image.dtype}")


# --------------------------------------------------------------------------- sector detection


@dataclass(frozen=True)
class SectorParams:
    """Knobs of the automatic sector crop. All are part of the clip-cache key."""

    min_std: float = 1.0  # temporal std (grey levels, after blurring) of a changing pixel
    blur: int = 5  # odd box-blur kernel: averages away pixel noise, keeps speckle change
    open_frac: float = 0.01  # opening kernel, fraction of the short side: drops thin UI bits
    close_frac: float = 0.03  # closing kernel: joins fan pieces split by dark rib shadows
    keep_ratio: float = 0.2  # components at least this fraction of the largest are kept
    min_area: float = 0.01  # below this fraction of the frame the detection is not trusted
    # The crop rule (docs/formats.md, "One crop rule"): the sector is found from a video's
    # first frames only (all of them when it is shorter), because a live stream knows only a
    # prefix; evaluation and training use the same frames, so both lock the same box.
    first_frames: int = 30

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass(frozen=True)
class SectorDetection:
    """The box, whether it came from the pixels (``detected``) and why, in words."""

    box: Box
    detected: bool
    reason: str


class ChangeAccumulator:
    """Per-pixel temporal standard deviation of blurred grey frames: what moves is the sector.

    Static scanner UI, rulers, text and logos keep their value; speckle and tissue do not.
    The blur averages away per-pixel capture noise (i.i.d., shrinks ~k-fold) while speckle
    grains survive it. Used by :func:`detect_sector`, which evaluation, training and the live
    stream all call on a video's first frames, so all find the same box from the same frames.
    """

    def __init__(self, params: SectorParams | None = None) -> None:
        self.params = params or SectorParams()
        self.count = 0
        self._sum: np.ndarray | None = None
        self._sq: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int] | None:
        return None if self._sum is None else (self._sum.shape[0], self._sum.shape[1])

    def add(self, gray: np.ndarray) -> None:
        if self._sum is not None and gray.shape != self._sum.shape:
            raise LuvnetError(
                f"frames: expected every frame to be {self._sum.shape[1]}x{self._sum.shape[0]} "
                f"(WxH), got {gray.shape[1]}x{gray.shape[0]}"
            )
        k = self.params.blur
        smooth = (cv2.blur(gray, (k, k)) if k > 1 else gray).astype(np.float64)
        if self._sum is None or self._sq is None:
            self._sum, self._sq = np.zeros_like(smooth), np.zeros_like(smooth)
        self._sum += smooth
        self._sq += smooth * smooth
        self.count += 1

    def change_map(self) -> np.ndarray:
        """Temporal standard deviation per pixel, float32 [H, W]."""
        if self._sum is None or self._sq is None:
            raise LuvnetError("frames: expected at least one frame, got none")
        mean = self._sum / self.count
        var = np.maximum(self._sq / self.count - mean * mean, 0.0)
        return np.sqrt(var).astype(np.float32)

    def detect(self) -> SectorDetection:
        std = self.change_map()
        h, w = std.shape
        full = (0, 0, w, h)
        if self.count < 2:
            return SectorDetection(full, False, f"full frame: {self.count} frame(s), need 2+")
        p = self.params
        moving: np.ndarray = (std >= p.min_std).astype(np.uint8)
        if not moving.any():
            return SectorDetection(
                full, False, f"full frame: no pixel varies by {p.min_std} grey levels (std)"
            )
        short = min(h, w)
        for frac, op in ((p.open_frac, cv2.MORPH_OPEN), (p.close_frac, cv2.MORPH_CLOSE)):
            k = max(3, int(round(short * frac)) | 1)
            kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
            moving = cv2.morphologyEx(moving, op, kernel)
        n, _, stats, _ = cv2.connectedComponentsWithStats(moving, connectivity=8)
        areas = stats[1:, cv2.CC_STAT_AREA]
        if n <= 1 or areas.max() < p.min_area * h * w:
            biggest = 0 if n <= 1 else int(areas.max())
            return SectorDetection(
                full,
                False,
                f"full frame: largest changing region ({biggest} px) is under "
                f"{p.min_area:.0%} of the frame",
            )
        keep = stats[1:][areas >= p.keep_ratio * areas.max()]
        x0 = int(keep[:, cv2.CC_STAT_LEFT].min())
        y0 = int(keep[:, cv2.CC_STAT_TOP].min())
        x1 = int((keep[:, cv2.CC_STAT_LEFT] + keep[:, cv2.CC_STAT_WIDTH]).max())
        y1 = int((keep[:, cv2.CC_STAT_TOP] + keep[:, cv2.CC_STAT_HEIGHT]).max())
        # The blur spreads change k//2 px beyond an edge inside the image: take it back.
        m = p.blur // 2
        x0, y0 = (x0 + m if x0 > 0 else 0), (y0 + m if y0 > 0 else 0)
        x1, y1 = (x1 - m if x1 < w else w), (y1 - m if y1 < h else h)
        x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
        box = (x0, y0, x1 - x0, y1 - y0)
        return SectorDetection(box, True, f"detected from {self.count} frames")


def detect_sector(
    frames: Sequence[np.ndarray] | np.ndarray, params: SectorParams | None = None
) -> SectorDetection:
    """Sector box from the pixels that change over the first ``params.first_frames`` frames
    (the crop rule shared by the stream, evaluation and training), with the reason for a
    fallback. ``frames``: the video's frames in order (decimated ones already left out)."""
    params = params or SectorParams()
    count = len(frames)
    if count == 0:
        raise LuvnetError("frames: expected at least one frame, got none")
    acc = ChangeAccumulator(params)
    for i in range(min(count, max(1, params.first_frames))):
        acc.add(to_gray_u8(np.asarray(frames[i])))
    return acc.detect()


def find_sector_box(
    frames: Sequence[np.ndarray] | np.ndarray, params: SectorParams | None = None
) -> Box:
    """(x, y, w, h) of the imaging sector; the full frame (reason logged) when undecidable."""
    found = detect_sector(frames, params)
    if not found.detected:
        log.info("sector crop: %s", found.reason)
    return found.box


# --------------------------------------------------------------------------- letterbox


def letterbox_u8(gray: np.ndarray, box: Box | None, size: int) -> np.ndarray:
    """Crop ``gray`` [H, W] uint8 to ``box``, fit into [size, size] keeping the aspect ratio,
    centred on black (:mod:`engine.letterbox`, the same function the GPU stream runs)."""
    if not isinstance(gray, np.ndarray) or gray.dtype != np.uint8 or gray.ndim != 2:
        shown = f"{gray.dtype} {gray.shape}" if isinstance(gray, np.ndarray) else type(gray)
        raise LuvnetError(f"gray: expected uint8 HxW, got {shown}")
    return Letterbox(size)(as_tensor(gray), box).numpy()


CHUNK = 16  # frames letterboxed together: [16, S, w] float temporaries, a few tens of MB


def preprocess_frames(
    frames: np.ndarray,
    cfg: PreprocessConfig,
    params: SectorParams | None = None,
    region: Box | None = None,
) -> tuple[np.ndarray, SectorDetection]:
    """A whole decoded video [T, H, W] uint8 -> ([T, S, S] uint8, the sector used).

    The box is ``cfg.crop_box`` when set, else the imaging ``region`` a DICOM file declares
    (``Video.region``), else detected from this video's first frames (:func:`detect_sector`).
    """
    if frames.ndim != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise LuvnetError(
            f"frames: expected uint8 [T, H, W] with T >= 1, got {frames.dtype} {frames.shape}"
        )
    if cfg.crop_box is not None:
        box = clip_box(cfg.crop_box, frames.shape[1], frames.shape[2])
        found = SectorDetection(box, False, "fixed crop_box from the configuration")
    elif region is not None:
        found = region_detection(region, frames.shape[1], frames.shape[2])
    else:
        found = detect_sector(frames, params)
    letterbox = Letterbox(cfg.image_size)
    video = as_tensor(frames)
    chunks = [letterbox(video[i : i + CHUNK], found.box) for i in range(0, len(frames), CHUNK)]
    return torch.cat(chunks).numpy(), found


def region_detection(region: Box, height: int, width: int) -> SectorDetection:
    """The imaging region a DICOM file declares, cut to the image, as the sector."""
    return SectorDetection(clip_box(region, height, width), True, "the file's ultrasound region")


Tag = TypeVar("Tag")


class FramePreprocessor(Generic[Tag]):
    """Per-frame geometric preprocessing for the live streamer: image -> uint8 [S, S].

    Box precedence: ``box`` argument, then ``cfg.crop_box``, then (``calibrate_frames`` > 0)
    the sector :func:`detect_sector` finds in the first ``calibrate_frames`` frames of each
    frame size (the crop rule evaluation uses), else the full frame.

    :meth:`push` holds the frames the sector is found from until it locks, then hands them all
    back in order with the locked box, so none is lost and none is scored with another box;
    :meth:`flush` locks on what is held (a source that ends early). A change of frame size
    locks the held frames of the old size on what there is, drops any box of the old size (a
    fixed one too) and calibrates again; it is reported for that one frame in ``size_changed``
    as ((H, W) before, (H, W) now). Each ``push`` caller passes a ``tag`` (its frame record)
    that comes back with the grey frame and its box.
    """

    def __init__(
        self,
        cfg: PreprocessConfig,
        box: Box | None = None,
        *,
        calibrate_frames: int = 0,
        sector: SectorParams | None = None,
    ) -> None:
        self.cfg = cfg
        self.size = cfg.image_size
        self.calibrate_frames = calibrate_frames
        self.sector = sector or SectorParams()
        self._fixed = box if box is not None else cfg.crop_box
        self._box: Box | None = self._fixed
        self._held: list[tuple[Tag, np.ndarray]] = []
        self._locked_shape: tuple[int, int] | None = None
        self.detection: SectorDetection | None = None
        self._letterbox = Letterbox(self.size)
        self._shape: tuple[int, int] | None = None  # the last frame's (H, W)
        self.size_changed: tuple[tuple[int, int], tuple[int, int]] | None = None

    @property
    def box(self) -> Box | None:
        """The box in use; ``None`` while uncropped (no box, or still calibrating)."""
        return self._box

    @property
    def calibrating(self) -> bool:
        """Frames of the current size are held until the sector locks."""
        return self._shape is not None and self._calibrates(self._shape)

    held = property(lambda self: len(self._held), doc="Frames held for the calibration.")

    def calibrate(self, frames: Sequence[np.ndarray] | np.ndarray) -> SectorDetection:
        """Detect the sector from these frames and lock it now."""
        self.detection = detect_sector(frames, self.sector)
        first = to_gray_u8(np.asarray(frames[0]))
        self._box, self._locked_shape = self.detection.box, (first.shape[0], first.shape[1])
        return self.detection

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """One frame with the box in use now (no calibration: fixed, or locked by
        :meth:`calibrate`)."""
        return self.letterbox(as_tensor(to_gray_u8(image)), self._box).numpy()

    def push(
        self, image: np.ndarray, tag: Tag, region: Box | None = None
    ) -> list[tuple[Tag, np.ndarray, Box | None]]:
        """(tag, grey uint8 [H, W], box) of every frame ready now, in order: this one, or none
        while calibrating, or all the held ones once the sector locks. ``region``: the imaging
        region the source declares for this frame (a DICOM file's), used unless a box is
        fixed, as :func:`preprocess_frames` uses it."""
        gray = to_gray_u8(image)
        shape = (gray.shape[0], gray.shape[1])
        ready: list[tuple[Tag, np.ndarray, Box | None]] = []
        self.size_changed = None
        if self._shape is not None and shape != self._shape:
            self.size_changed = (self._shape, shape)
            ready += self.flush()  # the old size's held frames, locked on what there is
            if self._fixed is not None:
                # A fixed box was drawn on frames of the old size: never crop new ones with it.
                log.warning("sector crop: box %s dropped, the frame size changed", self._fixed)
                self._fixed = None
            self._box = None
        self._shape = shape
        if region is not None and self._fixed is None:
            self.detection = region_detection(region, *shape)
            self._box, self._locked_shape = self.detection.box, shape
        if not self._calibrates(shape):
            ready.append((tag, gray, self._box))
            return ready
        self._held.append((tag, gray))
        if len(self._held) >= self.calibrate_frames:
            ready += self.flush()
        return ready

    def flush(self) -> list[tuple[Tag, np.ndarray, Box | None]]:
        """Lock the sector on the frames held (however few) and hand them back with it."""
        if not self._held:
            return []
        held, self._held = self._held, []
        self.calibrate([gray for _, gray in held])
        log.info(
            "sector crop locked at %s (%s)", self._box, self.detection and self.detection.reason
        )
        return [(tag, gray, self._box) for tag, gray in held]

    def letterbox(self, gray: torch.Tensor, box: Box | None) -> torch.Tensor:
        """uint8 [H, W] on any device -> uint8 [S, S] on that device, cropped to ``box``
        (a GPU stream uploads the grey frame and letterboxes it there)."""
        return self._letterbox(gray, box)

    def _calibrates(self, shape: tuple[int, int]) -> bool:
        return self._fixed is None and self.calibrate_frames > 0 and self._locked_shape != shape


# --------------------------------------------------------------------------- normalisation

_AFFINE: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _affine(cfg: PreprocessConfig, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # Cached per device so a CUDA-graph capture never sees a host-to-device copy.
    key = (tuple(cfg.mean), tuple(cfg.std), str(device))
    if key not in _AFFINE:
        std = torch.tensor(cfg.std, dtype=torch.float32)
        mean = torch.tensor(cfg.mean, dtype=torch.float32)
        scale = (1.0 / (255.0 * std)).view(3, 1, 1)
        shift = (mean / std).view(3, 1, 1)
        _AFFINE[key] = (scale.to(device), shift.to(device))
    return _AFFINE[key]


def normalize(
    batch_u8: torch.Tensor, cfg: PreprocessConfig, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """uint8 [..., S, S] -> [..., 3, S, S] ``(x / 255 - mean) / std``, on the input's device;
    with ``cfg.intensity == "sector"`` each frame first goes through :func:`sector_standardize`.

    Computed in float32 and cast to ``dtype`` last (pass ``torch.half`` for fp16 engines).
    """
    size = cfg.image_size
    if batch_u8.dtype != torch.uint8:
        raise LuvnetError(f"frames: expected a uint8 tensor, got {batch_u8.dtype}")
    if batch_u8.ndim < 2 or tuple(batch_u8.shape[-2:]) != (size, size):
        raise LuvnetError(
            f"frames: expected shape [..., {size}, {size}], got {tuple(batch_u8.shape)}"
        )
    scale, shift = _affine(cfg, batch_u8.device)
    grey = batch_u8.to(torch.float32)
    if cfg.intensity == "sector":
        grey = sector_standardize(grey)
    out = grey.unsqueeze(-3) * scale - shift
    return out if dtype == torch.float32 else out.to(dtype)


# Issue 13: one brightness and contrast for every scanner and gain setting. The targets are
# about the median frame of COVID-BLUES and of the phantom at 64 px (docs/results.md,
# "Sim-to-real"); pixels darker than SECTOR_FLOOR (letterbox, fan corners, deep shadow) stay
# black and are left out of the statistics.
SECTOR_FLOOR = 4.0
SECTOR_MEAN = 40.0
SECTOR_STD = 28.0


def sector_standardize(grey: torch.Tensor) -> torch.Tensor:
    """float grey levels [..., S, S] -> the same shape, each frame's pixels >= ``SECTOR_FLOOR``
    shifted and scaled to mean ``SECTOR_MEAN`` and standard deviation ``SECTOR_STD`` (grey
    levels, clamped to 0..255), the others 0. A frame with no such pixel stays black; a flat
    one (std < 1 grey level) is only shifted. Per frame, so the stream and evaluate agree.
    """
    inside = (grey >= SECTOR_FLOOR).to(grey.dtype)
    count = inside.sum(dim=(-2, -1), keepdim=True).clamp_min(1.0)
    mean = (grey * inside).sum(dim=(-2, -1), keepdim=True) / count
    var = ((grey - mean) ** 2 * inside).sum(dim=(-2, -1), keepdim=True) / count
    std = var.sqrt().clamp_min(1.0)
    out = (grey - mean) / std * SECTOR_STD + SECTOR_MEAN
    return out.clamp(0.0, 255.0) * inside
