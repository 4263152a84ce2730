"""The synthetic phantom: what is drawn matches the truth, determinism, the live source, the CLI.

Small frames (240 x 320) keep the file fast on a 2-core CPU.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from luvnet import cli
from luvnet.engine.data.manifest import read_manifest
from luvnet.engine.model.config import PATTERNS
from luvnet.plugins.phantom import Anatomy, Geometry, PhantomVideo
from luvnet.plugins.phantom.sampling import sample_scene
from luvnet.plugins.phantom.scene import a_line_profile, shadow_profile, truth_table
from luvnet.plugins.phantom.source import PhantomSource, open_phantom, parse_spec
from luvnet.streamer.frame_source import FrameSource, SourceEnded, SourceError, SourceOptions

SIZE = (240, 320)
ONLY = {p: False for p in PATTERNS}


def only(*patterns: str) -> dict[str, bool]:
    return {**ONLY, **{p: True for p in patterns}}


def grey_at(video: PhantomVideo, index: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Grey values of the scan-converted frame at polar (row, col) sample centres."""
    x, y = video.geometry.polar_to_xy(rows, cols)
    image = video.frame(index)[:, :, 0]
    return image[np.rint(y).astype(int), np.rint(x).astype(int)].astype(np.float64)


def lung_rows(video: PhantomVideo, index: int, top_mm: float, bottom_mm: float) -> np.ndarray:
    """Polar rows (in the frame, jitter included) between two depths below the pleura."""
    g, s = video.geometry, video.scene
    shift = video.motion.shift_y[index]
    lo = (s.pleura_mm + top_mm) * g.rows_per_mm + shift
    hi = min((s.pleura_mm + bottom_mm) * g.rows_per_mm + shift, g.rows - 2)
    return np.arange(int(np.ceil(lo)), int(hi))


def free_columns(video: PhantomVideo, index: int) -> np.ndarray:
    """Frame columns showing plain lung: unshadowed, away from every pattern instance."""
    g, s = video.geometry, video.scene
    cols = np.arange(g.cols)
    u = cols + video.motion.lung_x[index]
    free = shadow_profile(s, g) < 0.05
    for inst in s.instances:
        pad = 0.5 * inst.width + 2
        free &= (u < inst.u0 - pad) | (u > inst.u1 + pad)
    return cols[free]


# --- what is drawn matches the truth ------------------------------------------------------


def test_b_line_columns_are_brighter_than_their_neighbours_below_the_pleura():
    checked = 0
    for seed in range(6):
        video = PhantomVideo(seed, SIZE, num_frames=60, present=only("b_lines"))
        t = int(np.argmax(video.truth[:, PATTERNS.index("b_lines")]))
        if not video.truth[t, PATTERNS.index("b_lines")]:
            continue
        shade = shadow_profile(video.scene, video.geometry)
        free = free_columns(video, t)
        rows = lung_rows(video, t, 5.0, 200.0)
        for inst in video.scene.instances:
            if inst.kind != "b_line":
                continue
            centre = (inst.u0 + inst.u1) / 2 - video.motion.lung_x[t]
            c = int(round(centre))
            if not (0 <= c < video.geometry.cols) or shade[c] > 0.05:
                continue
            near = free[np.abs(free - centre) < 4 * inst.width]
            if len(near) < 3:
                continue
            r, cc = np.meshgrid(rows, [c])
            beam = grey_at(video, t, r.ravel(), cc.ravel()).mean()
            r, cc = np.meshgrid(rows, near)
            around = grey_at(video, t, r.ravel(), cc.ravel()).mean()
            assert beam > around + 25, f"B-line seed {seed}: beam {beam:.0f}, around {around:.0f}"
            checked += 1
    assert checked >= 3, f"expected at least 3 visible B-lines to check, found {checked}"


def test_effusion_is_darker_than_the_lung_around_it():
    checked = 0
    for seed in range(6):
        video = PhantomVideo(seed, SIZE, num_frames=60, present=only("pleural_effusion"))
        j = PATTERNS.index("pleural_effusion")
        if not video.truth[:, j].any():
            continue
        t = int(np.flatnonzero(video.truth[:, j])[0])
        (inst,) = video.scene.instances
        x = video.motion.lung_x[t]
        cols = np.arange(video.geometry.cols)
        core = (cols + x > inst.u0 + 0.3 * inst.width) & (cols + x < inst.u1 - 0.3 * inst.width)
        core &= shadow_profile(video.scene, video.geometry) < 0.05
        lung = free_columns(video, t)
        if core.sum() < 3 or len(lung) < 3:
            continue
        rows = lung_rows(video, t, 3.0, 13.0)  # the fluid is at least 15 mm deep
        fluid = grey_at(video, t, *[a.ravel() for a in np.meshgrid(rows, cols[core])])
        around = grey_at(video, t, *[a.ravel() for a in np.meshgrid(rows, lung)])
        assert np.median(fluid) + 10 < np.median(around), (
            f"effusion seed {seed}: fluid median {np.median(fluid):.0f}, "
            f"lung median {np.median(around):.0f}"
        )
        checked += 1
    assert checked >= 2, f"expected at least 2 effusions with lung beside them, found {checked}"


def _a_line_contrast(video: PhantomVideo, t: int) -> list[float]:
    """Per reverberation k = 2, 3: brightness at k x pleural depth minus half-way between."""
    g, s = video.geometry, video.scene
    cols = np.arange(g.cols)
    idx = np.clip(np.rint(cols + video.motion.lung_x[t]).astype(int), 0, s.world_cols - 1)
    use = shadow_profile(s, g) < 0.05
    if any(p > 0 for p in a_line_profile(s)):
        use &= a_line_profile(s)[idx] > 0
    profile = video.polar(t)[:, use].mean(axis=1)
    row = lambda depth_mm: depth_mm * g.rows_per_mm - 0.5 + video.motion.shift_y[t]  # noqa: E731
    out = []
    for k in (2, 3):
        r = row(k * s.pleura_mm)
        if r + 3 >= g.rows:
            break
        peak = profile[int(r) - 1 : int(r) + 3].max()
        between = profile[
            int(row((k - 0.5) * s.pleura_mm)) - 1 : int(row((k - 0.5) * s.pleura_mm)) + 2
        ]
        out.append(float(peak - between.mean()))
    return out


def test_a_lines_repeat_at_multiples_of_the_pleural_depth_and_only_when_labelled():
    positives, negatives = [], []
    for seed in range(4):
        video = PhantomVideo(seed, SIZE, num_frames=30, present=only("a_lines"), sweep=False)
        j = PATTERNS.index("a_lines")
        if video.truth[0, j]:
            positives += _a_line_contrast(video, 0)
        plain = PhantomVideo(seed, SIZE, num_frames=30, present=ONLY, sweep=False)
        assert not plain.truth.any(), "a scene with no patterns must be labelled all negative"
        negatives += _a_line_contrast(plain, 0)
    assert len(positives) >= 4, f"expected A-lines at 2P and 3P in most scenes, got {positives}"
    assert min(positives) > 12, f"A-line peaks over the gaps between them: {positives}"
    assert max(negatives) < min(positives), (
        f"without A-lines the same rows should be flat: {negatives} vs {positives}"
    )


def test_consolidation_is_tissue_like_under_the_pleura():
    checked = 0
    for seed in range(6):
        video = PhantomVideo(seed, SIZE, num_frames=60, present=only("consolidation"))
        j = PATTERNS.index("consolidation")
        if not video.truth[:, j].any():
            continue
        t = int(np.flatnonzero(video.truth[:, j])[len(np.flatnonzero(video.truth[:, j])) // 2])
        x = video.motion.lung_x[t]
        cols = np.arange(video.geometry.cols)
        shade = shadow_profile(video.scene, video.geometry)
        rows = lung_rows(video, t, 2.0, 5.0)
        lung = free_columns(video, t)
        for inst in video.scene.instances:
            core = (cols + x > inst.u0 + 0.35 * inst.width) & (
                cols + x < inst.u1 - 0.35 * inst.width
            )
            core &= shade < 0.05
            if core.sum() < 2 or len(lung) < 3:
                continue
            tissue = grey_at(video, t, *[a.ravel() for a in np.meshgrid(rows, cols[core])])
            around = grey_at(video, t, *[a.ravel() for a in np.meshgrid(rows, lung)])
            assert tissue.mean() > around.mean() + 20, (
                f"consolidation seed {seed}: tissue {tissue.mean():.0f}, lung {around.mean():.0f}"
            )
            assert tissue.std() > 4, f"expected speckled tissue, got std {tissue.std():.1f}"
            checked += 1
    assert checked >= 2, f"expected at least 2 visible consolidations to check, found {checked}"


def _widest_unshadowed(video: PhantomVideo) -> slice:
    free = np.concatenate([[False], shadow_profile(video.scene, video.geometry) < 0.05, [False]])
    edges = np.flatnonzero(np.diff(free.astype(np.int8)))
    starts, ends = edges[::2], edges[1::2]
    k = int(np.argmax(ends - starts))
    return slice(int(starts[k]), int(ends[k]))


@pytest.mark.parametrize("look", ["plain", "varied"])
def test_lung_slides_under_a_still_chest_wall_with_breathing(look):
    for seed in range(3):
        video = PhantomVideo(seed, SIZE, num_frames=90, present=ONLY, sweep=False, look=look)
        g, m = video.geometry, video.motion
        slide = m.lung_x - m.wall_x
        t = int(np.argmax(np.abs(slide - slide[0])))
        assert abs(slide[t] - slide[0]) > 3, f"seed {seed}: breathing barely moves the lung"
        cols = _widest_unshadowed(video)
        pleura = video.scene.pleura_mm * g.rows_per_mm
        wall = slice(int(pleura * 0.35), int(pleura - 2.5 * g.rows_per_mm))
        lung = slice(int(pleura + 3 * g.rows_per_mm), int(pleura + 25 * g.rows_per_mm))
        first, later = video.polar(0).astype(np.float32), video.polar(t).astype(np.float32)
        # The look's blur spreads the probe-fixed rib shadows into the free columns; they are
        # constant down the lung rows, so removing each column's mean leaves what moves.
        lung_first, lung_later = first[lung, cols], later[lung, cols]
        lung_first -= lung_first.mean(axis=0, keepdims=True)
        lung_later -= lung_later.mean(axis=0, keepdims=True)
        # Content moves opposite to the strip offset (the view reads further along the strip).
        moved_wall = cv2.phaseCorrelate(first[wall, cols], later[wall, cols])[0][0]
        moved_lung = cv2.phaseCorrelate(lung_first, lung_later)[0][0]
        want_wall, want_lung = m.wall_x[0] - m.wall_x[t], m.lung_x[0] - m.lung_x[t]
        assert abs(moved_wall - want_wall) < 1.5, (
            f"seed {seed}: wall {moved_wall:.1f} vs {want_wall:.1f}"
        )
        assert abs(moved_lung - want_lung) < 1.5, (
            f"seed {seed}: lung {moved_lung:.1f} vs {want_lung:.1f}"
        )


def test_every_pattern_is_both_present_and_absent_across_a_set():
    geometry = Geometry.for_size(*SIZE)
    tables = []
    for seed in range(40):
        rng = np.random.default_rng(seed)
        scene = sample_scene(rng, geometry, Anatomy.sample(rng), 150, 30.0)
        tables.append(truth_table(scene, geometry))
    frames = np.concatenate(tables)
    share = frames.mean(axis=0)
    for name, s in zip(PATTERNS, share, strict=True):
        assert 0.2 < s < 0.7, f"{name}: expected 20-70 % of frames positive, got {s:.0%}"
    mixed = np.array([[t[:, j].any() and not t[:, j].all() for j in range(4)] for t in tables])
    assert mixed.any(axis=1).mean() > 0.5, "most videos should show a pattern come or go"
    assert (frames.sum(axis=1) >= 2).mean() > 0.2, "patterns should co-occur"


# --- determinism ---------------------------------------------------------------------------


def test_same_seed_gives_the_same_bytes_in_any_order():
    a = PhantomVideo(11, SIZE, num_frames=20)
    b = PhantomVideo(11, SIZE, num_frames=20)
    later = b.frame(17)
    for i in (0, 9, 17):
        assert a.frame(i).tobytes() == (later if i == 17 else b.frame(i)).tobytes()
    assert np.array_equal(a.truth, b.truth)


def test_different_seeds_give_different_videos():
    a = PhantomVideo(11, SIZE, num_frames=5)
    b = PhantomVideo(12, SIZE, num_frames=5)
    assert a.scene != b.scene
    diff = np.abs(a.frame(0).astype(int) - b.frame(0).astype(int))
    assert diff[a.geometry.sector_mask].mean() > 5


def test_screen_is_static_and_the_fan_changes():
    video = PhantomVideo(3, SIZE, num_frames=30)
    frames = np.stack([video.frame(i) for i in range(0, 30, 3)])
    mask = video.geometry.sector_mask
    outside = frames[:, ~mask]
    assert (outside == outside[0]).all(), "scanner UI must not change over time"
    assert outside.max() > 100, "expected visible UI (ruler, text, logo) outside the fan"
    changing = (frames[:, mask] != frames[0, mask]).any(axis=0).mean()
    assert changing > 0.95, f"only {changing:.0%} of fan pixels change over a second"
    g = video.geometry
    assert g.apex_y < 0, "the convex probe's virtual apex is above the image"


# --- live source ---------------------------------------------------------------------------


def test_source_interface_budget_and_truth():
    source = open_phantom("5?frames=12", SourceOptions(realtime=False, size=SIZE))
    assert isinstance(source, FrameSource)
    assert source.fps == 30.0
    with pytest.raises(SourceError):
        source.read()
    source.open()
    for _ in range(12):
        frame = source.read()
        assert frame.image.shape == (*SIZE, 3) and frame.image.dtype == np.uint8
        assert list(frame.truth) == list(PATTERNS)
    with pytest.raises(SourceEnded):
        source.read()
    source.close()
    source.close()


def test_source_loops_its_budget_when_asked():
    source = PhantomSource(seed=2, size=SIZE, realtime=False, max_frames=4, loop=True)
    source.open()
    images = [source.read().image for _ in range(6)]
    source.close()
    assert images[4].tobytes() == images[0].tobytes()
    assert images[5].tobytes() == images[1].tobytes()


def test_live_scenes_change_and_the_screen_stays():
    source = PhantomSource(seed=1, size=SIZE, realtime=False)
    source.open()
    frames = [source.read() for _ in range(600)]  # 20 s: at least two scene changes
    source.close()
    scenes = [f.meta["scene"] for f in frames]
    assert scenes[-1] >= 2, f"expected new scenes every 4-9 s, got scenes {sorted(set(scenes))}"
    assert len({tuple(f.truth.values()) for f in frames}) > 1, "truth never changed"
    mask = Geometry.for_size(*SIZE).sector_mask
    assert (frames[0].image[~mask] == frames[-1].image[~mask]).all()


def test_realtime_source_is_paced():
    source = PhantomSource(seed=0, size=SIZE, fps=50.0, realtime=True, max_frames=11)
    source.open()
    source.read()
    start = time.monotonic()
    for _ in range(10):
        source.read()
    elapsed = time.monotonic() - start
    source.close()
    assert 0.15 < elapsed < 2.0, f"10 frames at 50 fps took {elapsed:.2f} s, expected ~0.2 s"


@pytest.mark.parametrize("spec", ["abc", "-1", "3?frames=", "3?fps=10", "3;4"])
def test_bad_spec_is_rejected(spec):
    with pytest.raises(ValueError, match="phantom spec"):
        parse_spec(spec)


def test_spec_forms():
    assert parse_spec("") == (0, None)
    assert parse_spec("42") == (42, None)
    assert parse_spec("7?frames=300") == (7, 300)


# --- luvnet phantom ------------------------------------------------------------------------


def test_cli_writes_videos_manifest_and_contact_sheet(tmp_path, capsys):
    out = tmp_path / "set"
    args = ["phantom", "--out", str(out), "--videos", "3", "--seconds", "1", "--seed", "4"]
    assert cli.main([*args, "--size", "240x320", "--videos-per-patient", "2"]) == 0
    assert "manifest.csv: 3 videos" in capsys.readouterr().out
    manifest = read_manifest(out / "manifest.csv")
    assert len(manifest) == 3
    assert manifest.patients() == ["phantom-4-0000", "phantom-4-0001"]
    for i, row in enumerate(manifest.rows):
        capture = cv2.VideoCapture(str(row.video))
        frames = []
        ok, image = capture.read()
        while ok:
            frames.append(image)
            ok, image = capture.read()
        capture.release()
        assert len(frames) == 30 and frames[0].shape == (240, 320, 3), row.video
        # Video i of seed K: documented seeding, so a reader can regenerate it.
        anatomy = Anatomy.sample(np.random.default_rng([4, 1, i // 2]))
        video = PhantomVideo([4, 2, i], SIZE, 30.0, 30, anatomy=anatomy)
        for j, name in enumerate(PATTERNS):
            labels = [row.labels[name].clip_label(f, f) for f in range(30)]
            assert labels == list(video.truth[:, j].astype(float)), f"{row.video} {name}"
        decoded_error = np.abs(frames[15].astype(int) - video.frame(15).astype(int)).mean()
        assert decoded_error < 8, f"{row.video}: decoded frame differs by {decoded_error:.1f}"
    sheet = cv2.imread(str(out / "contact_sheet.png"))
    assert sheet is not None and sheet.shape[0] > 240 and sheet.shape[1] >= 320


@pytest.mark.parametrize(
    "bad",
    [
        ["--size", "10x"],
        ["--size", "241x320"],
        ["--videos", "-3"],
        ["--seconds", "0"],
        ["--probes", "linear"],
        ["--look", "real"],
    ],
)
def test_cli_bad_arguments_give_one_line_and_exit_2(tmp_path, capsys, bad):
    code = cli.main(["phantom", "--out", str(tmp_path / "x"), *bad])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and bad[0] in err, err


def test_cli_entry_point_process(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "luvnet.cli", "phantom", "--out", str(tmp_path), "--size", "9x9"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("luvnet phantom: error: --size"), result.stderr


def test_size_below_minimum_is_an_error():
    with pytest.raises(ValueError, match="size"):
        PhantomVideo(0, (32, 32), num_frames=1)
    with pytest.raises(ValueError):
        PhantomSource(size=(32, 32))
