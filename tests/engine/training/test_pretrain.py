"""``luvnet pretrain``: SimCLR's loss, the views, the same-video pairs, and the command end to
end on tiny real videos, its output accepted by ``luvnet train --init``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from luvnet.cli import main
from luvnet.engine.data.frame_cache import CachedVideo
from luvnet.engine.data.manifest import read_manifest
from luvnet.engine.data.splits import splits_from_manifest
from luvnet.engine.model.checkpoint import load_checkpoint, save_checkpoint
from luvnet.engine.model.network import build_model
from luvnet.engine.training.pretrain import PairSampler, augment_views, nt_xent
from tests.engine.tiny_data import TINY_TRAIN_ARGS, make_dataset
from tests.engine.training.test_init_freeze import TINY


def _nt_xent_by_the_formula(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> float:
    """Chen et al. 2020, eq. 1, summed over all 2N anchors, one anchor at a time."""
    z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1).tolist()
    n2 = len(z)
    total = 0.0
    for i in range(n2):
        sims = [sum(a * b for a, b in zip(z[i], z[k], strict=True)) / tau for k in range(n2)]
        positive = (i + n2 // 2) % n2
        below = sum(math.exp(sims[k]) for k in range(n2) if k != i)
        total += -math.log(math.exp(sims[positive]) / below)
    return total / n2


def test_nt_xent_is_the_papers_formula():
    gen = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(5, 8, generator=gen), torch.randn(5, 8, generator=gen)
    assert float(nt_xent(z1, z2, 0.5)) == pytest.approx(_nt_xent_by_the_formula(z1, z2, 0.5))


def test_nt_xent_of_features_that_tell_nothing_apart_is_log_2n_minus_1():
    same = torch.ones(6, 4)
    assert float(nt_xent(same, same, 0.2)) == pytest.approx(math.log(11))
    # Pairs that match and differ from everything else score near 0.
    eye = torch.eye(6)
    assert float(nt_xent(eye, eye, 0.05)) < 1e-3


def test_views_keep_shape_and_dtype_repeat_with_their_generator_and_keep_black_black():
    frames = torch.from_numpy(np.random.default_rng(0).integers(1, 255, (4, 32, 32), np.uint8))
    frames[3] = 0
    a = augment_views(frames, torch.Generator().manual_seed(1))
    b = augment_views(frames, torch.Generator().manual_seed(1))
    c = augment_views(frames, torch.Generator().manual_seed(2))
    assert a.shape == frames.shape and a.dtype == torch.uint8
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a[:3], frames[:3])
    assert int(a[3].max()) == 0  # no noise is added outside the image


def _video(tmp_path: Path, index: int, n_frames: int) -> CachedVideo:
    # Frame t of video v is filled with 10 v + t, so a pair says where it came from.
    frames = (10 * index + np.arange(n_frames, dtype=np.uint8))[:, None, None]
    path = tmp_path / f"v{index}.npy"
    np.save(path, np.broadcast_to(frames, (n_frames, 4, 4)).copy())
    return CachedVideo(
        tmp_path / f"v{index}.mp4", path, n_frames, 10.0, (4, 4), (0, 0, 4, 4), True, "", False
    )


def test_pairs_are_two_frames_of_one_video_within_the_offset_and_videos_distinct(tmp_path):
    sampler = PairSampler([_video(tmp_path, v, 9) for v in range(5)], max_offset=2, seed=0)
    seen_apart = set()
    for _ in range(50):
        a, b = sampler.draw(4)
        first, second = a[:, 0, 0].long(), b[:, 0, 0].long()
        assert torch.equal(first // 10, second // 10)  # one video per pair
        assert len(set((first // 10).tolist())) == 4  # distinct videos: the negatives
        apart = (first % 10 - second % 10).abs()
        assert int(apart.max()) <= 2
        seen_apart |= set(apart.tolist())
    assert seen_apart == {0, 1, 2}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("pretrain")
    manifest = make_dataset(root / "videos", patients=8, videos_per_patient=2)
    torch.manual_seed(5)
    source = save_checkpoint(build_model(TINY).eval(), root / "source")
    return manifest, root / "cache", source


def test_pretrain_changes_only_the_trunk_keeps_no_patient_and_train_init_takes_it(
    tiny, tmp_path: Path
):
    manifest, cache, source = tiny
    out = tmp_path / "ssl"
    common = ["--manifest", str(manifest), "--cache", str(cache)]
    argv = ["pretrain", *common, "--init", str(source), "--out", str(out), "--folds", "2"]
    argv += ["--test-fraction", "0.25", "--steps", "3", "--batch-size", "4", "--threads", "1"]
    tuned = ["--seed", "0", "--temperature", "0.5", "--max-offset", "2", "--projection", "16"]
    assert main([*argv, *tuned, "--device", "cpu"]) == 0
    src, got = load_checkpoint(source), load_checkpoint(out)
    assert got.config == src.config
    trunk_src, trunk_got = src.model.encoder.state_dict(), got.model.encoder.state_dict()
    assert any(not torch.equal(trunk_src[k], trunk_got[k]) for k in trunk_src)
    head_src, head_got = src.model.clip_head.state_dict(), got.model.clip_head.state_dict()
    assert all(torch.equal(head_src[k], head_got[k]) for k in head_src)
    record = got.provenance["pretrain"]
    train = splits_from_manifest(read_manifest(manifest), test_fraction=0.25, k=2, seed=0)
    assert record["steps_run"] == 3 and record["videos"] == 2 * len(train.fold(0).train)
    assert got.provenance["init"] == {"model_id": src.model_id}
    options = record["options"]
    assert (options["temperature"], options["max_offset"], options["projection"]) == (0.5, 2, 16)
    text = (out / "config.json").read_text()
    assert "P0" not in text  # patient ids P00-P07: neither names nor counts per patient
    history = json.loads((out / "history.json").read_text())
    assert history["chance_loss"] == pytest.approx(math.log(7))
    assert all(math.isfinite(step["loss"]) for step in history["steps"])
    run = ["train", *common, "--out", str(tmp_path / "run"), *TINY_TRAIN_ARGS, "--epochs", "1"]
    assert main([*run, "--init", str(out), "--freeze-encoder", "--no-augment"]) == 0
    best = load_checkpoint(tmp_path / "run" / "fold_0" / "best")
    assert best.provenance["init"]["model_id"] == got.model_id


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--fold", "7"], "fold"),
        (["--init", "no/such/checkpoint"], "no/such/checkpoint"),
    ],
)
def test_pretrain_refuses_in_one_line(tiny, tmp_path: Path, capsys, flags, says):
    manifest, cache, source = tiny
    argv = ["pretrain", "--manifest", str(manifest), "--cache", str(cache), "--init", str(source)]
    argv += ["--out", str(tmp_path / "o"), "--folds", "2", "--steps", "1", "--device", "cpu"]
    assert main([*argv, *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("luvnet pretrain: error:"), err
    assert says in err and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()


def test_max_minutes_stops_pretraining_after_the_step_that_passes_it(tiny, tmp_path: Path):
    manifest, cache, source = tiny
    out = tmp_path / "ssl"
    argv = ["pretrain", "--manifest", str(manifest), "--cache", str(cache), "--init", str(source)]
    argv += ["--out", str(out), "--folds", "2", "--test-fraction", "0.25", "--steps", "50"]
    # 1e-5 minutes (0.6 ms) is over after the first step, whatever the machine.
    assert main([*argv, "--batch-size", "2", "--max-minutes", "1e-5", "--device", "cpu"]) == 0
    assert load_checkpoint(out).provenance["pretrain"]["steps_run"] == 1
