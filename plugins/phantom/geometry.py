"""Convex-probe scanner geometry: where the fan sits and how polar samples map to pixels.

Everything the phantom draws lives in a polar ("probe") image whose rows are depth along a beam
and whose columns are beam angles. Horizontal structures there (pleura, A-lines) become arcs
concentric with the probe face and vertical ones (B-lines, rib shadows) become radial beams,
as on a real convex probe. One ``cv2.remap`` per frame converts the polar image to the fan.

The layout is fixed per output size and probe (it is the scanner, not the patient): the native
layout is drawn for 924 x 1232 and scaled uniformly, centred, for other sizes. The default probe
is the paper's scanner (docs/model.md "Videos and preprocessing"); :meth:`Probe.sample` draws
other convex probes (radius, field of view, depth) for training sets that span scanners.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import cast

import numpy as np

NATIVE_SIZE: tuple[int, int] = (924, 1232)  # (height, width)
MIN_SIDE = 64  # below this the fan is a few pixels wide and the cues are gone

# Native layout in pixels of the 924 x 1232 frame.
_FAN_TOP_Y = 60.0  # probe face on the centre beam
_FAN_DEPTH_PX = 830.0
_PROBE_RADIUS_PX = 356.0  # 60 mm convex probe at the native scale
_HALF_ANGLE_DEG = 28.0
DEPTH_MM = 140.0  # depth setting shown on the ruler
_MAX_FAN_WIDTH_PX = 1000.0  # room left for the ruler and the text beside the fan
_POLAR_ROWS_MIN = 250  # polar rows are at least this many (or the fan's pixel depth)
_POLAR_SCALE = 0.6  # polar samples per output pixel when the fan is large


@dataclass(frozen=True)
class Probe:
    """A convex probe and its depth setting, in pixels of the native 924 x 1232 layout."""

    radius_px: float = _PROBE_RADIUS_PX  # probe face
    depth_px: float = _FAN_DEPTH_PX  # probe face to the deepest sample, on a beam
    half_angle_deg: float = _HALF_ANGLE_DEG  # field of view either side of the vertical
    depth_mm: float = DEPTH_MM

    def __post_init__(self) -> None:
        """Raises ValueError (one line) for a probe that cannot be drawn or leaves the layout."""
        checks = {
            "radius_px": self.radius_px >= 0,
            "depth_px": 0 < self.depth_px <= NATIVE_SIZE[0] - _FAN_TOP_Y,
            "half_angle_deg": 0 < self.half_angle_deg < 90,
            "depth_mm": self.depth_mm > 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"probe: {name} out of range, got {getattr(self, name)}")
        width = 2 * (self.radius_px + self.depth_px) * math.sin(math.radians(self.half_angle_deg))
        if width > NATIVE_SIZE[1]:
            raise ValueError(f"probe: the fan is {width:.0f} px wide, the layout {NATIVE_SIZE[1]}")

    @classmethod
    def sample(cls, rng: np.random.Generator) -> Probe:
        """A convex display from the range scanners show: depth 100-160 mm; probe radius
        0.3-2 times the depth (log-uniform; a large virtual radius gives the near-rectangular
        sectors of zoomed handheld displays, the paper's is 0.43); the field of view that
        makes the fan 0.8-1.3 times as wide as it is tall; as large as fits the layout."""
        depth_mm = float(rng.uniform(100.0, 160.0))
        rho = float(np.exp(rng.uniform(math.log(0.3), math.log(2.0))))
        aspect = float(rng.uniform(0.8, 1.3))
        half = _half_angle_for(rho, aspect)
        fits = _MAX_FAN_WIDTH_PX / (2 * math.sin(half) * (1 + rho))
        depth_px = min(_FAN_DEPTH_PX, fits)
        return cls(rho * depth_px, depth_px, math.degrees(half), depth_mm)


def _half_angle_for(rho: float, aspect: float) -> float:
    """Half-angle (radians, 8-40 degrees) at which a fan of probe radius ``rho`` depths is
    ``aspect`` times as wide as tall (width 2(1+rho)sin h, height 1+rho-rho cos h)."""
    lo, hi = math.radians(8.0), math.radians(40.0)
    for _ in range(40):  # the ratio grows with the angle: bisect
        mid = (lo + hi) / 2
        ratio = 2 * (1 + rho) * math.sin(mid) / (1 + rho - rho * math.cos(mid))
        lo, hi = (mid, hi) if ratio < aspect else (lo, mid)
    return (lo + hi) / 2


PAPER_PROBE = Probe()


@dataclass(frozen=True)
class Geometry:
    """Fan placement for one output size and probe; all lengths in output pixels unless
    named ``_mm``."""

    height: int
    width: int
    apex_x: float  # virtual apex of the beams, above the image
    apex_y: float
    r_near: float  # radius of the probe face
    r_far: float  # radius of the deepest sample
    half_angle: float  # radians either side of the vertical
    depth_mm: float
    rows: int  # polar depth samples
    cols: int  # polar beam samples
    scale: float  # output pixels per native pixel

    @classmethod
    def for_size(cls, height: int, width: int, probe: Probe = PAPER_PROBE) -> Geometry:
        """The layout for an output size and probe; one shared instance per pair, so the
        remap tables are computed once per process."""
        # A class object is hashable; mypy checks the instances' __hash__ instead.
        return _for_size(cast(Hashable, cls), int(height), int(width), probe)

    @classmethod
    def _layout(cls, height: int, width: int, probe: Probe) -> Geometry:
        if height < MIN_SIDE or width < MIN_SIDE:
            raise ValueError(f"size: expected at least {MIN_SIDE}x{MIN_SIDE}, got {height}x{width}")
        scale = min(height / NATIVE_SIZE[0], width / NATIVE_SIZE[1])
        off_x = (width - NATIVE_SIZE[1] * scale) / 2
        off_y = (height - NATIVE_SIZE[0] * scale) / 2
        r_near = probe.radius_px * scale
        depth_px = probe.depth_px * scale
        half = math.radians(probe.half_angle_deg)
        # Polar sampling: ~0.6 samples per pixel for large frames, one per pixel for small ones.
        rows = max(round(depth_px * _POLAR_SCALE), min(_POLAR_ROWS_MIN, round(depth_px)))
        k = rows / depth_px
        mid_arc = (r_near + depth_px / 2) * 2 * half
        cols = round(mid_arc * k)
        return cls(
            height=height,
            width=width,
            apex_x=off_x + NATIVE_SIZE[1] * scale / 2,
            apex_y=off_y + _FAN_TOP_Y * scale - r_near,
            r_near=r_near,
            r_far=r_near + depth_px,
            half_angle=half,
            depth_mm=probe.depth_mm,
            rows=rows,
            cols=cols,
            # As the paper-only layout computed it, so its screen stays the same to the pixel.
            scale=((r_near + depth_px) - r_near) / probe.depth_px,
        )

    @property
    def rows_per_mm(self) -> float:
        return self.rows / self.depth_mm

    @property
    def px_per_mm(self) -> float:
        return (self.r_far - self.r_near) / self.depth_mm

    @property
    def probe_radius_mm(self) -> float:
        return self.r_near / self.px_per_mm

    def cols_per_mm(self, depth_mm: float) -> float:
        """Beam columns per millimetre of lateral distance at a depth below the probe face."""
        arc_mm = (self.probe_radius_mm + depth_mm) * 2 * self.half_angle
        return self.cols / arc_mm

    def polar_to_xy(self, row: np.ndarray | float, col: np.ndarray | float):
        """Pixel coordinates (x, y) of polar sample centres (row, col); arrays or scalars."""
        r = self.r_near + (np.asarray(row) + 0.5) / self.rows * (self.r_far - self.r_near)
        phi = (np.asarray(col) + 0.5) / self.cols * 2 * self.half_angle - self.half_angle
        return self.apex_x + r * np.sin(phi), self.apex_y + r * np.cos(phi)

    def xy_to_polar(self, x: np.ndarray | float, y: np.ndarray | float):
        """Fractional polar (row, col) of pixel coordinates; outside the fan is out of range."""
        dx = np.asarray(x, dtype=np.float64) - self.apex_x
        dy = np.asarray(y, dtype=np.float64) - self.apex_y
        r = np.hypot(dx, dy)
        phi = np.arctan2(dx, dy)
        row = (r - self.r_near) / (self.r_far - self.r_near) * self.rows - 0.5
        col = (phi + self.half_angle) / (2 * self.half_angle) * self.cols - 0.5
        return row, col

    @cached_property
    def fan_box(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1), exclusive ends: the smallest pixel box holding the fan."""
        rows = np.array([-0.5, self.rows - 0.5])
        cols = np.linspace(-0.5, self.cols - 0.5, 65)
        xs, ys = self.polar_to_xy(rows[:, None], cols[None, :])
        x0 = max(int(math.floor(xs.min())) - 1, 0)
        y0 = max(int(math.floor(ys.min())) - 1, 0)
        x1 = min(int(math.ceil(xs.max())) + 2, self.width)
        y1 = min(int(math.ceil(ys.max())) + 2, self.height)
        return x0, y0, x1, y1

    @property
    def remap_maps(self) -> tuple[np.ndarray, np.ndarray]:
        """float32 (map_x, map_y) over ``fan_box`` for ``cv2.remap``; outside the fan is -10.
        Cached for the last few layouts, not on the instance: a set with a probe per patient
        keeps one layout per video."""
        return _remap_maps(self)

    def _compute_remap_maps(self) -> tuple[np.ndarray, np.ndarray]:
        x0, y0, x1, y1 = self.fan_box
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64)
        row, col = self.xy_to_polar(xs + 0.0, ys + 0.0)
        inside = (row >= -0.5) & (row <= self.rows - 0.5) & (col >= -0.5) & (col <= self.cols - 0.5)
        # Stay a hair inside the last sample so bilinear reads never leave the image (a read
        # outside would blend in whatever the destination held before).
        map_x = np.where(inside, np.clip(col, 0, self.cols - 1.01), -10).astype(np.float32)
        map_y = np.where(inside, np.clip(row, 0, self.rows - 1.01), -10).astype(np.float32)
        return map_x, map_y

    @property
    def sector_mask(self) -> np.ndarray:
        """HxW bool: pixels inside the fan."""
        mask = np.zeros((self.height, self.width), dtype=bool)
        x0, y0, x1, y1 = self.fan_box
        mask[y0:y1, x0:x1] = self.remap_maps[0] >= 0
        return mask


@lru_cache(maxsize=16)
def _for_size(cls: type[Geometry], height: int, width: int, probe: Probe) -> Geometry:
    return cls._layout(height, width, probe)


@lru_cache(maxsize=4)
def _remap_maps(geometry: Geometry) -> tuple[np.ndarray, np.ndarray]:
    return geometry._compute_remap_maps()
