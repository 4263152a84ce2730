"""Random phantom scenes: where each pattern lies on the strip and how the probe moves.

:func:`sample_scene` draws one video's :class:`~luvnet.plugins.phantom.scene.Scene` from a
random generator: the probe path (dwell, glide, dwell ...), which patterns the strip holds
(forced on or off by ``present``) and where their instances lie, the A-line stretches and the
breathing. The same generator state gives the same scene.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from luvnet.engine.model.config import PATTERNS
from luvnet.plugins.phantom.geometry import Geometry
from luvnet.plugins.phantom.scene import Anatomy, Instance, Motion, Scene

# Probability that a scene's strip holds each pattern somewhere, tuned so that a generated set
# has 30-60 % of frames positive per pattern (``luvnet phantom`` prints the shares).
SCENE_PREVALENCE = {"a_lines": 0.75, "b_lines": 0.8, "consolidation": 0.62, "pleural_effusion": 0.5}


def _place(
    rng: np.random.Generator,
    width: float,
    lo: float,
    hi: float,
    taken: list[tuple[float, float]],
    required: bool = False,
) -> tuple[float, float] | None:
    """A free interval of ``width`` inside [lo, hi], a few columns from the others; when
    ``required``, shrink the width until one fits."""
    gap = 0.04 * (hi - lo)
    for _ in range(4 if required else 1):
        for _ in range(40):
            if hi - lo <= width:
                break
            u0 = float(rng.uniform(lo, hi - width))
            if all(u0 + width + gap <= a or u0 >= b + gap for a, b in taken):
                taken.append((u0, u0 + width))
                return u0, u0 + width
        width *= 0.6
    return None


@dataclass(frozen=True)
class _Strip:
    """What placing needs to know about the scene being drawn."""

    rng: np.random.Generator
    cpm: float  # columns per mm at the pleura
    view: int
    lo: float  # the part of the strip the probe path shows
    hi: float
    pleura_mm: float
    depth_mm: float  # deepest sample
    taken: list[tuple[float, float]]


def _effusions(strip: _Strip, required: bool) -> list[Instance]:
    rng = strip.rng
    span = _place(
        rng, rng.uniform(0.45, 0.9) * strip.view, strip.lo, strip.hi, strip.taken, required
    )
    if span is None:
        return []
    diaphragm = min(strip.pleura_mm + rng.uniform(35.0, 75.0), 0.85 * strip.depth_mm)
    strength = float(rng.uniform(0.5, 1.0))
    return [Instance("effusion", *span, strength, diaphragm, int(rng.integers(2**31)))]


def _consolidations(strip: _Strip, required: bool) -> list[Instance]:
    rng = strip.rng
    out: list[Instance] = []
    for _ in range(1 + int(rng.random() < 0.25)):
        width = max(rng.uniform(0.2, 0.5) * strip.view, 10 * strip.cpm)
        span = _place(rng, width, strip.lo, strip.hi, strip.taken, required and not out)
        if span is not None:
            depth = float(rng.uniform(12.0, 40.0))
            strength = float(rng.uniform(0.5, 1.0))
            out.append(Instance("consolidation", *span, strength, depth, int(rng.integers(2**31))))
    return out


def _b_lines(strip: _Strip, required: bool) -> list[Instance]:
    """1-2 clusters, each 1-5 separate beams or a confluent band (30 %)."""
    rng = strip.rng
    out: list[Instance] = []
    for _ in range(1 + int(rng.random() < 0.45)):
        need = required and not out
        strength = float(rng.uniform(0.45, 1.0))
        if rng.random() < 0.3:  # confluent "white lung"
            width = rng.uniform(0.25, 0.55) * strip.view
            span = _place(rng, width, strip.lo, strip.hi, strip.taken, need)
            if span is not None:
                out.append(Instance("confluent", *span, strength, seed=int(rng.integers(2**31))))
            continue
        n = int(rng.integers(1, 6))
        widths = rng.uniform(2.5, 6.0, size=n) * strip.cpm
        gaps = rng.uniform(1.0, 3.5, size=n) * widths.max()
        span = _place(
            rng, float(widths.sum() + gaps[:-1].sum()), strip.lo, strip.hi, strip.taken, need
        )
        if span is None:
            continue
        # A cluster squeezed by ``_place`` keeps its beams and narrows the gaps between them.
        total = float(widths.sum() + gaps[:-1].sum())
        squeeze = (span[1] - span[0]) / total if span[1] - span[0] < 0.999 * total else 1.0
        u = span[0]
        for w, g in zip(widths.tolist(), gaps.tolist(), strict=True):
            w = w * max(squeeze, 0.6) if squeeze < 1.0 else w
            s = float(np.clip(strength * rng.uniform(0.8, 1.2), 0.35, 1.0))
            out.append(Instance("b_line", u, u + w, s, seed=int(rng.integers(2**31))))
            u += w + (g * squeeze if squeeze < 1.0 else g)
    return out


_PLACERS = {"pleural_effusion": _effusions, "consolidation": _consolidations, "b_lines": _b_lines}


def sample_scene(
    rng: np.random.Generator,
    geometry: Geometry,
    anatomy: Anatomy,
    num_frames: int,
    fps: float,
    present: Mapping[str, bool] | None = None,
    sweep: bool = True,
) -> Scene:
    """Random scene for one video. ``present`` forces a pattern onto (or off) the part of the
    strip the probe passes over; ``sweep=False`` holds the probe still (breathing and jitter
    remain)."""
    if num_frames < 1:
        raise ValueError(f"num_frames: expected >= 1, got {num_frames}")
    unknown = set(present or {}) - set(PATTERNS)
    if unknown:
        raise ValueError(f"present: unknown pattern(s) {sorted(unknown)}; expected {PATTERNS}")
    pleura_mm = anatomy.pleura_mm * float(rng.uniform(0.92, 1.08))
    cpm = geometry.cols_per_mm(pleura_mm)
    view = geometry.cols
    motion_seed = int(rng.integers(2**31))
    slide_mm = float(rng.uniform(2.5, 9.0))
    slide = slide_mm * cpm
    world_cols = int(math.ceil(view * rng.uniform(2.2, 2.8) + slide + 16))
    x_max = world_cols - view - slide - 8

    # Probe path: dwell, glide to another place, dwell ...
    duration = num_frames / fps
    x = float(rng.uniform(8, x_max))
    keyframes = [(0.0, x)]
    t = 0.0
    while sweep and t < duration:
        t += float(rng.uniform(0.7, 2.5))
        keyframes.append((t, x))
        for _ in range(10):
            nx = float(rng.uniform(8, x_max))
            if abs(nx - x) >= 0.35 * view:
                break
        t += float(rng.uniform(0.5, 1.4))
        x = nx
        keyframes.append((t, x))
    xs = [k[1] for k in keyframes]
    lo, hi = min(xs), max(xs) + view + slide  # the part of the strip this video can show

    want = {p: rng.random() < SCENE_PREVALENCE[p] for p in PATTERNS}
    want.update(present or {})
    strip = _Strip(rng, cpm, view, lo, hi, pleura_mm, geometry.depth_mm, taken=[])
    forced = {p for p, on in (present or {}).items() if on}
    instances: list[Instance] = []
    for name in sorted(_PLACERS, key=lambda p: p not in forced):  # forced ones first
        if want[name]:
            instances.extend(_PLACERS[name](strip, name in forced))

    a_lines: list[tuple[float, float, float]] = []
    if want["a_lines"]:
        strength = float(rng.uniform(0.65, 1.0))
        a_lines.append((0.0, float(world_cols), strength))
        if rng.random() < 0.5:  # a stretch of aerated lung without visible A-lines
            w = rng.uniform(0.3, 0.8) * view
            u0 = float(rng.uniform(lo, max(lo, hi - w)))
            a_lines = [(0.0, u0, strength), (u0 + w, float(world_cols), strength)]

    motion = Motion(
        resp_per_min=float(rng.uniform(12.0, 30.0)),
        resp_phase=float(rng.uniform()),
        insp_fraction=float(rng.uniform(0.35, 0.45)),
        slide_mm=slide_mm,
        keyframes=tuple(keyframes),
        jitter_mm=float(rng.uniform(0.15, 0.6)),
        jitter_seed=motion_seed,
    )
    return Scene(
        anatomy=anatomy,
        pleura_mm=pleura_mm,
        rib_phase_mm=float(rng.uniform(0.0, anatomy.rib_width_mm + anatomy.rib_gap_mm)),
        world_cols=world_cols,
        instances=tuple(instances),
        a_lines=tuple(a_lines),
        motion=motion,
        seed=int(rng.integers(2**31)),
        num_frames=num_frames,
        fps=fps,
    )
