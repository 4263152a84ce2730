"""Demo-model export: float16 weights at about half the size, loading back to the same scores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from luvnet.cli import main
from luvnet.commands import demo_model
from luvnet.commands.train import add_arguments
from luvnet.engine.data.split_record import patients_digest
from luvnet.engine.data.splits import make_splits
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
    assert "patients" not in document["provenance"]["split"]
    assert document["provenance"]["split"]["patient_digests"]["method"] == "scrypt"
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
        Path("w"), Path("o"), None, False, None,
    )  # fmt: skip
    args = parser.parse_args(["--work", "w", "--out", "o", "--max-minutes", "2", "--float32"])
    assert args.max_minutes == 2.0 and args.float32


def test_the_committed_demo_model_records_its_split_without_patient_ids():
    """engine/demo_model lists no patient id; its digests are those of the split the recipe
    draws (phantom patients ``phantom-SEED-PPPP``, luvnet train's seeded split), so the
    re-export kept the same patients and weights."""
    demo = Path(__file__).resolve().parents[3] / "engine" / "demo_model"
    text = (demo / CONFIG_FILE).read_text()
    assert "phantom-" not in text, "patient ids in the demo model's config.json"
    provenance = json.loads(text)["provenance"]
    # The recipe's train step as typed, with the recipe's options, and no machine's folders.
    assert provenance["command"].startswith("luvnet train --manifest "), provenance["command"]
    assert provenance["command"].endswith(" ".join(demo_model.demo.recipe_flags(TRAIN)))
    assert provenance["demo_recipe"]["train"] == TRAIN
    record = provenance["split"]
    patients = [
        f"phantom-{PHANTOM['--seed']}-{i // int(PHANTOM['--videos-per-patient']):04d}"
        for i in range(int(PHANTOM["--videos"]))
    ]
    plan = make_splits(
        patients,
        test_fraction=float(TRAIN["--test-fraction"]),
        k=int(TRAIN["--folds"]),
        seed=int(TRAIN["--seed"]),
    )
    fold = plan.fold(int(TRAIN["--fold"]))
    digests = record["patient_digests"]
    params = {k: digests[k] for k in ("n", "r", "p")}
    for name in ("train", "val", "test"):
        patients_of = getattr(fold, name)
        assert record["patient_counts"][name] == len(patients_of)
        assert digests[name] == patients_digest(patients_of, digests["salt"], **params), name


def test_checkpoints_record_the_command_by_program_name_not_install_path(tmp_path: Path):
    """`luvnet train` run as the installed console script (``sys.argv[0]`` is then its
    absolute path) records ``luvnet train ...`` in run.json and the checkpoint: a shared
    checkpoint must not carry the trainer's folders."""
    import subprocess
    import sys

    script = Path(sys.executable).with_name("luvnet")
    if not script.is_file():
        pytest.skip(f"no luvnet console script beside {sys.executable} (not pip-installed)")
    manifest = make_dataset(tmp_path / "videos", seed=5)
    argv = ["train", "--manifest", str(manifest), "--out", str(tmp_path / "run")]
    argv += ["--cache", str(tmp_path / "cache"), *TINY]
    done = subprocess.run([str(script), *argv], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    run_json = json.loads((tmp_path / "run" / "run.json").read_text())
    best = json.loads((tmp_path / "run" / "fold_0" / "best" / CONFIG_FILE).read_text())
    typed = " ".join(["luvnet", *argv])
    assert run_json["command"] == typed
    assert best["provenance"]["command"] == typed
    assert str(script.parent) not in best["provenance"]["command"]


def test_the_demo_recipe_records_its_train_step_as_typed(tmp_path: Path):
    """The demo command's checkpoint records the ``luvnet train`` step it ran, which rebuilds
    the model, not the outer ``python -m luvnet.commands.demo_model`` process."""
    manifest = make_dataset(tmp_path / "videos", seed=6)
    argv = ["--manifest", str(manifest), "--out", str(tmp_path / "run")]
    argv += ["--cache", str(tmp_path / "cache"), *TINY]
    demo_model.run_command(demo_model.train_command, "train", argv)
    best = load_checkpoint(tmp_path / "run" / "fold_0" / "best")
    assert best.provenance["command"] == " ".join(["luvnet", "train", *argv])
