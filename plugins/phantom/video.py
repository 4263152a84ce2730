"""``PhantomVideo``: one synthetic lung-ultrasound video with its frame-level truth."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from luvnet.engine.model.config import PATTERNS
from luvnet.plugins.phantom.geometry import NATIVE_SIZE, PAPER_PROBE, Geometry, Probe
from luvnet.plugins.phantom.look import check_look
from luvnet.plugins.phantom.render import Renderer
from luvnet.plugins.phantom.sampling import sample_scene
from luvnet.plugins.phantom.scene import Anatomy, Scene, coverage_table, frame_motion, truth_ranges

DEFAULT_FPS = 30.0


class PhantomVideo:
    """A deterministic video: the same arguments give the same bytes.

    ``seed`` (an int or a sequence of ints, as ``numpy.random.default_rng`` takes) draws the
    scene; ``anatomy`` shares a synthetic patient between videos (drawn from ``seed`` when
    None). ``present`` forces patterns onto or off the part of the strip the probe passes over
    (a forced pattern can still hide behind a rib: check ``truth``) and ``sweep=False`` holds
    the probe still; both exist for tests and demos. ``probe`` is the scanner's convex probe
    and depth (the paper's by default); ``look`` is ``plain`` (the phantom's fixed rendering)
    or ``varied`` (drawn per scene: plugins/phantom/look.py). Truth is known before any pixel
    is drawn.
    """

    def __init__(
        self,
        seed: int | Sequence[int],
        size: tuple[int, int] = NATIVE_SIZE,
        fps: float = DEFAULT_FPS,
        num_frames: int = 150,
        anatomy: Anatomy | None = None,
        present: Mapping[str, bool] | None = None,
        sweep: bool = True,
        probe: Probe = PAPER_PROBE,
        look: str = "plain",
    ):
        if not fps > 0:
            raise ValueError(f"fps: expected > 0, got {fps}")
        self.geometry = Geometry.for_size(*size, probe=probe)
        self.fps = float(fps)
        rng = np.random.default_rng(seed)
        anatomy = Anatomy.sample(rng) if anatomy is None else anatomy
        check_look(look)
        scene = sample_scene(rng, self.geometry, anatomy, num_frames, self.fps, present, sweep)
        self.scene: Scene = dataclasses.replace(scene, look=look)
        self.motion = frame_motion(self.scene, self.geometry)
        # truth: (frames, 4) bool; coverage: share of the view each pattern covers, unshadowed.
        self.truth, self.coverage = coverage_table(self.scene, self.geometry, self.motion)
        self._renderer: Renderer | None = None

    @property
    def size(self) -> tuple[int, int]:
        return self.geometry.height, self.geometry.width

    def __len__(self) -> int:
        return self.scene.num_frames

    @property
    def renderer(self) -> Renderer:
        """Built on first use: the textures cost a few tens of milliseconds."""
        if self._renderer is None:
            self._renderer = Renderer(self.scene, self.geometry, self.motion)
        return self._renderer

    def release(self) -> None:
        """Free the textures (truth and scene stay); the next frame rebuilds them."""
        self._renderer = None

    def frame(self, index: int) -> np.ndarray:
        """HxWx3 uint8 BGR frame ``index``."""
        return self.renderer.frame(index)

    def polar(self, index: int) -> np.ndarray:
        """Copy of frame ``index`` before scan conversion: rows are depth, columns beams."""
        return self.renderer.polar(index).copy()

    def truth_at(self, index: int) -> dict[str, bool]:
        return {name: bool(v) for name, v in zip(PATTERNS, self.truth[index], strict=True)}

    def truth_ranges(self) -> dict[str, list[tuple[int, int]]]:
        """Per pattern, inclusive 0-based frame ranges where it is visible."""
        return truth_ranges(self.truth)

    def __iter__(self) -> Iterator[tuple[np.ndarray, dict[str, bool]]]:
        for i in range(len(self)):
            yield self.frame(i), self.truth_at(i)
