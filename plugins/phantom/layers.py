"""Image formation, done once per scene: the textured strips the renderer slides per frame.

Built in displayed grey levels (log-compressed dB, so echogenicity, speckle and attenuation
add). Two strips move with the body: the chest wall (skin, fat, muscle, fascia) and everything
from the pleura down (pleural line, A-lines, lung haze, B-lines, consolidations, effusions),
which also slides with breathing. Three probe-fixed layers follow: attenuation plus rib
shadows (subtracted), rib surfaces (added) and a noise floor bank (a random window of it is
max-ed in per frame, so even shadows flicker like a live scanner's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from luvnet.plugins.phantom.geometry import Geometry
from luvnet.plugins.phantom.look import SQUEEZE_MID, Look
from luvnet.plugins.phantom.scene import EFFUSION_EDGE_PAD, Instance, Scene, a_line_profile, ribs
from luvnet.plugins.phantom.speckle import smooth_field, smooth_noise, speckle_db

NOISE_PAD = 6  # the noise bank is this much larger than the view on every side


@dataclass(frozen=True)
class Layers:
    wall: np.ndarray  # uint8 (wall rows, world cols); array row i is body row i - margin
    lung: np.ndarray  # uint8 (rows + 2 * margin, world cols); same row convention
    margin: int  # extra rows above and below for vertical jitter
    split: float  # body row where the lung strip takes over (just above the pleural line)
    sub: np.ndarray  # uint8 (rows, cols), probe-fixed: attenuation and rib shadows
    add: np.ndarray  # uint8 (rows, cols), probe-fixed: rib surfaces
    noise: np.ndarray  # uint8 (rows + 2 * NOISE_PAD, cols + 2 * NOISE_PAD)


@dataclass(frozen=True)
class _Grid:
    """Sampling of the strips: depth (mm) per array row, scales, shared textures."""

    geometry: Geometry
    scene: Scene
    look: Look
    margin: int
    rpm: float  # rows per mm
    cpm: float  # world columns per mm at the pleura
    sig_r: float  # speckle PSF sigmas in samples
    sig_c: float

    def depth(self, n_rows: int) -> np.ndarray:
        """(n_rows, 1) depth in mm of each array row."""
        return ((np.arange(n_rows, dtype=np.float32) - self.margin + 0.5) / self.rpm)[:, None]

    def mm_rows(self, mm: float) -> float:
        return mm * self.rpm

    def row_of(self, depth_mm: float) -> float:
        """Array row (fractional) of a depth."""
        return depth_mm * self.rpm - 0.5 + self.margin


def attenuation(anatomy_att: float, depth_mm: np.ndarray, total_mm: float) -> np.ndarray:
    """Grey lost at each depth after time-gain compensation."""
    return anatomy_att * np.power(np.clip(depth_mm / total_mm, 0, None), 1.3)


def _gauss(x: np.ndarray, sigma: float) -> np.ndarray:
    return np.exp(-0.5 * (x / max(sigma, 1e-3)) ** 2)


def _blend(dst: np.ndarray, src: np.ndarray | float, weight: np.ndarray) -> None:
    """dst <- dst * (1 - weight) + src * weight, in place."""
    dst += (src - dst) * weight


def _soft(mask: np.ndarray, sigma: float) -> np.ndarray:
    m = mask.astype(np.float32)
    if sigma < 0.3:
        return m
    return cv2.GaussianBlur(m, (0, 0), sigmaX=sigma, sigmaY=sigma)


def _band(u0: float, u1: float, world_cols: int) -> tuple[int, int]:
    return max(int(math.floor(u0)), 0), min(int(math.ceil(u1)) + 1, world_cols)


def _wall(g: _Grid, rng: np.random.Generator, split: float) -> np.ndarray:
    a, s = g.scene.anatomy, g.scene
    n_rows = int(math.ceil(split)) + 2 * g.margin + 4
    cols = s.world_cols
    d = g.depth(n_rows)
    wave = g.cpm * 12.0  # boundaries undulate over ~1 cm

    def boundary(depth_mm: float) -> np.ndarray:
        return depth_mm + 0.5 * smooth_noise(rng, cols, wave)[None, :]

    skin_end = boundary(a.skin_mm)
    fat_end = boundary(a.skin_mm + a.fat_mm)
    fat_end = np.minimum(fat_end, s.pleura_mm - 3.0)
    level = np.full((n_rows, cols), a.wall_level, dtype=np.float32)
    level = np.where(d < fat_end, a.wall_level * 0.55, level)
    level = np.where(d < skin_end, 100.0, level)
    level += 90.0 * np.exp(-np.clip(d, 0, None) / 0.9)  # near-field ring-down under the probe face
    level -= 12.0 * ((d > s.pleura_mm - 2.0) & (d < s.pleura_mm))  # extrapleural fat
    # Fascia between muscle layers: thin bright wavy lines.
    top = a.skin_mm + a.fat_mm + 1.5
    for _ in range(int(rng.integers(1, 4))):
        if s.pleura_mm - 2.5 <= top:
            break
        fd = boundary(float(rng.uniform(top, s.pleura_mm - 2.5)))
        level += float(rng.uniform(40, 80)) * _gauss(d - fd, 0.35)
    # Fat septa: short oblique bright strokes.
    septa = np.zeros_like(level)
    for _ in range(int(cols / (g.cpm * 6) + 1)):
        u = rng.uniform(0, cols)
        r = g.row_of(rng.uniform(a.skin_mm, a.skin_mm + a.fat_mm))
        du, dr = g.cpm * rng.uniform(1.5, 5.0), g.mm_rows(rng.uniform(-0.6, 0.6))
        p0, p1 = (int(u - du), int(r - dr)), (int(u + du), int(r + dr))
        cv2.line(septa, p0, p1, float(rng.uniform(30, 70)), 1, cv2.LINE_AA)
    level += np.where(d < fat_end, septa, 0)
    tissue = speckle_db(rng, level.shape, g.sig_r, g.sig_c)
    striation = smooth_field(rng, level.shape, g.sig_r * 1.5, g.sig_c * 5.0)
    level += 0.8 * a.contrast * tissue + 10.0 * striation * (d > fat_end)
    return level


def _pleura_and_haze(g: _Grid, rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    a, s = g.scene.anatomy, g.scene
    d = g.depth(shape[0])
    below = d - s.pleura_mm
    haze0, fade, floor = rng.uniform(25, 45), rng.uniform(25, 50), rng.uniform(20, 34)
    haze = np.where(below > 0, haze0 * np.exp(-below / fade) + floor, a.wall_level - 12.0)
    lung = np.broadcast_to(haze, shape).astype(np.float32)
    lung_speckle = speckle_db(rng, shape, g.sig_r * 1.1, g.sig_c)
    lung += a.contrast * lung_speckle
    # The lung field's gain. No extra reverberation texture: laterally smeared, it drew faint
    # A-lines where the truth has none and hid real ones (docs/results.md, try 10).
    lung += (below > 0) * g.look.lung_lift

    # The pleural line and its reverberations (A-lines) share one lateral texture.
    sigma = max(g.mm_rows(float(rng.uniform(0.6, 1.0))), 0.7)
    amp = float(rng.uniform(120, 190))
    texture = 1.0 + 0.15 * smooth_noise(rng, shape[1], 1.5 * g.cpm)[None, :]
    grain = smooth_field(rng, shape, max(sigma * 0.6, 0.3), 0.8 * g.cpm)
    strength: np.ndarray = a_line_profile(s).astype(np.float32)
    strength = cv2.GaussianBlur(strength[None, :], (0, 0), sigmaX=max(1.0, 1.5 * g.cpm))
    decay = float(rng.uniform(0.65, 0.85))
    k = 1
    while k * s.pleura_mm < g.geometry.depth_mm + 3:
        sig_k = sigma * (1 + 0.3 * (k - 1))  # later echoes blur
        centre = g.row_of(k * s.pleura_mm)
        r0, r1 = max(int(centre - 4 * sig_k), 0), min(int(centre + 4 * sig_k) + 2, shape[0])
        if r1 > r0:
            rows = np.arange(r0, r1, dtype=np.float32)[:, None]
            profile = _gauss(rows - centre, sig_k)
            weight = 1.0 if k == 1 else g.look.a_line_gain * decay ** (k - 2) * strength
            line = amp * profile * weight * (texture + 0.12 * grain[r0:r1])
            lung[r0:r1] += line
        k += 1
    return lung


def _effusion(g: _Grid, lung: np.ndarray, inst: Instance, rng: np.random.Generator) -> None:
    a, s = g.scene.anatomy, g.scene
    w = inst.width
    pad = EFFUSION_EDGE_PAD * w
    c0, c1 = _band(inst.u0 - pad - 4, inst.u1 + pad + 4, s.world_cols)
    if c1 <= c0:
        return
    u = np.arange(c0, c1, dtype=np.float32)[None, :]
    d = g.depth(lung.shape[0])
    x = (u - (inst.u0 + inst.u1) / 2) / w
    # Diaphragm: a tilted dome, slightly irregular.
    diaphragm = (
        inst.depth_mm
        + float(rng.uniform(-15, 15)) * x
        - float(rng.uniform(8, 22)) * (1 - (x / 0.7) ** 2)
        + 0.5 * smooth_noise(rng, c1 - c0, 3 * g.cpm)[None, :]
    )
    diaphragm = np.clip(diaphragm, s.pleura_mm + 15.0, 0.95 * g.geometry.depth_mm)
    # Side edges (the aerated lung around the fluid): bowed, wobbly, within ``pad``.
    mid = (s.pleura_mm + inst.depth_mm) / 2
    half = max((inst.depth_mm - s.pleura_mm) / 2, 1.0)
    dn = np.clip((d - mid) / half, -1.5, 1.5)

    def edge(u_mid: float) -> np.ndarray:
        slope, bow = rng.uniform(-0.6, 0.6, size=2) * pad
        wobble = 0.1 * pad * smooth_noise(rng, d.shape[0], g.mm_rows(6.0))[:, None]
        return u_mid + slope * dn + bow * (dn**2 - 0.5) + wobble

    left, right = edge(inst.u0), edge(inst.u1)
    fluid = (u > left) & (u < right) & (d > s.pleura_mm + 0.6) & (d < diaphragm)
    region = lung[:, c0:c1]
    speck = speckle_db(rng, region.shape, g.sig_r, g.sig_c)

    # Liver (or spleen) under the diaphragm, in the columns where fluid reaches it; brighter
    # than usual because fluid attenuates little.
    reach = (fluid & (d > diaphragm - 3.0)).any(axis=0, keepdims=True)
    liver_cols = _soft(np.repeat(reach, 3, axis=0), 1.5 * g.cpm)[1:2]
    liver = (d > diaphragm) * liver_cols
    liver_level = float(rng.uniform(65, 100)) + a.contrast * speck
    vessels = np.zeros(region.shape, np.float32)
    for _ in range(int(rng.integers(1, 4))):
        cu = float(rng.uniform(0.2, 0.8) * (c1 - c0))
        top = float(diaphragm[0, int(cu)])
        if top + 12 > g.geometry.depth_mm:
            continue
        cd = g.row_of(float(rng.uniform(top + 8, min(top + 40, g.geometry.depth_mm - 3))))
        axes = (rng.uniform(1.5, 4.0) * g.cpm, g.mm_rows(float(rng.uniform(1.5, 3.5))))
        box = ((cu, cd), (2 * axes[0], 2 * axes[1]), float(rng.uniform(0, 180)))
        cv2.ellipse(vessels, box, 1.0, -1, cv2.LINE_AA)
    vessels = _soft(vessels, 1.0)
    _blend(region, liver_level, _soft(liver, 1.0))
    _blend(region, float(rng.uniform(15, 30)) + 0.5 * a.contrast * speck, 0.9 * vessels * liver)
    _blend(region, float(rng.uniform(-8, 3)) + 0.3 * a.contrast * speck, _soft(fluid, 1.0))

    # Floating lung: a tongue of collapsed lung reaching into the fluid from one side.
    if rng.random() < 0.75:
        side = 1.0 if rng.random() < 0.5 else -1.0
        depth_a = s.pleura_mm + float(rng.uniform(0.3, 0.6)) * (inst.depth_mm - s.pleura_mm)
        base = left if side > 0 else right
        length = float(rng.uniform(0.3, 0.6)) * w
        xt = side * (u - base) / length
        droop = float(rng.uniform(-0.1, 0.3)) * length / g.cpm
        centre = depth_a + droop * np.clip(xt, 0, 1) ** 2
        thick = float(rng.uniform(4.0, 9.0))
        outline = 1 + 0.15 * smooth_noise(rng, c1 - c0, 2 * g.cpm)[None, :]
        half_t = thick * outline * np.clip(1 - np.clip(xt, 0, None) ** 2, 0, 1) ** 0.6
        dist = np.abs(d - centre) - half_t  # < 0 inside the tongue
        near = (xt > -0.3) & (xt < 1.0) & fluid
        _blend(
            region, float(rng.uniform(60, 100)) + a.contrast * speck, _soft((dist < 0) & near, 0.8)
        )
        region += float(rng.uniform(25, 55)) * _gauss(dist, 0.4) * near

    # Bright lines: the diaphragm and the surfaces of the aerated lung at the sides.
    amp = float(rng.uniform(150, 220)) * (0.6 + 0.4 * inst.strength)
    region += amp * _gauss(d - diaphragm, 1.2) * liver_cols
    depth_ok = (d > s.pleura_mm) & (d < diaphragm)
    for e in (left, right):
        region += float(rng.uniform(25, 70)) * _gauss(u - e, 0.7 * g.cpm) * depth_ok


def _consolidation(g: _Grid, lung: np.ndarray, inst: Instance, rng: np.random.Generator) -> None:
    a, s = g.scene.anatomy, g.scene
    c0, c1 = _band(inst.u0 - 3, inst.u1 + 3, s.world_cols)
    if c1 <= c0:
        return
    u = np.arange(c0, c1, dtype=np.float32)
    x = np.clip((u - inst.u0) / inst.width, 0, 1)
    n = c1 - c0
    # Outline: a lobulated bump whose deep border is ragged (the "shred" sign).
    lobes = 1 + 0.15 * smooth_noise(rng, n, 0.2 * inst.width)
    shape = np.clip(np.sin(np.pi * x), 0, 1) ** 0.4 * lobes
    jag = float(rng.uniform(2.0, 4.0)) * smooth_noise(rng, n, 1.6 * g.cpm)
    reach = min(inst.depth_mm, 0.7 * inst.width / g.cpm)  # wider than deep
    depth = np.clip(reach * shape + jag * np.clip(shape * 3, 0, 1), 0, None)[None, :]
    d = g.depth(lung.shape[0])
    below = d - s.pleura_mm
    region = lung[:, c0:c1]
    inside = (below > 0.5) & (below < depth)
    speck = speckle_db(rng, region.shape, g.sig_r, g.sig_c)
    patchy = 12.0 * smooth_field(rng, region.shape, g.mm_rows(2.5), 2.5 * g.cpm)
    tissue = float(rng.uniform(70, 100)) + 30 * inst.strength + a.contrast * speck + patchy
    tissue += g.look.lung_lift  # the same gain as the lung around it
    # Dirty lung behind the shred line: short comet tails that fade within a centimetre.
    for _ in range(int(rng.integers(0, 4))):
        uc = rng.uniform(0, n)
        start = depth[0, int(np.clip(uc, 0, n - 1))]
        tail = _gauss(u[None, :] - c0 - uc, 0.7 * g.cpm) * (below > start)
        region += float(rng.uniform(30, 70)) * tail * np.exp(-np.clip(below - start, 0, None) / 6.0)
    _blend(region, tissue, _soft(inside, 0.8))
    shred = float(rng.uniform(40, 90)) * (0.6 + 0.4 * smooth_noise(rng, n, g.cpm)[None, :])
    region += shred * _gauss(below - depth, 0.6) * (depth > 1.0)
    # Air bronchograms: bright dots and short tubular streaks inside the tissue.
    specks = np.zeros_like(region)
    area_mm2 = float(np.sum(depth)) / g.cpm
    for _ in range(int(np.clip(area_mm2 / rng.uniform(20, 50), 2, 25))):
        cu = float(rng.uniform(0.1, 0.9) * (inst.u1 - inst.u0) + inst.u0 - c0)
        lim = float(depth[0, int(np.clip(cu, 0, n - 1))])
        if lim < 4.0:
            continue
        cd = s.pleura_mm + float(rng.uniform(2.0, lim - 1.5))
        angle = float(rng.uniform(0, 360))
        level = float(rng.uniform(60, 120))
        for _ in range(1 + int(rng.random() < 0.4) * int(rng.integers(1, 3))):
            length = float(rng.uniform(0.4, 1.5))  # half-length, mm
            thick = float(rng.uniform(0.35, 0.7))
            centre = (cu, g.row_of(cd))
            axes = (2 * max(length * g.cpm, 0.8), 2 * max(g.mm_rows(thick), 0.8))
            # The angle is drawn in sample space, where a column and a row differ in mm;
            # good enough for specks of random orientation.
            cv2.ellipse(specks, (centre, axes, angle), level, -1, cv2.LINE_AA)
            cu += math.cos(math.radians(angle)) * 2.2 * length * g.cpm
            cd += math.sin(math.radians(angle)) * 2.2 * length
    region += _soft(specks, 0.7) * inside


def _b_line(g: _Grid, lung: np.ndarray, inst: Instance, rng: np.random.Generator) -> None:
    a, s = g.scene.anatomy, g.scene
    w = inst.width
    c0, c1 = _band(inst.u0 - w, inst.u1 + w, s.world_cols)
    if c1 <= c0:
        return
    u = np.arange(c0, c1, dtype=np.float32)[None, :]
    uc = (inst.u0 + inst.u1) / 2
    if inst.kind == "confluent":
        edge = max(1.5 * g.cpm, 1.0)
        rise = np.clip(4 * (u - inst.u0) / edge, -30, 30)
        fall = np.clip(4 * (inst.u1 - u) / edge, -30, 30)
        box = 1 / (1 + np.exp(-rise)) / (1 + np.exp(-fall))
        ripple = 0.75 + 0.25 * smooth_noise(rng, c1 - c0, 2 * g.cpm)[None, :]
        profile = np.clip(box * ripple, 0, 1)
        level = 90.0 + 80.0 * inst.strength
    else:
        profile = np.exp(-math.log(2) * np.abs(2 * (u - uc) / w) ** g.look.b_line_edge)
        level = 110.0 + 100.0 * inst.strength
    # Real B-lines range from faint bands to bright beams over the lung around them.
    level += g.look.lung_lift + (g.look.b_line_gain - 1.0) * (level - SQUEEZE_MID)
    d = g.depth(lung.shape[0])
    onset = np.clip((d - s.pleura_mm + 0.3) / 0.8, 0, 1)
    region = lung[:, c0:c1]
    streak = smooth_field(rng, region.shape, g.mm_rows(3.0), max(0.35 * g.cpm, 0.3))
    speck = speckle_db(rng, region.shape, g.sig_r, g.sig_c)
    comp = float(rng.uniform(0.6, 0.95))  # B-lines barely fade: compensate most attenuation
    fade = attenuation(a.attenuation, d, g.geometry.depth_mm)
    beam = level * (1 + 0.18 * streak) + comp * fade + 0.4 * a.contrast * speck
    _blend(region, beam, float(rng.uniform(0.85, 1.0)) * profile * onset)


def _probe_fixed(g: _Grid, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    geo, s = g.geometry, g.scene
    depth = (np.arange(geo.rows, dtype=np.float32) + 0.5) / g.rpm
    sub = np.repeat(attenuation(s.anatomy.attenuation, depth, geo.depth_mm)[:, None], geo.cols, 1)
    add = np.zeros_like(sub)
    c = np.arange(geo.cols, dtype=np.float32)[None, :]
    d = depth[:, None]
    edge = max(1.0, 2.0 * g.cpm)
    top = s.pleura_mm - s.anatomy.rib_rise_mm
    for centre, width in ribs(s, geo):
        x = (c - centre) / (width / 2)
        lateral = np.clip((width / 2 - np.abs(c - centre)) / edge + 0.5, 0, 1)
        surface = top + 1.5 * np.clip(x, -1.2, 1.2) ** 2  # rounded rib, convex towards the probe
        shade = lateral * np.clip((d - surface - 0.6) / 1.2, 0, 1)
        sub += 255.0 * shade  # a rib passes no echo: the truth counts its shadow as hidden
        add += g.look.shadow_fill * shade
        cortex = float(rng.uniform(140, 200)) * (0.85 + 0.15 * smooth_noise(rng, geo.cols, g.cpm))
        add += cortex * lateral * _gauss(d - surface, 0.6)
    return sub, add


def _noise_bank(g: _Grid, rng: np.random.Generator) -> np.ndarray:
    geo = g.geometry
    shape = (geo.rows + 2 * NOISE_PAD, geo.cols + 2 * NOISE_PAD)
    level = float(rng.uniform(3.0, 8.0))
    rayleigh: np.ndarray = np.sqrt(-2.0 * np.log(rng.uniform(1e-6, 1.0, size=shape))).astype(
        np.float32
    )
    rayleigh = cv2.GaussianBlur(rayleigh, (0, 0), sigmaX=max(g.sig_c * 0.6, 0.3), sigmaY=0.3)
    return np.clip(level * rayleigh * 1.4, 0, 255).astype(np.uint8)


def build_layers(scene: Scene, geometry: Geometry) -> Layers:
    rng = np.random.default_rng(scene.seed)
    rpm = geometry.rows_per_mm
    cpm = geometry.cols_per_mm(scene.pleura_mm)
    margin = int(math.ceil(2.5 * scene.motion.jitter_mm * rpm)) + 2
    g = _Grid(
        geometry=geometry,
        scene=scene,
        look=Look.for_scene(scene.look, scene.seed),
        margin=margin,
        rpm=rpm,
        cpm=cpm,
        sig_r=0.3 * scene.anatomy.speckle_mm * rpm,
        sig_c=0.6 * scene.anatomy.speckle_mm * cpm,
    )
    split = scene.pleura_mm * rpm - 0.5 - max(2.2 * rpm, 1.4)  # above the pleural line
    wall = _wall(g, rng, split)
    lung = _pleura_and_haze(g, rng, (geometry.rows + 2 * margin, scene.world_cols))
    order = {"consolidation": 0, "effusion": 1, "confluent": 2, "b_line": 3}
    for inst in sorted(scene.instances, key=lambda i: order[i.kind]):
        draw = {"consolidation": _consolidation, "effusion": _effusion}.get(inst.kind, _b_line)
        draw(g, lung, inst, np.random.default_rng(inst.seed))
    sub, add = _probe_fixed(g, rng)
    gain = scene.anatomy.gain
    return Layers(
        wall=g.look.to_u8(wall, rpm, cpm, gain, squeeze=True),
        lung=g.look.to_u8(lung, rpm, cpm, gain, squeeze=True),
        margin=margin,
        split=float(split),
        sub=g.look.to_u8(sub, rpm, cpm),
        add=g.look.to_u8(add, rpm, cpm),
        noise=_noise_bank(g, rng),
    )
