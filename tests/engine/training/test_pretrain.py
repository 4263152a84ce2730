"""``luvnet pretrain``: SimCLR's loss, the views, the same-video pairs, and the command end to
end on tiny real videos, its output accepted by ``luvnet train --init``."""

from __future__ import annotations

import json
import math
import shutil
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
from luvnet.engine.training import pretrain as pretrain_module
from luvnet.engine.training.pretrain import PairSampler, augment_views, nt_xent
from tests.engine.tiny_data import TINY, TINY_TRAIN_ARGS, make_dataset


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


def test_jitter_zero_keeps_grey_levels_and_the_default_changes_them():
    flat = torch.full((8, 32, 32), 100, dtype=torch.uint8)
    kept = augment_views(flat, torch.Generator().manual_seed(0), jitter=0.0)
    moved = augment_views(flat, torch.Generator().manual_seed(0))
    # The middle stays inside every view (zoom in, shift within the canvas, 10 degrees).
    assert torch.all(kept[:, 12:20, 12:20] == 100)
    assert len(set(moved[:, 16, 16].tolist())) > 1


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


def _pretrain_argv(tiny, out: Path) -> list[str]:
    manifest, cache, source = tiny
    argv = ["pretrain", "--manifest", str(manifest), "--cache", str(cache), "--init", str(source)]
    return [*argv, "--out", str(out), "--folds", "2", "--test-fraction", "0.25", "--device", "cpu"]


def test_pretrain_changes_only_the_trunk_keeps_no_patient_and_train_init_takes_it(
    tiny, tmp_path: Path
):
    manifest, cache, source = tiny
    out = tmp_path / "ssl"
    argv = [*_pretrain_argv(tiny, out), "--steps", "3", "--batch-size", "4", "--threads", "1"]
    tuned = ["--seed", "0", "--temperature", "0.5", "--max-offset", "2", "--projection", "16"]
    tuned += ["--jitter", "0.2"]
    assert main([*argv, *tuned, "--lr", "1e-3"]) == 0
    src, got = load_checkpoint(source), load_checkpoint(out)
    assert got.config == src.config
    trunk_src = dict(src.model.encoder.named_parameters())
    trunk_got = dict(got.model.encoder.named_parameters())
    # Weights, not only BatchNorm buffers, moved: the optimiser stepped the whole trunk.
    assert not torch.equal(
        trunk_src["body.features.0.0.weight"], trunk_got["body.features.0.0.weight"]
    )
    head_src, head_got = src.model.clip_head.state_dict(), got.model.clip_head.state_dict()
    assert all(torch.equal(head_src[k], head_got[k]) for k in head_src)
    record = got.provenance["pretrain"]
    train = splits_from_manifest(read_manifest(manifest), test_fraction=0.25, k=2, seed=0)
    assert record["steps_run"] == 3 and record["videos"] == 2 * len(train.fold(0).train)
    assert record["pairs_per_step"] == 4 and record["batchnorm_frames"] == 32 * 4
    assert got.provenance["init"] == {"model_id": src.model_id}
    options = record["options"]
    assert (options["temperature"], options["max_offset"], options["projection"]) == (0.5, 2, 16)
    assert options["jitter"] == 0.2
    document = json.loads((out / "config.json").read_text())
    document["provenance"].pop("command")  # the command as typed, as luvnet train records it
    for text in (json.dumps(document), (out / "history.json").read_text()):
        for private in (str(tmp_path), str(manifest.parent), "P0", "p0", ".mp4"):
            assert private not in text, private
    history = json.loads((out / "history.json").read_text())
    assert history["chance_loss"] == pytest.approx(math.log(7))
    assert [step["step"] for step in history["steps"]] == [1, 3]
    assert all(math.isfinite(step["loss"]) for step in history["steps"])
    run = ["train", "--manifest", str(manifest), "--cache", str(cache), *TINY_TRAIN_ARGS]
    run += ["--epochs", "1", "--init", str(out), "--freeze-encoder", "--no-augment"]
    assert main([*run, "--out", str(tmp_path / "run")]) == 0
    best = load_checkpoint(tmp_path / "run" / "fold_0" / "best")
    assert best.provenance["init"]["model_id"] == got.model_id


def _split_column(manifest: Path, out: Path) -> Path:
    """The tiny manifest with a fixed train/val/test ``split`` column (the plan's one fold)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = manifest.read_text().splitlines()
    roles = {"P00": "test", "P01": "test", "P02": "val", "P03": "val"}
    rows = [f"{line},{roles.get(line.split(',')[1], 'train')}" for line in lines[1:]]
    out.write_text("\n".join([lines[0] + ",split", *rows]) + "\n")
    for video in manifest.parent.glob("*.mp4"):
        (out.parent / video.name).symlink_to(video)
    return out


@pytest.fixture(scope="module")
def pretrained(tiny, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pretrained") / "ssl"
    assert main([*_pretrain_argv(tiny, out), "--steps", "1", "--batch-size", "2"]) == 0
    return out


def _train_argv(manifest: Path, cache: Path, init: Path, out: Path) -> list[str]:
    argv = ["train", "--manifest", str(manifest), "--cache", str(cache), *TINY_TRAIN_ARGS]
    return [*argv, "--epochs", "1", "--init", str(init), "--out", str(out)]


def _without(argv: list[str], option: str) -> list[str]:
    at = argv.index(option)
    return argv[:at] + argv[at + 2 :]


@pytest.mark.parametrize(
    "flags",
    [["--fold", "1"], ["--seed", "1"], ["--folds", "3"], ["--test-fraction", "0.4"], ["--all"]],
)
def test_train_refuses_a_pretrained_trunk_for_another_fold_or_split(
    tiny, pretrained: Path, tmp_path: Path, capsys, flags: list[str]
):
    manifest, cache, _ = tiny
    argv = _train_argv(manifest, cache, pretrained, tmp_path / "run")
    if flags == ["--all"]:  # every fold of the split, not only the pretrained one
        argv, flags = _without(argv, "--fold"), []
    capsys.readouterr()
    assert main([*argv, *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("luvnet train: error: --init "), err
    assert "fold 0's training patients" in err and "pretrain a trunk for this fold" in err, err
    assert not (tmp_path / "run").exists()


def test_the_fold_guard_holds_for_another_manifest_and_for_runs_trained_from_the_trunk(
    tiny, pretrained: Path, tmp_path: Path, capsys
):
    manifest, cache, _ = tiny
    renamed = tmp_path / "videos" / "manifest.csv"
    renamed.parent.mkdir()
    renamed.write_text(manifest.read_text().replace(",P0", ",Q0"))  # other patient ids
    for video in manifest.parent.glob("*.mp4"):
        (renamed.parent / video.name).symlink_to(video)
    capsys.readouterr()
    assert main(_train_argv(renamed, cache, pretrained, tmp_path / "other")) == 2
    assert "pretrained on the frames of fold 0" in capsys.readouterr().err
    # A run from the pretrained trunk carries its split on: its checkpoint is held to fold 0.
    first = tmp_path / "first"
    assert main(_train_argv(manifest, cache, pretrained, first)) == 0
    carried = load_checkpoint(first / "fold_0" / "best").provenance["init"]
    assert carried["pretrained_split"]["fold"] == 0
    argv = _train_argv(manifest, cache, first / "fold_0" / "best", tmp_path / "second")
    capsys.readouterr()
    assert main([*_without(argv, "--fold"), "--fold", "1"]) == 2
    assert "pretrained on the frames of fold 0" in capsys.readouterr().err


@pytest.mark.parametrize("fold", ["0", "1"])
@pytest.mark.parametrize(("key", "value"), [("salt", "not hex"), ("n", float("inf"))])
def test_a_damaged_pretraining_record_is_named_whatever_the_fold(
    tiny, pretrained: Path, tmp_path: Path, capsys, fold: str, key: str, value: object
):
    manifest, cache, _ = tiny
    damaged = tmp_path / "damaged"
    shutil.copytree(pretrained, damaged)
    document = json.loads((damaged / "config.json").read_text())
    document["provenance"]["pretrain"]["split"]["patient_digests"][key] = value
    (damaged / "config.json").write_text(json.dumps(document))
    argv = _train_argv(manifest, cache, damaged, tmp_path / "run")
    capsys.readouterr()
    assert main([*_without(argv, "--fold"), "--fold", fold]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pretraining split record is damaged" in err, err


def test_a_trunk_pretrained_on_a_fixed_split_trains_on_that_split(tiny, tmp_path: Path):
    _, cache, source = tiny
    manifest = _split_column(tiny[0], tmp_path / "videos" / "manifest.csv")
    out = tmp_path / "ssl"
    argv = _pretrain_argv((manifest, cache, source), out)
    assert main([*argv, "--steps", "1", "--batch-size", "2"]) == 0
    assert load_checkpoint(out).provenance["pretrain"]["videos"] == 8  # P04-P07, 2 videos each
    run = _train_argv(manifest, cache, out, tmp_path / "run")
    assert main(run) == 0  # a split column makes one fold, whatever --folds says


def test_pretrain_never_opens_a_validation_or_test_video(tiny, tmp_path: Path, monkeypatch):
    manifest, _, source = tiny
    plan = splits_from_manifest(read_manifest(manifest), test_fraction=0.25, k=2, seed=0)
    opened: list[str] = []
    real_rate = pretrain_module.video_rate

    def recording_rate(path, *args, **kwargs):  # the real probe, recording what it opens
        opened.append(Path(path).name)
        return real_rate(path, *args, **kwargs)

    monkeypatch.setattr(pretrain_module, "video_rate", recording_rate)
    cache = tmp_path / "cache"
    argv = _pretrain_argv((manifest, cache, source), tmp_path / "ssl")
    assert main([*argv, "--steps", "1", "--batch-size", "2"]) == 0
    training = {f"{p.lower()}_v{v}" for p in plan.fold(0).train for v in (0, 1)}
    assert {name.removesuffix(".mp4") for name in opened} == training
    assert {path.name.split("-")[0] for path in cache.glob("*.npy")} == training


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--fold", "7"], "--fold: expected 0..1, got 7"),
        (["--folds", "1"], "--folds: expected at least 2"),
        (["--test-fraction", "1.5"], "--test-fraction: expected a number in [0, 1)"),
        (["--jitter", "1"], "--jitter: expected a number in [0, 1), got 1.0"),
        (["--seed", "-1"], "--seed: expected 0 or more, got -1"),
        (["--init", "no/such/checkpoint"], "no/such/checkpoint"),
    ],
)
def test_pretrain_refuses_in_one_line(tiny, tmp_path: Path, capsys, flags, says):
    argv = [*_pretrain_argv(tiny, tmp_path / "o"), "--steps", "1"]
    assert main([*argv, *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("luvnet pretrain: error:"), err
    assert says in err and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()


def test_pretrain_refuses_an_out_that_is_a_file_or_a_checkpoint(tiny, tmp_path: Path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("")
    assert main([*_pretrain_argv(tiny, taken), "--steps", "1"]) == 2
    assert "--out " in capsys.readouterr().err
    _, _, source = tiny
    assert main([*_pretrain_argv(tiny, source), "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already holds a checkpoint" in err, err


def test_max_minutes_stops_pretraining_after_the_step_that_passes_it(tiny, tmp_path: Path):
    out = tmp_path / "ssl"
    argv = [*_pretrain_argv(tiny, out), "--steps", "50", "--batch-size", "2"]
    # 1e-5 minutes (0.6 ms) is over after the first step, whatever the machine.
    assert main([*argv, "--max-minutes", "1e-5"]) == 0
    assert load_checkpoint(out).provenance["pretrain"]["steps_run"] == 1
    steps = json.loads((out / "history.json").read_text())["steps"]
    assert [step["step"] for step in steps] == [1]


def test_pretrain_refuses_a_checkpoint_trained_on_the_folds_held_out_patients(
    tiny, tmp_path: Path, capsys
):
    """A supervised checkpoint of fold 0 has learnt fold 1's validation patients' labels: a
    trunk pretrained from it for fold 1 would carry them into fold 1's runs."""
    manifest, cache, _ = tiny
    run = tmp_path / "supervised"
    argv = ["train", "--manifest", str(manifest), "--cache", str(cache), *TINY_TRAIN_ARGS]
    assert main([*argv, "--epochs", "1", "--out", str(run)]) == 0
    capsys.readouterr()
    source = run / "fold_0" / "best"
    argv = _pretrain_argv((manifest, cache, source), tmp_path / "trunk")
    assert main([*argv, "--fold", "1", "--steps", "1", "--batch-size", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"luvnet pretrain: error: --init {source}: ")
    assert "training patients are fold 1's validation patients" in err, err
    assert f"start fold 1 from {run / 'fold_1' / 'best'}" in err and "--init RUN" not in err
    assert not (tmp_path / "trunk").exists()
    # its own fold is fine
    assert main([*argv, "--fold", "0", "--steps", "1", "--batch-size", "2"]) == 0
