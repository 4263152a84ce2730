"""Demo-model export: float16 weights at about half the size, loading back to the same scores."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from luvnet.cli import main
from luvnet.commands import demo_model
from luvnet.commands.train import add_arguments
from luvnet.engine.model.checkpoint import CONFIG_FILE, WEIGHTS_FILE, load_checkpoint
from luvnet.engine.training.demo import PHANTOM, STREAM_WINDOW, TRAIN, export
from tests.engine.tiny_data import TINY_TRAIN_ARGS, make_dataset

TINY = [*TINY_TRAIN_ARGS, "--epochs", "1"]


def test_half_precision_export_halves_the_file_and_keeps_the_scores(tmp_path: Path):
    manifest = make_dataset(tmp_path / "videos", seed=7)
    run = tmp_path / "run"
    argv = ["train", "--manifest", str(manifest), "--out", str(run), "--cache"]
    assert main([*argv, str(tmp_path / "cache"), *TINY]) == 0
    fold = run / "fold_0"
    half = export(fold, tmp_path / "half", half=True, recipe={"test": True})
    full = load_checkpoint(fold / "best")
    size_half = (half / WEIGHTS_FILE).stat().st_size
    size_full = (fold / "best" / WEIGHTS_FILE).stat().st_size
    assert size_half < 0.55 * size_full, (size_half, size_full)
    with safe_open(str(half / WEIGHTS_FILE), "pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}  # noqa: SIM118
    assert "F16" in dtypes and "F32" not in dtypes, dtypes
    loaded = load_checkpoint(half)
    # Thresholds and preprocessing travel unchanged; the window becomes the stream's.
    assert loaded.config == full.config.replace(clip_length=STREAM_WINDOW, clip_step=24)
    assert loaded.config.clip_length == 30 != full.config.clip_length
    document = json.loads((half / CONFIG_FILE).read_text())
    assert document["provenance"]["weights_dtype"] == "float16"
    assert "test_auc" in document["metrics"]
    clip = torch.randn(2, 8, 3, 32, 32)
    with torch.no_grad():
        a, _ = full.model(clip)
        b, _ = loaded.model(clip)
    torch.testing.assert_close(torch.sigmoid(a), torch.sigmoid(b), atol=2e-2, rtol=0)


def test_recipe_flags_are_accepted_by_the_commands():
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    flags = [x for pair in TRAIN.items() for x in pair]
    args = parser.parse_args(["--manifest", "m.csv", "--out", "o", *flags])
    assert args.backbone == "mobilenet_v3_small" and args.lr == float(TRAIN["--lr"])
    parser = argparse.ArgumentParser()
    demo_model.phantom_command.add_arguments(parser)
    assert parser.parse_args(["--out", "x", *[x for p in PHANTOM.items() for x in p]]).videos


def test_demo_model_command_keeps_its_options():
    import argparse

    parser = argparse.ArgumentParser()
    demo_model.add_arguments(parser)
    args = parser.parse_args(["--work", "w", "--out", "o"])
    assert (args.work, args.out, args.max_minutes, args.float32, args.cache) == (
        Path("w"), Path("o"), 15.0, False, None,
    )  # fmt: skip
    args = parser.parse_args(["--work", "w", "--out", "o", "--max-minutes", "2", "--float32"])
    assert args.max_minutes == 2.0 and args.float32
