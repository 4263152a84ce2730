"""What a phantom video shows and when: randomised scene parameters, motion and exact truth.

A scene is a strip of lung ("the world") wider than the probe's view, laid out in beam columns
of the polar image (see geometry.py). Pattern instances occupy intervals of that strip; the
probe dwells and sweeps along it, the lung slides under the chest wall with breathing, and the
ribs stay fixed under the probe. A pattern is visible in a frame when enough of one of its
instances lies in the view and outside the rib shadows; that rule, evaluated on the same
offsets the renderer uses, is the frame-level truth.

Nothing here draws pixels: truth is computed without rendering, so label statistics over large
generated sets are cheap (see ``truth_table``). Random scenes are drawn by
:func:`~luvnet.plugins.phantom.sampling.sample_scene`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from luvnet.engine.model.config import PATTERNS
from luvnet.plugins.phantom.geometry import Geometry

# Instance kinds and the pattern each one shows.
KIND_PATTERN: dict[str, str] = {
    "b_line": "b_lines",
    "confluent": "b_lines",
    "consolidation": "consolidation",
    "effusion": "pleural_effusion",
}

# Visibility rule: an instance counts when this share of its width is in view and unshadowed,
# or, for wide instances, at least this share of the view width (a single B-line: half of it).
VISIBLE_SHARE_OF_INSTANCE = 0.5
# The shares are small on purpose: a stretch that is plainly visible must not be labelled
# absent just because a rib or another pattern hides the rest (about 6-8 mm at the pleura).
VISIBLE_SHARE_OF_VIEW = {"b_line": 1.0, "confluent": 0.08, "consolidation": 0.08, "effusion": 0.08}
A_LINE_SHARE_OF_VIEW = 0.10  # A-lines count when they span this share of the view
EFFUSION_EDGE_PAD = 0.15  # the fluid's sloped edges stay within this share of its width
CONSOLIDATION_TAPER = 0.1  # share of a consolidation's width at each end too thin to count


@dataclass(frozen=True)
class Anatomy:
    """One synthetic patient: what stays the same across that patient's videos."""

    pleura_mm: float  # chest-wall thickness, skin to parietal pleura
    skin_mm: float
    fat_mm: float
    rib_width_mm: float
    rib_gap_mm: float  # intercostal space
    rib_rise_mm: float  # rib surface above the pleura
    wall_level: float  # mean grey of the chest-wall muscle
    gain: float  # grey offset applied to everything
    attenuation: float  # grey lost from the top to the bottom of the image after TGC
    speckle_mm: float  # lateral speckle grain (probe frequency)
    contrast: float  # grey levels per dB of speckle

    @classmethod
    def sample(cls, rng: np.random.Generator) -> Anatomy:
        return cls(
            pleura_mm=float(rng.uniform(14.0, 30.0)),
            skin_mm=float(rng.uniform(1.5, 3.0)),
            fat_mm=float(rng.uniform(2.0, 9.0)),
            rib_width_mm=float(rng.uniform(9.0, 13.0)),
            rib_gap_mm=float(rng.uniform(22.0, 34.0)),
            rib_rise_mm=float(rng.uniform(2.5, 5.5)),
            wall_level=float(rng.uniform(55.0, 85.0)),
            gain=float(rng.uniform(-12.0, 12.0)),
            attenuation=float(rng.uniform(10.0, 30.0)),
            speckle_mm=float(rng.uniform(0.7, 1.1)),
            contrast=float(rng.uniform(2.2, 3.0)),
        )


@dataclass(frozen=True)
class Instance:
    """One occurrence of a pattern on the strip; ``u0``/``u1`` are world columns (for an
    effusion, its extent half-way between pleura and diaphragm)."""

    kind: str
    u0: float
    u1: float
    strength: float  # 0..1: brightness / contrast of the cue
    depth_mm: float = 0.0  # consolidation: deepest extent below the pleura; effusion: diaphragm
    seed: int = 0  # texture details

    @property
    def pattern(self) -> str:
        return KIND_PATTERN[self.kind]

    @property
    def width(self) -> float:
        return self.u1 - self.u0


@dataclass(frozen=True)
class Motion:
    """Breathing, lung sliding, probe sweep and jitter."""

    resp_per_min: float
    resp_phase: float  # 0..1 at t = 0
    insp_fraction: float  # share of the cycle spent breathing in
    slide_mm: float  # lung excursion under the chest wall at full inspiration
    keyframes: tuple[tuple[float, float], ...]  # (seconds, world column of the view's left edge)
    jitter_mm: float
    jitter_seed: int


@dataclass(frozen=True)
class Scene:
    anatomy: Anatomy
    pleura_mm: float
    rib_phase_mm: float  # centre of the first rib, from the view's left edge at the pleura
    world_cols: int
    instances: tuple[Instance, ...]
    a_lines: tuple[tuple[float, float, float], ...]  # (u0, u1, strength) before other patterns
    motion: Motion
    seed: int  # textures
    num_frames: int
    fps: float
    look: str = "plain"  # how it is rendered: "plain" or "varied" (look.py); never the truth


@dataclass(frozen=True)
class FrameMotion:
    """Per-frame offsets, shared by the renderer and the truth."""

    wall_x: np.ndarray  # world column under frame column 0 for the chest wall
    lung_x: np.ndarray  # the same below the pleura (adds lung sliding)
    shift_y: np.ndarray  # polar rows the body moves down (probe jitter)
    resp: np.ndarray  # breathing 0 (end of expiration) .. 1 (end of inspiration)


def breathing(t: np.ndarray, motion: Motion) -> np.ndarray:
    """Smooth breathing curve in 0..1: a faster rise (inspiration) and a slower fall."""
    phase = np.mod(t * motion.resp_per_min / 60.0 + motion.resp_phase, 1.0)
    insp = motion.insp_fraction
    warped = np.where(phase < insp, 0.5 * phase / insp, 0.5 + 0.5 * (phase - insp) / (1 - insp))
    return 0.5 - 0.5 * np.cos(2 * np.pi * warped)


def _sweep(t: np.ndarray, keyframes: tuple[tuple[float, float], ...]) -> np.ndarray:
    times = np.array([k[0] for k in keyframes])
    xs = np.array([k[1] for k in keyframes])
    if len(times) == 1:
        return np.full_like(t, xs[0])
    i = np.clip(np.searchsorted(times, t, side="right") - 1, 0, len(times) - 2)
    span = np.maximum(times[i + 1] - times[i], 1e-9)
    f = np.clip((t - times[i]) / span, 0.0, 1.0)
    ease = 0.5 - 0.5 * np.cos(np.pi * f)  # probe accelerates and decelerates smoothly
    return xs[i] + (xs[i + 1] - xs[i]) * ease


def _jitter(t: np.ndarray, amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """Hand tremor: a few random slow sinusoids, total RMS ``amplitude``."""
    out = np.zeros_like(t)
    for _ in range(3):
        freq = rng.uniform(0.3, 2.5)
        out += np.sin(2 * np.pi * (freq * t + rng.uniform()))
    return out * amplitude * math.sqrt(2.0 / 3.0)


def frame_motion(scene: Scene, geometry: Geometry) -> FrameMotion:
    m = scene.motion
    t = np.arange(scene.num_frames) / scene.fps
    cpm = geometry.cols_per_mm(scene.pleura_mm)
    rng = np.random.default_rng(m.jitter_seed)
    jitter_x = _jitter(t, m.jitter_mm * cpm, rng)
    jitter_y = _jitter(t, m.jitter_mm * geometry.rows_per_mm, rng)
    resp = breathing(t, m)
    wall_x = _sweep(t, m.keyframes) + jitter_x
    lung_x = wall_x + m.slide_mm * cpm * resp
    return FrameMotion(wall_x=wall_x, lung_x=lung_x, shift_y=jitter_y, resp=resp)


def ribs(scene: Scene, geometry: Geometry) -> list[tuple[float, float]]:
    """(centre, width) of each rib touching the view, in frame columns at the pleura."""
    a = scene.anatomy
    cpm = geometry.cols_per_mm(scene.pleura_mm)
    period = (a.rib_width_mm + a.rib_gap_mm) * cpm
    width = a.rib_width_mm * cpm
    first = scene.rib_phase_mm * cpm
    k0 = math.floor((-width - first) / period)
    k1 = math.ceil((geometry.cols + width - first) / period)
    return [(first + k * period, width) for k in range(k0, k1 + 1)]


def shadow_profile(scene: Scene, geometry: Geometry) -> np.ndarray:
    """(cols,) 0..1: how much of each frame column the rib shadows cover (soft edges)."""
    c = np.arange(geometry.cols, dtype=np.float64)
    edge = max(1.0, 2.0 * geometry.cols_per_mm(scene.pleura_mm))  # ~2 mm penumbra
    shade = np.zeros_like(c)
    for centre, width in ribs(scene, geometry):
        shade = np.maximum(shade, np.clip((width / 2 - np.abs(c - centre)) / edge + 0.5, 0, 1))
    return shade


def a_line_profile(scene: Scene) -> np.ndarray:
    """(world_cols,) A-line strength per world column, zero where another pattern replaces
    the aerated lung that makes them."""
    u = np.arange(scene.world_cols, dtype=np.float64)
    strength = np.zeros(scene.world_cols)
    for u0, u1, s in scene.a_lines:
        strength[(u >= u0) & (u < u1)] = s
    for inst in scene.instances:
        pad = inst.width * (0.25 if inst.kind == "b_line" else EFFUSION_EDGE_PAD)
        strength[(u >= inst.u0 - pad) & (u < inst.u1 + pad)] = 0.0
    return strength


def _visible_counts(cum: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Unshadowed frame columns c with a <= c < b, from the cumulative visibility ``cum``."""
    n = len(cum) - 1
    lo = np.clip(np.ceil(a), 0, n).astype(np.int64)
    hi = np.clip(np.ceil(b), 0, n).astype(np.int64)
    return np.maximum(cum[hi] - cum[lo], 0)


def coverage_table(
    scene: Scene, geometry: Geometry, motion: FrameMotion | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per frame and pattern (``engine.config.PATTERNS`` order): the truth (bool) and how much
    of the view the pattern covers, unshadowed (float, share of the view width)."""
    motion = frame_motion(scene, geometry) if motion is None else motion
    visible = shadow_profile(scene, geometry) < 0.5
    cum = np.concatenate([[0], np.cumsum(visible)])
    view = geometry.cols
    truth = np.zeros((scene.num_frames, len(PATTERNS)), dtype=bool)
    cover = np.zeros((scene.num_frames, len(PATTERNS)), dtype=np.float64)
    x = motion.lung_x
    for inst in scene.instances:
        # A consolidation tapers to nothing at its ends; only its body counts.
        trim = CONSOLIDATION_TAPER * inst.width if inst.kind == "consolidation" else 0.0
        u0, u1 = inst.u0 + trim, inst.u1 - trim
        need = min(VISIBLE_SHARE_OF_INSTANCE * (u1 - u0), VISIBLE_SHARE_OF_VIEW[inst.kind] * view)
        seen = _visible_counts(cum, u0 - x, u1 - x)
        j = PATTERNS.index(inst.pattern)
        truth[:, j] |= seen >= max(need, 1.0)
        cover[:, j] += seen / view
    profile = a_line_profile(scene)
    cols = np.arange(view)
    idx = np.clip(np.rint(x[:, None] + cols[None, :]).astype(np.int64), 0, scene.world_cols - 1)
    a_share = ((profile[idx] > 0) & visible[None, :]).sum(axis=1) / view
    j = PATTERNS.index("a_lines")
    truth[:, j] = a_share >= A_LINE_SHARE_OF_VIEW
    cover[:, j] = a_share
    return truth, cover


def truth_table(scene: Scene, geometry: Geometry, motion: FrameMotion | None = None) -> np.ndarray:
    """(num_frames, 4) bool, columns in ``engine.config.PATTERNS`` order."""
    return coverage_table(scene, geometry, motion)[0]


def truth_ranges(table: np.ndarray) -> dict[str, list[tuple[int, int]]]:
    """Per pattern, the inclusive frame ranges where it is visible."""
    out: dict[str, list[tuple[int, int]]] = {}
    for j, name in enumerate(PATTERNS):
        col = np.concatenate([[False], table[:, j], [False]]).astype(np.int8)
        starts = np.flatnonzero(np.diff(col) == 1)
        ends = np.flatnonzero(np.diff(col) == -1) - 1
        out[name] = [(int(s), int(e)) for s, e in zip(starts, ends, strict=True)]
    return out
