"""``luvnet train --trainable-blocks N``: fine-tune only the trunk's last N blocks from
``--init``; the earlier blocks keep their weights and BatchNorm statistics bit for bit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision.models as tvm

from luvnet.cli import main
from luvnet.engine.errors import LuvnetError
from luvnet.engine.model.backbones import create_trunk, freeze_trunk, trunk_blocks
from luvnet.engine.model.checkpoint import load_checkpoint
from luvnet.engine.model.network import build_model
from luvnet.engine.training.state import load_state
from tests.engine.tiny_data import TINY, TINY_TRAIN_ARGS, make_dataset, save_tiny_checkpoint


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return make_dataset(root / "videos", patients=6, videos_per_patient=1), root / "cache"


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("src") / "ckpt", seed=321)


@pytest.mark.parametrize(
    ("name", "count"),
    [("mobilenet_v3_small", 13), ("resnet18", 10), ("densenet121", 10)],
)
def test_blocks_are_the_trunks_stages_in_forward_order(name: str, count: int):
    trunk = create_trunk(name).eval()
    blocks = trunk_blocks(trunk)
    assert len(blocks) == count
    # every parameter of the trunk is in exactly one block
    owned = [id(p) for block in blocks for p in block.parameters()]
    assert sorted(owned) == sorted(id(p) for p in trunk.parameters())
    # and the blocks run in the order listed (what "the last N" counts on)
    ran: list[int] = []
    hooks = [
        block.register_forward_hook(lambda *_, i=i: ran.append(i)) for i, block in enumerate(blocks)
    ]
    with torch.no_grad():
        trunk(torch.randn(1, 3, 64, 64))
    for hook in hooks:
        hook.remove()
    assert ran == list(range(count))


def test_freeze_keeps_the_last_blocks_trainable_and_refuses_more_than_there_are():
    trunk = create_trunk("mobilenet_v3_small")
    blocks = trunk_blocks(trunk)
    frozen = freeze_trunk(trunk, 4)
    assert frozen == blocks[:9]
    assert not any(p.requires_grad for block in blocks[:9] for p in block.parameters())
    assert all(p.requires_grad for block in blocks[9:] for p in block.parameters())
    assert freeze_trunk(create_trunk("mobilenet_v3_small"), None) == []
    whole = create_trunk("mobilenet_v3_small")
    assert freeze_trunk(whole, 13) == []  # as many as it has: everything trains
    assert all(p.requires_grad for p in whole.parameters())
    with pytest.raises(LuvnetError, match=r"^--trainable-blocks: .* 13 blocks; expected 1\.\.13"):
        freeze_trunk(create_trunk("mobilenet_v3_small"), 14)


def test_parameters_the_body_holds_itself_count_with_the_first_block():
    vit = create_trunk("vit_b_16")  # its class token sits on the body, before conv_proj
    assert len(trunk_blocks(vit)) == 2
    freeze_trunk(vit, 2)
    assert all(p.requires_grad for p in vit.parameters())
    freeze_trunk(vit, 1)
    assert not vit.body.class_token.requires_grad
    assert not any(p.requires_grad for p in vit.body.conv_proj.parameters())


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _argv(data: tuple[Path, Path], out: Path) -> list[str]:
    manifest, cache = data
    argv = ["train", "--manifest", str(manifest), "--out", str(out), "--cache", str(cache)]
    return [*argv, *TINY_TRAIN_ARGS]


def test_cli_trains_only_the_last_blocks_and_holds_the_count_on_resume(
    data, source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    out = tmp_path / "run"
    argv = [*_argv(data, out), "--init", str(source), "--trainable-blocks", "3"]
    assert main([*argv, "--epochs", "1"]) == 0
    before = load_checkpoint(source).model.encoder
    after = load_state(out / "fold_0" / "last")
    assert after is not None
    trained = build_model(TINY)
    trained.load_state_dict(after.model)
    old, new = trunk_blocks(before), trunk_blocks(trained.encoder)
    for a, b in zip(old[:10], new[:10], strict=True):  # weights and BatchNorm statistics
        assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())
    for a, b in zip(old[10:], new[10:], strict=True):  # weights, not just statistics
        weights = dict(a.named_parameters())
        assert any(not torch.equal(weights[k], v) for k, v in b.named_parameters())
    args = json.loads((out / "run.json").read_text())["args"]
    assert args["trainable_blocks"] == 3
    best = load_checkpoint(out / "fold_0" / "best")
    assert best.provenance["trainable_blocks"] == 3
    capsys.readouterr()
    # resuming with the whole trunk trainable would go on training another model
    assert main([*_argv(data, out), "--init", str(source), "--epochs", "2"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("luvnet train: error: ") and "trainable_blocks=3" in last, last
    assert main([*argv, "--epochs", "2"]) == 0  # the same count: resumes
    assert load_state(out / "fold_0" / "last").progress.epoch == 2


def test_cli_trainable_blocks_from_a_weights_file(data, tmp_path: Path):
    torch.manual_seed(5)
    weights = tmp_path / "mobilenet_v3_small.pth"
    torch.save(tvm.mobilenet_v3_small().state_dict(), weights)
    out = tmp_path / "run"
    argv = [*_argv(data, out), "--weights", str(weights), "--trainable-blocks", "1"]
    assert main([*argv, "--epochs", "1"]) == 0
    trained = build_model(TINY)
    trained.load_state_dict(load_state(out / "fold_0" / "last").model)
    source = torch.load(weights)
    fixed = trunk_blocks(trained.encoder)[0]  # the stem: features.0
    for name, value in fixed.state_dict().items():
        assert torch.equal(value, source[f"features.0.{name}"]), name


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--trainable-blocks", "2"], "--trainable-blocks: needs --init CHECKPOINT or --weights"),
        (["--init", "SOURCE", "--trainable-blocks", "0"], "--trainable-blocks: expected 1 or"),
        (["--init", "SOURCE", "--trainable-blocks", "20"], "13 blocks; expected 1..13, got 20"),
        (
            ["--init", "SOURCE", "--trainable-blocks", "2", "--freeze-encoder", "--no-augment"],
            "--trainable-blocks: --freeze-encoder fixes the whole trunk; drop one of them",
        ),
        (
            ["--init", "SOURCE", "--trainable-blocks", "2", "--bn-recalibrate", "2"],
            "--trainable-blocks: the frozen blocks' BatchNorm statistics stay as initialised",
        ),
        (
            ["--init", "SOURCE", "--trainable-blocks", "2"]
            + ["--bn-recalibrate", "2", "--freeze-bn-after", "0.5"],
            "drop --bn-recalibrate and --freeze-bn-after",
        ),
    ],
)
def test_bad_trainable_blocks_are_one_line(
    data, source: Path, tmp_path: Path, capsys, flags: list[str], message: str
):
    flags = [str(source) if f == "SOURCE" else f for f in flags]
    assert main([*_argv(data, tmp_path / "r"), "--epochs", "1", *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
