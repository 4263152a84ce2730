"""luvnet attention: curve arithmetic (docs/model.md, "Attention curves") and the PNG written
through the real CLI."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from luvnet.cli import main
from luvnet.engine.evaluation.attention_curves import clip_alpha, stitch
from luvnet.engine.evaluation.attention_plot import figure_size
from luvnet.engine.model.checkpoint import save_checkpoint
from luvnet.engine.model.config import PreprocessConfig
from luvnet.engine.model.network import build_luvnet
from tests.engine.tiny_data import make_dataset


def test_alpha_sums_heads_and_min_max_normalises_real_frames():
    attention = np.zeros((1, 2, 4, 2))
    attention[0, 0, :, 0] = [0.1, 0.2, 0.3, 0.4]
    attention[0, 0, :, 1] = [0.4, 0.3, 0.1, 0.2]  # head sums: 0.5, 0.5, 0.4, 0.6
    attention[0, 1, :, :] = 0.25  # constant: no frame stands out
    mask = np.array([[True, True, True, True]])
    raw, normalised = clip_alpha(attention, mask)
    np.testing.assert_allclose(raw[0, 0], [0.5, 0.5, 0.4, 0.6])
    np.testing.assert_allclose(normalised[0, 0], [0.5, 0.5, 0.0, 1.0])
    np.testing.assert_allclose(normalised[0, 1], 0.0)
    mask[0, 3] = False
    raw, normalised = clip_alpha(attention, mask)
    assert np.isnan(normalised[0, 0, 3]) and np.isnan(raw[0, 0, 3])
    np.testing.assert_allclose(normalised[0, 0, :3], [1.0, 1.0, 0.0])


def test_stitch_takes_each_frame_from_the_nearest_clip_centre():
    spans = [(0, 29), (24, 53), (48, 59)]
    k, length = len(spans), 30
    attention = np.zeros((k, 1, length, 1))
    for c in range(k):
        attention[c, 0, :, 0] = np.arange(length) + 100 * c  # clip c is recognisable
    mask = np.zeros((k, length), dtype=bool)
    for c, (a, b) in enumerate(spans):
        mask[c, : b - a + 1] = True
    curves = stitch(attention, mask, spans, np.zeros((k, 1)))
    assert curves.raw.shape == (1, 60)
    # Overlap 24..29: centres 14.5 and 38.5 -> frames up to 26 from clip 0, 27+ from clip 1.
    assert list(curves.source[24:30]) == [0, 0, 0, 1, 1, 1]
    assert list(curves.source[48:54]) == [2] * 6
    assert curves.raw[0, 27] == 100 + 3 and curves.raw[0, 50] == 200 + 2
    # Top frames by stitched normalised alpha: clip 2's last two (11/11, 10/11), then
    # clip 0's last frame kept by the stitching, 26 (26/29).
    assert curves.top_frames(0) == [59, 58, 26]


@pytest.fixture(scope="module")
def checkpoint_and_video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("attention")
    manifest = make_dataset(root / "videos", patients=1, videos_per_patient=1, frames=20)
    torch.manual_seed(0)
    model = build_luvnet("mobilenet_v3_small", kernel_size=3, fusion_hidden=32)
    config = model.config.replace(
        clip_length=8, clip_step=6, preprocess=PreprocessConfig(image_size=32)
    )
    save_checkpoint(model.eval(), root / "ckpt", config=config, provenance={})
    return root / "ckpt", root / "videos" / "p00_v0.mp4", manifest


@pytest.mark.parametrize("extra", [[], ["--clip", "1"], ["--manifest", "{manifest}"]])
def test_cli_writes_a_png_of_the_expected_size(checkpoint_and_video, tmp_path: Path, extra):
    ckpt, video, manifest = checkpoint_and_video
    out = tmp_path / "plot.png"
    extra = [e.format(manifest=manifest) for e in extra]
    argv = ["attention", "--checkpoint", str(ckpt), "--video", str(video), "--out", str(out)]
    assert main([*argv, *extra, "--device", "cpu"]) == 0
    image = cv2.imread(str(out))
    width, height = figure_size(4)
    assert image is not None and image.shape == (height, width, 3)
    # Not blank: curves, text and thumbnails put plenty of non-white pixels on it.
    assert (image < 200).any(axis=2).mean() > 0.02


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--clip", "9", "--clip: expected 0..2 for p00_v0.mp4 (20 frames, 3 clips), got 9"),
        ("--out", "{tmp}/plot.jpg", "expected a .png file name"),
        ("--manifest", "{tmp}/missing.csv", "no such manifest file"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(
    checkpoint_and_video, tmp_path: Path, capsys: pytest.CaptureFixture[str], flag, value, message
):
    ckpt, video, _ = checkpoint_and_video
    args = {"--checkpoint": str(ckpt), "--video": str(video), "--out": str(tmp_path / "p.png")}
    args[flag] = value.format(tmp=tmp_path)
    assert main(["attention", *(x for pair in args.items() for x in pair)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("luvnet attention: error: "), err
    assert message in err, err


def test_video_missing_from_the_manifest_is_named(checkpoint_and_video, tmp_path: Path, capsys):
    ckpt, video, _ = checkpoint_and_video
    other = make_dataset(tmp_path / "other", patients=1, videos_per_patient=1, frames=8)
    argv = ["attention", "--checkpoint", str(ckpt), "--video", str(video)]
    argv += ["--out", str(tmp_path / "p.png"), "--manifest", str(other)]
    assert main(argv) == 2
    assert f"no row for video {video}" in capsys.readouterr().err
