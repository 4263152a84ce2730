"""``luvnet train --init`` (start from a checkpoint's trunk) and ``--freeze-encoder`` (train the
head on cached per-frame embeddings), through the command line and the units they use."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from luvnet.cli import main
from luvnet.engine.data.clips import ClipDataset
from luvnet.engine.data.manifest import read_manifest
from luvnet.engine.errors import LuvnetError
from luvnet.engine.evaluation.embeddings import EmbeddedClips, EmbeddingCache, HeadOnEmbeddings
from luvnet.engine.evaluation.inference import RealFrameModel, channels_last, model_input
from luvnet.engine.model.checkpoint import load_checkpoint, save_checkpoint
from luvnet.engine.model.loss import masked_bce
from luvnet.engine.model.network import LUVNet, build_model
from luvnet.engine.training.init import init_from_checkpoint
from tests.engine.tiny_data import TINY, TINY_TRAIN_ARGS, make_dataset, save_tiny_checkpoint


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return make_dataset(root / "videos", patients=6, videos_per_patient=1), root / "cache"


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("src") / "ckpt", seed=123)


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_init_copies_the_trunk_exactly_and_the_head_only_when_asked(source: Path):
    src = load_checkpoint(source).model
    torch.manual_seed(7)
    model = build_model(TINY)
    head_before = _state(model.clip_head)
    model_id = init_from_checkpoint(model, source)
    assert model_id == load_checkpoint(source).model_id
    assert _equal(_state(model.encoder), _state(src.encoder))
    assert _equal(_state(model.clip_head), head_before)
    assert not _equal(head_before, _state(src.clip_head))
    init_from_checkpoint(model, source, head=True)
    assert _equal(_state(model.clip_head), _state(src.clip_head))


def test_init_head_of_another_variant_is_refused(source: Path):
    model = build_model(TINY.replace(variant="frame"))
    with pytest.raises(LuvnetError, match=r"^--init-head .*: its head is luvnet .*frame"):
        init_from_checkpoint(model, source, head=True)


def test_init_head_of_another_head_size_names_the_options_to_pass(source: Path):
    """The options that shape the head, as the source and this run set them: the fix is to
    pass the source's (the user forgot them), not to guess among four."""
    src = load_checkpoint(source).config
    model = build_model(TINY.replace(fusion_hidden=2 * src.fusion_hidden))
    want = (
        f"--init-head {source}: its head was trained with --fusion-hidden {src.fusion_hidden} "
        f"(this run: --fusion-hidden {2 * src.fusion_hidden}); pass --fusion-hidden "
        f"{src.fusion_hidden}, or drop --init-head (trunk only)"
    )
    with pytest.raises(LuvnetError) as refused:
        init_from_checkpoint(model, source, head=True)
    assert str(refused.value) == want
    usvn = source.parent / "usvn"  # its head count is set by --usvn-heads
    save_checkpoint(build_model(TINY.replace(variant="usvn", num_heads=8)), usvn)
    model = build_model(TINY.replace(variant="usvn", num_heads=32))
    with pytest.raises(
        LuvnetError, match=r"trained with --usvn-heads 8 \(this run: --usvn-heads 32\)"
    ):
        init_from_checkpoint(model, usvn, head=True)


@pytest.mark.parametrize(
    ("flags", "differs", "fix"),
    [
        (["--image-size", "48"], "image size 32 (this run: 48)", "--image-size 32"),
        (["--backbone", "resnet18"], "backbone mobilenet_v3_small (this run: resnet18)", ""),
    ],
)
def test_cli_refuses_an_incompatible_init_in_one_line(
    data, source: Path, tmp_path: Path, capsys, flags: list[str], differs: str, fix: str
):
    manifest, cache = data
    out = tmp_path / "run"
    argv = ["train", "--manifest", str(manifest), "--out", str(out), "--cache", str(cache)]
    argv += [*TINY_TRAIN_ARGS, "--epochs", "1", "--init", str(source), *flags]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("luvnet train: error: --init "), err
    assert str(source) in err and differs in err and fix in err, err
    assert "--backbone mobilenet_v3_small --image-size 32" in err, err
    assert not out.exists()  # refused before anything was written


def test_cli_init_with_frozen_encoder_trains_only_the_head(
    data, source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    manifest, cache = data
    out = tmp_path / "run"
    argv = ["train", "--manifest", str(manifest), "--out", str(out), "--cache", str(cache)]
    argv += [*TINY_TRAIN_ARGS, "--epochs", "2", "--init", str(source)]
    assert main([*argv, "--freeze-encoder", "--no-augment"]) == 0
    src = load_checkpoint(source)
    best = load_checkpoint(out / "fold_0" / "best")
    # The trunk, BatchNorm statistics included, is the init checkpoint's, bit for bit.
    assert _equal(_state(best.model.encoder), _state(src.model.encoder))
    assert not _equal(_state(best.model.clip_head), _state(src.model.clip_head))
    assert best.provenance["init"] == {"model_id": src.model_id, "head": False}
    assert best.provenance["freeze_encoder"] is True
    assert str(source) not in json.dumps(best.provenance["init"])
    # The held-out test set was scored from frames by the normal path.
    metrics = json.loads((out / "fold_0" / "metrics_test.json").read_text())
    assert metrics["n_clips"] > 0
    assert list((cache / "embeddings").glob("*.npy"))
    # Every line of the fold names it the same way.
    err = capsys.readouterr().err
    assert "fold 0: embeddings of 2 training and 2 validation videos ready (" in err, err
    assert "fold 0: test macro AUC" in err and "fold_0:" not in err, err


def test_cli_freeze_encoder_needs_no_augment(data, tmp_path: Path, capsys):
    manifest, cache = data
    argv = ["train", "--manifest", str(manifest), "--out", str(tmp_path / "r"), *TINY_TRAIN_ARGS]
    assert main([*argv, "--cache", str(cache), "--freeze-encoder"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--freeze-encoder:" in err and "--no-augment" in err, err


def _frozen(seed: int) -> LUVNet:
    torch.manual_seed(seed)
    model = channels_last(build_model(TINY.replace(dropout=0.0)))
    with torch.no_grad():  # BatchNorm statistics of real scale (fresh ones give ~1e-9 outputs)
        for _ in range(3):
            model.encoder.train()(torch.randn(8, 3, 32, 32))
    model.encoder.eval().requires_grad_(False)
    model.clip_head.train()
    return model


def test_cached_embeddings_give_the_head_the_same_gradients_as_the_live_trunk(data, tmp_path: Path):
    manifest, cache = data
    rows = read_manifest(manifest).rows
    clips = ClipDataset.from_config(rows, TINY, cache)
    model = _frozen(3)
    embedded = EmbeddedClips(clips, EmbeddingCache(tmp_path, model, TINY.preprocess, model_device))
    # A batch with a padded last clip (6 frames per video: clips 0-5 are short of 8).
    index = [0, 1, len(clips) - 1]
    live_batch = next(iter(DataLoader(torch.utils.data.Subset(clips, index), batch_size=3)))
    cached_batch = next(iter(DataLoader(torch.utils.data.Subset(embedded, index), batch_size=3)))
    assert not bool(live_batch["mask"].all())
    labels = live_batch["labels"]

    def head_grads(logits: torch.Tensor) -> dict[str, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        masked_bce(logits, labels).backward()
        grads = {n: p.grad.clone() for n, p in model.clip_head.named_parameters()}
        assert all(p.grad is None for p in model.encoder.parameters())
        return grads

    frames = model_input(live_batch["frames"], TINY.preprocess, model_device)
    live = head_grads(RealFrameModel(model)(frames, live_batch["mask"])[0])
    cached = head_grads(HeadOnEmbeddings(model)(cached_batch["emb"], cached_batch["mask"])[0])
    assert live.keys() == cached.keys() and len(live) > 4
    for name in live:
        assert torch.allclose(live[name], cached[name], rtol=1e-5, atol=1e-7), name
    assert float(cached_batch["emb"].abs().max()) > 1e-3
    assert any(float(g.abs().max()) > 1e-4 for g in live.values())


model_device = torch.device("cpu")


def test_embedding_cache_is_keyed_by_trunk_settings_and_content(data, tmp_path: Path):
    manifest, cache = data
    clips = ClipDataset.from_config(read_manifest(manifest).rows[:1], TINY, cache)
    video = clips.videos[0]
    frames = np.asarray(video.frames())
    first = EmbeddingCache(tmp_path, _frozen(1), TINY.preprocess, model_device)
    other = EmbeddingCache(tmp_path, _frozen(2), TINY.preprocess, model_device)
    same = EmbeddingCache(tmp_path, _frozen(1), TINY.preprocess, model_device)
    shifted = TINY.preprocess.__class__(image_size=32, mean=(0.5, 0.5, 0.5))
    moved = EmbeddingCache(tmp_path, _frozen(1), shifted, model_device)
    assert first.path(frames) == same.path(frames)
    assert len({first.path(frames), other.path(frames), moved.path(frames)}) == 3
    assert first.path(frames) != first.path(frames[::-1].copy())
    emb = first.load(video)
    assert emb.shape == (video.n_frames, first.model.embed_dim) and emb.dtype == np.float32
    np.testing.assert_array_equal(same.load(video), emb)  # read back, not recomputed
    assert float(np.abs(emb).max()) > 1e-3
    assert not np.allclose(other.load(video), emb)  # another trunk never reuses it
    first.path(frames).write_bytes(b"\x93NUMPY half a file")  # a torn or foreign file
    np.testing.assert_array_equal(first.load(video), emb)  # computed again, not an error


def test_cli_usvn_heads_are_explicit_recorded_and_reported(data, tmp_path: Path, capsys):
    manifest, cache = data
    out = tmp_path / "usvn"
    argv = ["train", "--manifest", str(manifest), "--out", str(out), "--cache", str(cache)]
    argv += [*TINY_TRAIN_ARGS, "--epochs", "1", "--model", "usvn", "--num-heads", "2"]
    assert main([*argv, "--usvn-heads", "4", "--freeze-encoder", "--no-augment"]) == 0
    best = load_checkpoint(out / "fold_0" / "best")
    assert best.config.num_heads == 4  # --usvn-heads, not --num-heads, for usvn
    assert best.model.clip_head.state_dict()  # built with 4 heads and loaded strictly
    assert json.loads((out / "run.json").read_text())["config"]["num_heads"] == 4
    capsys.readouterr()
    assert main(["report", str(out), "--split", "val"]) == 0
    assert "| usvn (mobilenet_v3_small, 4 heads) | 1 |" in capsys.readouterr().out


def test_usvn_defaults_to_its_authors_32_heads():
    from luvnet.commands.train import settings_from
    from luvnet.engine.model.network import build_usvn
    from luvnet.engine.training.folds import model_config
    from tests.engine.training.test_train_settings import _parse

    assert build_usvn("mobilenet_v3_small").config.num_heads == 32
    assert model_config(settings_from(_parse("--model", "usvn"))).num_heads == 32
    assert model_config(settings_from(_parse("--model", "luvnet"))).num_heads == 8


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--init-head"], "--init-head: needs --init CHECKPOINT"),
        (
            ["--init", "SOURCE", "--init-head", "--model", "frame"],
            "its head is luvnet with 4 patterns, this run's is frame with 4 patterns; drop "
            "--init-head (trunk only) or pass --model luvnet to match",
        ),
        (["--init", "SOURCE", "--weights", "imagenet"], "--init: the trunk comes from"),
    ],
)
def test_cli_init_head_and_weights_conflicts_are_one_line(
    data, source: Path, tmp_path: Path, capsys, flags: list[str], message: str
):
    manifest, cache = data
    argv = ["train", "--manifest", str(manifest), "--out", str(tmp_path / "r"), *TINY_TRAIN_ARGS]
    flags = [str(source) if f == "SOURCE" else f for f in flags]
    assert main([*argv, "--cache", str(cache), "--epochs", "1", *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
