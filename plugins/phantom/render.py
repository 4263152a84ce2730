"""Per-frame work: slide the scene's strips, add the probe-fixed layers, scan-convert.

Per frame this is two bilinear warps (chest wall, lung) into the polar image, three saturating
uint8 operations (attenuation and shadows, rib surfaces, noise floor), one remap into the fan
and a grey-to-BGR conversion; everything else was precomputed by ``layers.build_layers``.
A frame depends only on its index, so frames can be rendered in any order.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from luvnet.plugins.phantom.geometry import Geometry
from luvnet.plugins.phantom.layers import NOISE_PAD, Layers, build_layers
from luvnet.plugins.phantom.scene import FrameMotion, Scene, frame_motion
from luvnet.plugins.phantom.ui import UiLayer, draw_ui

_WARP = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP


class Renderer:
    """Draws the frames of one scene."""

    def __init__(self, scene: Scene, geometry: Geometry, motion: FrameMotion | None = None):
        self.scene = scene
        self.geometry = geometry
        self.motion = frame_motion(scene, geometry) if motion is None else motion
        self.layers: Layers = build_layers(scene, geometry)
        self.ui: UiLayer = draw_ui(geometry, scene.fps)
        rng = np.random.default_rng([scene.seed, 1])
        self._noise_at = rng.integers(0, 2 * NOISE_PAD + 1, size=(scene.num_frames, 2))
        self._polar = np.empty((geometry.rows, geometry.cols), dtype=np.uint8)
        # Pixels outside the fan are never written, so the screen is drawn once.
        self._canvas = self.ui.grey.copy()
        x0, y0, x1, y1 = geometry.fan_box
        self._fan = self._canvas[y0:y1, x0:x1]
        self._map_x, self._map_y = geometry.remap_maps

    def _check(self, index: int) -> None:
        if not 0 <= index < self.scene.num_frames:
            raise IndexError(f"frame index: expected 0..{self.scene.num_frames - 1}, got {index}")

    def polar(self, index: int) -> np.ndarray:
        """The (rows, cols) uint8 polar image of frame ``index``; a view into a reused buffer."""
        self._check(index)
        lay, geo, m = self.layers, self.geometry, self.motion
        shift_y = float(m.shift_y[index])
        # Frame rows above ``split`` come from the chest wall strip, the rest from the lung.
        split = min(max(int(math.floor(lay.split + shift_y)), 1), geo.rows - 1)
        wall_affine = np.array(
            [[1, 0, m.wall_x[index]], [0, 1, lay.margin - shift_y]], dtype=np.float32
        )
        lung_affine = np.array(
            [[1, 0, m.lung_x[index]], [0, 1, split + lay.margin - shift_y]], dtype=np.float32
        )
        top, bottom = self._polar[:split], self._polar[split:]
        cv2.warpAffine(
            lay.wall,
            wall_affine,
            (geo.cols, split),
            dst=top,
            flags=_WARP,
            borderMode=cv2.BORDER_REPLICATE,
        )
        cv2.warpAffine(
            lay.lung,
            lung_affine,
            (geo.cols, geo.rows - split),
            dst=bottom,
            flags=_WARP,
            borderMode=cv2.BORDER_REPLICATE,
        )
        cv2.subtract(self._polar, lay.sub, dst=self._polar)
        cv2.add(self._polar, lay.add, dst=self._polar)
        ny, nx = self._noise_at[index]
        cv2.max(self._polar, lay.noise[ny : ny + geo.rows, nx : nx + geo.cols], dst=self._polar)
        return self._polar

    def frame(self, index: int) -> np.ndarray:
        """HxWx3 uint8 BGR frame ``index`` (a new array)."""
        polar = self.polar(index)
        cv2.remap(
            polar,
            self._map_x,
            self._map_y,
            cv2.INTER_LINEAR,
            dst=self._fan,
            borderMode=cv2.BORDER_TRANSPARENT,
        )
        out = cv2.cvtColor(self._canvas, cv2.COLOR_GRAY2BGR)
        x0, y0, x1, y1 = self.ui.logo_box
        out[y0:y1, x0:x1][self.ui.logo_mask] = self.ui.logo[self.ui.logo_mask]
        return out
