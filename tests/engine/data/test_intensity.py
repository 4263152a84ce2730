"""Per-frame intensity normalisation inside the sector (issue 13): one implementation in
``normalize``, recorded in the checkpoint, off for older configs, chosen by ``luvnet train``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from luvnet.cli import main
from luvnet.engine.data.preprocess import (
    SECTOR_FLOOR,
    SECTOR_MEAN,
    SECTOR_STD,
    normalize,
    sector_standardize,
)
from luvnet.engine.model.checkpoint import load_checkpoint
from luvnet.engine.model.config import ModelConfig, PreprocessConfig
from tests.engine.tiny_data import TINY_TRAIN_ARGS, make_dataset


def _fan(rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """A grey frame: speckle in a disc (the sector), black around it, a dark shadow inside."""
    yy, xx = np.mgrid[:size, :size]
    inside = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (0.45 * size) ** 2
    frame = np.where(inside, rng.uniform(20, 120, (size, size)), 0.0)
    frame[size // 2 - 2 : size // 2 + 2] = np.where(inside[size // 2 - 2 : size // 2 + 2], 1, 0)
    return frame.astype(np.float32)


def test_sector_pixels_get_one_mean_and_std_and_the_rest_stays_black() -> None:
    grey = torch.from_numpy(np.stack([_fan(np.random.default_rng(s)) for s in range(3)]))
    out = sector_standardize(grey)
    for frame, result in zip(grey, out, strict=True):
        inside = frame >= SECTOR_FLOOR
        vals = result[inside]
        assert abs(float(vals.mean()) - SECTOR_MEAN) < 1.0, float(vals.mean())
        assert abs(float(vals.std(unbiased=False)) - SECTOR_STD) < 1.5, float(vals.std())
        assert float(result[~inside].abs().max()) == 0.0


def test_gain_and_contrast_of_a_frame_no_longer_matter() -> None:
    """The same anatomy at another gain and dynamic range (x -> 0.6 x + 25 inside the sector)
    comes out the same, while without the normalisation it differs by tens of grey levels."""
    frame = torch.from_numpy(_fan(np.random.default_rng(7)))
    inside = frame >= SECTOR_FLOOR
    other = torch.where(inside, 0.6 * frame + 25.0, frame)
    before = float((frame - other)[inside].abs().mean())
    after = float((sector_standardize(frame) - sector_standardize(other))[inside].abs().max())
    assert before > 10.0 and after < 0.01, (before, after)


def test_a_black_or_flat_frame_gives_finite_values() -> None:
    black = torch.zeros(2, 16, 16)
    flat = torch.full((16, 16), 90.0)
    assert float(sector_standardize(black).abs().max()) == 0.0
    assert torch.allclose(sector_standardize(flat), torch.full((16, 16), SECTOR_MEAN))


def test_normalize_applies_it_only_when_the_config_asks() -> None:
    u8 = torch.from_numpy(_fan(np.random.default_rng(3), 16).astype(np.uint8))[None]
    plain, sector = PreprocessConfig(image_size=16), PreprocessConfig(16, intensity="sector")
    scale = 1.0 / (255.0 * torch.tensor(plain.std).view(3, 1, 1))
    shift = (torch.tensor(plain.mean) / torch.tensor(plain.std)).view(3, 1, 1)
    expect_plain = u8.float().unsqueeze(-3) * scale - shift
    expect_sector = sector_standardize(u8.float()).unsqueeze(-3) * scale - shift
    assert torch.allclose(normalize(u8, plain), expect_plain, atol=1e-6)
    assert torch.allclose(normalize(u8, sector), expect_sector, atol=1e-6)
    assert not torch.allclose(expect_plain, expect_sector, atol=0.1)


def test_an_old_config_keeps_no_normalisation_and_a_bad_mode_is_named() -> None:
    old = ModelConfig(backbone="mobilenet_v3_small").to_dict()
    del old["preprocess"]["intensity"]  # written before the key existed
    assert ModelConfig.from_dict(old).preprocess.intensity == "none"
    old["preprocess"]["intensity"] = "sector"
    assert ModelConfig.from_dict(old).preprocess.intensity == "sector"
    old["preprocess"]["intensity"] = "histogram"
    with pytest.raises(ValueError, match=r"^preprocess.intensity: expected one of"):
        ModelConfig.from_dict(old)


def test_luvnet_train_intensity_is_recorded_in_the_checkpoint(tmp_path: Path) -> None:
    manifest = make_dataset(tmp_path / "videos", patients=4, frames=8)
    out = tmp_path / "run"
    argv = ["train", "--manifest", str(manifest), "--out", str(out), *TINY_TRAIN_ARGS]
    argv += ["--cache", str(tmp_path / "cache"), "--epochs", "1", "--intensity", "sector"]
    assert main(argv) == 0
    assert load_checkpoint(out / "fold_0" / "best").config.preprocess.intensity == "sector"
    assert json.loads((out / "run.json").read_text())["args"]["intensity"] == "sector"


def test_luvnet_train_refuses_an_unknown_intensity_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--manifest", str(tmp_path / "m.csv"), "--out", str(tmp_path / "r")]
    with pytest.raises(SystemExit) as stop:  # argparse's choices: usage line + one error line
        main([*argv, "--intensity", "histogram"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--intensity" in err and "'histogram'" in err and "'sector'" in err, err
