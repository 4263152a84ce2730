"""``luvnet train --ema DECAY``: the moving average of the weights is what is validated, kept as
``best/`` and resumed; training itself is unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from luvnet.cli import main
from luvnet.engine.model.checkpoint import load_checkpoint
from luvnet.engine.model.network import build_model
from luvnet.engine.training.averaging import WeightAverage
from luvnet.engine.training.state import load_state
from tests.engine.tiny_data import TINY, TINY_TRAIN_ARGS, make_dataset, save_tiny_checkpoint


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return make_dataset(root / "videos", patients=6, videos_per_patient=1), root / "cache"


def _argv(data: tuple[Path, Path], out: Path, *extra: str) -> list[str]:
    manifest, cache = data
    argv = ["train", "--manifest", str(manifest), "--out", str(out), "--cache", str(cache)]
    return [*argv, *TINY_TRAIN_ARGS, "--batch-size", "2", *extra]


def _floats(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in tensors.items() if v.is_floating_point()}


def test_the_average_is_decay_times_itself_plus_the_rest_times_the_new_weights():
    torch.manual_seed(0)
    model = build_model(TINY)
    average = WeightAverage(model, decay=0.75)
    first = {k: v.clone() for k, v in model.state_dict().items()}
    average.update(model)  # the first step copies
    assert average.steps == 1
    with torch.no_grad():
        for value in _floats(model.state_dict()).values():  # weights and BatchNorm statistics
            value.add_(torch.randn_like(value))
    average.update(model)
    now = model.state_dict()
    kept = average.module.state_dict()
    for key, value in _floats(first).items():
        expected = 0.75 * value + 0.25 * now[key]
        assert torch.allclose(kept[key], expected, atol=1e-6), key
    assert any("running_mean" in k for k in _floats(first))  # the buffers are averaged too
    restored = WeightAverage(build_model(TINY), decay=0.75)
    restored.load_state_dict(average.state_dict())
    assert restored.steps == 2
    assert all(torch.equal(v, restored.module.state_dict()[k]) for k, v in kept.items())


def test_cli_keeps_the_average_trains_the_same_and_resumes_it(
    data: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    plain, ema, straight = tmp_path / "plain", tmp_path / "ema", tmp_path / "straight"
    assert main([*_argv(data, plain), "--epochs", "1"]) == 0
    assert main([*_argv(data, ema), "--epochs", "1", "--ema", "0.5"]) == 0
    a, b = load_state(plain / "fold_0" / "last"), load_state(ema / "fold_0" / "last")
    assert a is not None and b is not None
    # the same batches and steps: the trained weights are the same ...
    assert all(torch.equal(v, b.model[k]) for k, v in a.model.items())
    assert not a.average and b.average["steps"].item() == b.progress.global_step > 1
    # ... and what is kept is the average, not them (every tensor: the whole model trains)
    best = load_checkpoint(ema / "fold_0" / "best").model.state_dict()
    assert set(b.average) == {*best, "steps"}
    assert all(torch.equal(v, b.average[k]) for k, v in best.items())
    assert any(not torch.equal(v, b.model[k]) for k, v in _floats(best).items())
    assert load_checkpoint(ema / "fold_0" / "best").provenance["ema"] == 0.5
    assert json.loads((ema / "run.json").read_text())["args"]["ema"] == 0.5
    capsys.readouterr()
    # resuming without it would keep another model than the one it started to average
    assert main([*_argv(data, ema), "--epochs", "2"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("luvnet train: error: ") and last.endswith(
        "trained with --ema 0.5, this command has --ema 0; rerun with --ema 0.5 or train into "
        "a new --out"
    ), last
    # resumed with it, the average continues as if never stopped
    assert main([*_argv(data, ema), "--epochs", "2", "--ema", "0.5"]) == 0
    assert main([*_argv(data, straight), "--epochs", "2", "--ema", "0.5"]) == 0
    c, d = load_state(ema / "fold_0" / "last"), load_state(straight / "fold_0" / "last")
    assert c is not None and d is not None and c.progress.epoch == 2
    assert c.average and c.average.keys() == d.average.keys()
    assert all(torch.equal(v, d.average[k]) for k, v in c.average.items())


def test_with_accumulation_the_average_follows_optimizer_steps_not_batches(
    data: tuple[Path, Path], tmp_path: Path
):
    steps = {}
    for accumulate in (1, 2):
        out = tmp_path / f"acc{accumulate}"
        flags = ["--epochs", "1", "--batch-size", "1", "--ema", "0.5"]
        assert main([*_argv(data, out), *flags, "--accumulate", str(accumulate)]) == 0
        state = load_state(out / "fold_0" / "last")
        assert state is not None
        assert state.average["steps"].item() == state.progress.global_step
        steps[accumulate] = state.progress.global_step
    batches = steps[1]  # one optimizer step per batch
    assert batches > 2 and steps[2] == (batches + 1) // 2, steps


def test_a_frozen_trunk_is_neither_averaged_nor_changed(data: tuple[Path, Path], tmp_path: Path):
    source = save_tiny_checkpoint(tmp_path / "src", seed=7)
    out = tmp_path / "r"
    flags = ["--init", str(source), "--freeze-encoder", "--no-augment", "--ema", "0.9"]
    assert main([*_argv(data, out), "--epochs", "2", *flags]) == 0
    state = load_state(out / "fold_0" / "last")
    assert state is not None and state.average
    assert not any(k.startswith("encoder.") for k in state.average)  # the head's alone
    # The trunk in best/ is the init's bit for bit, BatchNorm counters included, so its
    # embedding cache key stays the init's.
    trunk = load_checkpoint(out / "fold_0" / "best").model.encoder.state_dict()
    init = load_checkpoint(source).model.encoder.state_dict()
    assert all(torch.equal(v, init[k]) for k, v in trunk.items())
    assert any("num_batches_tracked" in k for k in trunk)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--ema", "1"], "--ema: expected a decay in [0, 1) (0 = off; 0.99 averages about"),
        (["--ema", "-0.5"], "--ema: expected a decay in [0, 1)"),
        (
            ["--ema", "0.9", "--bn-recalibrate", "2"],
            "--ema: the average keeps BatchNorm statistics averaged with the weights; drop "
            "--bn-recalibrate and --freeze-bn-after (or --ema)",
        ),
    ],
)
def test_bad_ema_is_one_line(
    data: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
):
    assert main([*_argv(data, tmp_path / "r"), "--epochs", "1", *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "r").exists()


def test_a_state_without_its_average_is_one_line(
    data: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    out = tmp_path / "r"
    assert main([*_argv(data, out), "--epochs", "1", "--ema", "0.5"]) == 0
    last = out / "fold_0" / "last"
    (tensor_file,) = last.glob("state-*.safetensors")
    tensors = load_file(str(tensor_file))
    save_file({k: v for k, v in tensors.items() if not k.startswith("average/")}, tensor_file)
    capsys.readouterr()
    assert main([*_argv(data, out), "--epochs", "2", "--ema", "0.5"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]  # after the fold's info lines
    assert line.startswith(f"luvnet train: error: {last}: the saved weight average holds 0 "), line
    assert line.endswith(f"a damaged training state; delete {last} to restart"), line
