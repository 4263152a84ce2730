"""``luvnet train --augment-zoom/--augment-jitter``: clip zoom and intensity jitter on top of the
paper's flip and rotation (engine/data/views.py), recorded and held to on resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from luvnet.cli import main
from luvnet.engine.training.state import load_state
from tests.engine.tiny_data import TINY_TRAIN_ARGS, make_dataset

AUGMENT = ["--augment-zoom", "1.4", "--augment-jitter", "0.3"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return make_dataset(root / "videos"), root / "cache"


def _argv(data: tuple[Path, Path], out: Path) -> list[str]:
    manifest, cache = data
    argv = ["train", "--manifest", str(manifest), "--out", str(out), "--cache", str(cache)]
    return [*argv, *TINY_TRAIN_ARGS, "--epochs", "1"]


def _weights(out: Path) -> dict[str, torch.Tensor]:
    state = load_state(out / "fold_0" / "last")
    assert state is not None
    return state.model


def test_zoom_and_jitter_reach_training_are_recorded_and_held_on_resume(
    data: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    plain, strong = tmp_path / "plain", tmp_path / "strong"
    assert main(_argv(data, plain)) == 0
    assert main([*_argv(data, strong), *AUGMENT]) == 0
    args = json.loads((strong / "run.json").read_text())["args"]
    assert (args["augment_zoom"], args["augment_jitter"]) == (1.4, 0.3)
    # the same seed, batches and flips/rotations: only the clips' zoom and jitter differ
    a, b = _weights(plain), _weights(strong)
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())
    capsys.readouterr()
    # resuming without the options would continue on other clips than it started on
    assert main([*_argv(data, strong), "--epochs", "2"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("luvnet train: error: ") and "saved with augment_jitter=0.3" in last
    assert main([*_argv(data, strong), *AUGMENT, "--epochs", "2"]) == 0  # the same: resumes
    assert load_state(strong / "fold_0" / "last").progress.epoch == 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--augment-zoom", "0.5"], "--augment-zoom: expected a finite magnification >= 1"),
        (["--augment-zoom", "inf"], "--augment-zoom: expected a finite magnification >= 1"),
        (["--augment-zoom", "nan"], "--augment-zoom: expected a finite magnification >= 1"),
        (["--augment-jitter", "1"], "--augment-jitter: expected a number in [0, 1) (0 = none)"),
        (
            ["--augment-jitter", "0.2", "--no-augment"],
            "--augment-jitter: augment training clips; drop --no-augment (or --augment-jitter)",
        ),
        (
            [*AUGMENT, "--no-augment"],
            "--augment-zoom and --augment-jitter: augment training clips; drop --no-augment",
        ),
    ],
)
def test_bad_augmentation_options_are_one_line(
    data: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
):
    assert main([*_argv(data, tmp_path / "r"), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("luvnet train: error: "), err
    assert message in err, err
