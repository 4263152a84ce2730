"""The demo-model recipe: a phantom training set and a small LUV-Net trained on it, reproducibly.

    python -m luvnet.engine.training.demo --work scratch/demo --out engine/demo_model

1. ``luvnet phantom`` writes :data:`PHANTOM` (synthetic convex-probe videos with frame-level
   truth, one video per synthetic patient) into ``WORK/phantom``.
2. ``luvnet train`` trains :data:`TRAIN` on fold 0 of that set into ``WORK/run``: a
   mobilenet_v3_small trunk from random initialisation (no ImageNet weights can be had
   offline) with a reduced LUV-Net head, under a wall-clock budget (``--max-minutes``, 15)
   over which the learning rate decays linearly to zero.
3. The best checkpoint is written to ``OUT`` with float16 weights (half the bytes;
   :func:`engine.checkpoint.load_checkpoint` copies them into the float32 model), its
   held-out test metrics and the recipe in the checkpoint's metrics and provenance, and the
   stream window set to :data:`STREAM_WINDOW` (the head is length-agnostic: masked mean
   and attention over however many frames the window holds).

Seeds are fixed everywhere (phantom, split, initialisation, shuffling, augmentation), so the
same command gives the same model on the same machine, except where the time budget cuts
training at a different step (on a shared CPU it depends on the load: the recipe's figures
are from an idle 2-core machine; set ``--max-minutes`` high and ``--epochs`` to fix the
length exactly, and the schedule then spans the epochs). Why these settings: docs/results.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

import torch

from luvnet.engine.errors import LuvnetError
from luvnet.engine.evaluation.metrics import read_metrics
from luvnet.engine.model.checkpoint import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    load_checkpoint,
    save_checkpoint,
)
from luvnet.engine.model.config import ModelConfig

PHANTOM: dict[str, str] = {
    "--videos": "1800",
    "--seconds": "0.8",  # 24 frames: 3 clips of 8; many short videos = many anatomies per step
    "--size": "240x320",
    "--videos-per-patient": "1",  # one video per synthetic patient
    "--seed": "3",
}
TRAIN: dict[str, str] = {
    "--backbone": "mobilenet_v3_small",
    "--model": "luvnet",
    "--image-size": "64",
    "--clip-length": "8",  # 8 clips x 8 frames per step: 8 videos per BatchNorm batch
    "--clip-step": "8",
    "--fusion-hidden": "256",
    "--classifier-hidden": "128",
    "--lr": "1e-3",  # random init: the paper's 1e-6 is for fine-tuning ImageNet weights
    "--lr-schedule": "linear",  # to zero over the time budget (--max-minutes)
    "--freeze-bn-after": "0.75",  # the last quarter with the statistics the stream uses
    "--batch-size": "8",
    "--bn-recalibrate": "16",
    "--epochs": "100",
    "--patience": "100",
    "--folds": "5",
    "--fold": "0",
    "--test-fraction": "0.25",
    "--seed": "0",
    "--device": "cpu",
    "--threads": "2",  # on an idle 2-core machine; use 1 on a loaded one (docs/results.md)
}
MAX_MINUTES = 15.0  # the training budget, which the linear schedule spans
# Trained on 8-frame clips, streamed over the spec's window (the config's defaults: 30, step 24).
STREAM_WINDOW = ModelConfig.clip_length
STREAM_STEP = ModelConfig.clip_step


def _flags(options: dict[str, str]) -> list[str]:
    return [item for pair in options.items() for item in pair]


def _run_command(module_name: str, argv: list[str]) -> None:
    """Run a luvnet subcommand in-process through its own parser (as the CLI would)."""
    import importlib

    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"luvnet {module_name.rsplit('.', 1)[-1]}")
    module.add_arguments(parser)
    code = module.run(parser.parse_args(argv))
    if code:
        raise LuvnetError(f"{module_name} {' '.join(argv)}: exited with {code}")


def half_precision_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A float16 copy for saving; integer buffers (BatchNorm counters) stay as they are."""
    return copy.deepcopy(model).half()


def build_demo(
    work: Path,
    out: Path,
    *,
    max_minutes: float | None = MAX_MINUTES,
    half: bool = True,
    cache: Path | None = None,
) -> Path:
    """Generate, train and export; returns ``out``."""
    phantom = work / "phantom"
    if not (phantom / "manifest.csv").is_file():
        _run_command("luvnet.plugins.phantom.generate", ["--out", str(phantom), *_flags(PHANTOM)])
    run_dir = work / "run"
    train = ["--manifest", str(phantom / "manifest.csv"), "--out", str(run_dir), *_flags(TRAIN)]
    if max_minutes is not None:
        train += ["--max-minutes", str(max_minutes)]
    if cache is not None:
        train += ["--cache", str(cache)]
    _run_command("luvnet.engine.training.folds", train)
    return export(run_dir / "fold_0", out, half=half, recipe={"phantom": PHANTOM, "train": TRAIN})


def export(fold_dir: Path, out: Path, *, half: bool, recipe: dict[str, Any]) -> Path:
    """The fold's best checkpoint, optionally float16, with its test metrics attached."""
    ckpt = load_checkpoint(fold_dir / "best")
    metrics = dict(ckpt.metrics)
    test_path = fold_dir / "metrics_test.json"
    if test_path.is_file():
        test = read_metrics(test_path)
        metrics["test_auc"] = {name: entry["auc"] for name, entry in test["patterns"].items()}
        metrics["test_micro_auc"] = test["micro_auc"]
        metrics["test_macro_auc"] = test["macro_auc"]
        metrics["test_n_clips"] = test["n_clips"]
    provenance = dict(ckpt.provenance) | {
        "demo_recipe": recipe,
        "weights_dtype": "float16" if half else "float32",
    }
    model = half_precision_copy(ckpt.model) if half else ckpt.model
    config = ckpt.config.replace(clip_length=STREAM_WINDOW, clip_step=STREAM_STEP)
    save_checkpoint(model, out, config=config, provenance=provenance, metrics=metrics)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m luvnet.engine.training.demo", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--work", type=Path, required=True, help="phantom set and run folder")
    parser.add_argument("--out", type=Path, required=True, help="checkpoint folder to write")
    parser.add_argument(
        "--max-minutes", type=float, default=MAX_MINUTES, help="training budget (minutes)"
    )
    parser.add_argument("--float32", action="store_true", help="keep float32 weights")
    parser.add_argument("--cache", type=Path, default=None, help="frame cache folder")
    args = parser.parse_args(argv)
    try:
        out = build_demo(
            args.work, args.out, max_minutes=args.max_minutes, half=not args.float32,
            cache=args.cache,
        )  # fmt: skip
    except LuvnetError as err:
        print(f"engine.demo: error: {err}", file=sys.stderr)
        return 2
    size = (out / WEIGHTS_FILE).stat().st_size
    summary = json.loads((out / CONFIG_FILE).read_text())["metrics"]
    print(f"wrote {out} ({size / 1e6:.1f} MB weights); test AUC {summary.get('test_auc')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
