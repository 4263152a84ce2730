"""The phantom's looks and probes: sampled probes keep the truth, varied looks never show what
the truth hides, the plain look and the paper's probe stay as they were."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from luvnet import cli
from luvnet.engine.data.manifest import read_manifest
from luvnet.engine.model.config import PATTERNS
from luvnet.plugins.phantom import PAPER_PROBE, Anatomy, Geometry, PhantomVideo, Probe
from luvnet.plugins.phantom.geometry import NATIVE_SIZE
from luvnet.plugins.phantom.look import Look
from luvnet.plugins.phantom.scene import shadow_profile
from tests.plugins.test_phantom import SIZE, free_columns, grey_at, lung_rows, only


def test_cli_varied_probes_scan_each_patient_with_its_own_probe(tmp_path):
    out = tmp_path / "set"
    args = ["phantom", "--out", str(out), "--videos", "4", "--seconds", "0.5", "--seed", "5"]
    options = ["--size", "240x320", "--videos-per-patient", "2", "--probes", "varied"]
    assert cli.main([*args, *options, "--look", "varied"]) == 0
    manifest = read_manifest(out / "manifest.csv")
    boxes = []
    for i, row in enumerate(manifest.rows):
        probe = Probe.sample(np.random.default_rng([5, 3, i // 2]))
        anatomy = Anatomy.sample(np.random.default_rng([5, 1, i // 2]))
        video = PhantomVideo([5, 2, i], SIZE, 30.0, 15, anatomy=anatomy, probe=probe, look="varied")
        x0, y0, x1, y1 = video.geometry.fan_box
        assert 0 <= x0 < x1 <= SIZE[1] and 0 <= y0 < y1 <= SIZE[0], f"{row.video}: fan leaves"
        boxes.append(video.geometry.fan_box)
        for j, name in enumerate(PATTERNS):
            labels = [row.labels[name].clip_label(f, f) for f in range(15)]
            assert labels == list(video.truth[:, j].astype(float)), f"{row.video} {name}"
        capture = cv2.VideoCapture(str(row.video))
        ok, first = capture.read()
        capture.release()
        assert ok
        error = np.abs(first.astype(int) - video.frame(0).astype(int)).mean()
        assert error < 8, f"{row.video}: decoded frame differs by {error:.1f}"
    assert boxes[0] == boxes[1] and boxes[2] == boxes[3], "a patient's videos share one probe"
    assert boxes[0] != boxes[2] and boxes[0] != Geometry.for_size(*SIZE, PAPER_PROBE).fan_box


def test_a_varied_look_keeps_its_draws_in_their_order():
    """Every varied set made since the look existed regenerates: the removed lung texture's
    draw is still taken, between the lung's gain and the B-lines' brightness."""
    for seed in range(3):
        rng = np.random.default_rng([seed, 2])
        lift, _texture, b_gain, b_edge, a_gain, fill, squeeze, blur = (
            rng.uniform(lo, hi)
            for lo, hi in [
                (0, 20),
                (0, 14),
                (0.35, 1),
                (2, 4),
                (0.45, 1),
                (0, 30),
                (0.65, 1),
                (0, 1.2),
            ]
        )
        expect = Look(lift, b_gain, b_edge, a_gain, fill, squeeze, blur)
        assert Look.for_scene("varied", seed) == expect, f"seed {seed}"


def test_a_varied_look_and_probe_are_deterministic_and_change_the_pixels():
    shown = only("b_lines", "consolidation")
    for seed in range(3):
        probe = Probe.sample(np.random.default_rng([seed, 3]))
        plain = PhantomVideo(seed, SIZE, num_frames=20, present=shown)
        varied = PhantomVideo(seed, SIZE, num_frames=20, present=shown, look="varied")
        again = PhantomVideo(seed, SIZE, num_frames=20, present=shown, look="varied", probe=probe)
        twice = PhantomVideo(seed, SIZE, num_frames=20, present=shown, look="varied", probe=probe)
        assert np.abs(plain.frame(10).astype(int) - varied.frame(10).astype(int)).mean() > 1
        assert np.array_equal(again.frame(10), twice.frame(10)), f"seed {seed}"
    with pytest.raises(ValueError, match="look: expected one of plain, varied"):
        PhantomVideo(0, SIZE, num_frames=2, look="real")


@pytest.mark.parametrize("seed", range(4))
def test_a_sampled_probe_keeps_b_lines_visible_and_true(seed):
    """Truth and drawing agree for the other probes too: a forced B-line shows where the
    truth says, brighter than the lung beside it."""
    probe = Probe.sample(np.random.default_rng([seed, 3]))
    video = PhantomVideo(
        seed, SIZE, num_frames=30, present=only("b_lines"), probe=probe, look="varied"
    )
    g = video.geometry
    x0, y0, x1, y1 = g.fan_box
    assert min(x0, y0) >= 0 and x1 <= SIZE[1] and y1 <= SIZE[0] and g.cols > 20
    assert 0.75 < (x1 - x0) / (y1 - y0) < 1.4, f"seed {seed}: fan box {g.fan_box}"
    j = PATTERNS.index("b_lines")
    if not video.truth[:, j].any():
        pytest.skip(f"seed {seed}: the forced B-lines hide behind ribs in every frame")
    t = int(np.flatnonzero(video.truth[:, j])[0])
    rows = lung_rows(video, t, 5.0, 60.0)
    cols = np.arange(g.cols)
    u = cols + video.motion.lung_x[t]
    beams = np.zeros(g.cols, dtype=bool)
    for inst in video.scene.instances:
        beams |= (u > inst.u0 + 0.25 * inst.width) & (u < inst.u1 - 0.25 * inst.width)
    beams &= shadow_profile(video.scene, g) < 0.05
    free = free_columns(video, t)
    assert beams.any() and len(free) >= 3
    beam = grey_at(video, t, *[a.ravel() for a in np.meshgrid(rows, cols[beams])]).mean()
    around = grey_at(video, t, *[a.ravel() for a in np.meshgrid(rows, free)]).mean()
    assert beam > around + 10, f"seed {seed}: beam {beam:.0f}, around {around:.0f}"


@pytest.mark.parametrize("seed", range(8))
def test_rib_shadows_hide_what_the_truth_hides_under_a_varied_look(seed):
    """A rib passes no echo: under a varied look a shadow is a flat fill plus noise, never a
    B-line the truth counts as hidden."""
    probe = Probe.sample(np.random.default_rng([seed, 3]))
    video = PhantomVideo(
        seed, SIZE, num_frames=1, present=only("b_lines"), probe=probe, look="varied"
    )
    g = video.geometry
    fill = Look.for_scene("varied", video.scene.seed).shadow_fill
    core = shadow_profile(video.scene, g) > 0.999
    core &= np.convolve(core, np.ones(5), "same") == 5  # away from the penumbra and the blur
    u = np.arange(g.cols) + video.motion.lung_x[0]
    hidden = np.zeros(g.cols, dtype=bool)
    for inst in video.scene.instances:
        hidden |= (u > inst.u0) & (u < inst.u1)
    rows = lung_rows(video, 0, 3.0, 40.0)
    polar = video.polar(0).astype(np.float64)
    assert core.any()
    for cols in (core & hidden, core & ~hidden):
        if cols.any():
            grey = polar[np.ix_(rows, np.flatnonzero(cols))].mean()
            assert grey < fill + 25, f"seed {seed}: shadow {grey:.0f}, fill {fill:.0f}"


def test_the_paper_layout_keeps_its_scale_at_every_size():
    """The screen is drawn from ``scale``; it must be the paper-only layout's, to the bit."""
    for height in range(64, 1000, 37):
        for width in range(64, 1300, 53):
            g = Geometry.for_size(height, width)
            assert g.scale == (g.r_far - g.r_near) / 830.0, (height, width)
    assert Geometry.for_size(*NATIVE_SIZE).scale == 1.0


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"half_angle_deg": 0.0}, "probe: half_angle_deg out of range, got 0.0"),
        ({"depth_px": 2000.0}, "probe: depth_px out of range, got 2000.0"),
        ({"radius_px": 900.0}, "probe: the fan is 1624 px wide, the layout 1232"),
    ],
)
def test_a_probe_that_cannot_be_drawn_is_one_line(fields, message):
    with pytest.raises(ValueError) as caught:
        Probe(**fields)
    assert str(caught.value) == message
