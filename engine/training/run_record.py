"""``RUN/run.json``, the record of a training run (docs/formats.md, "Training run directory").

Written before any fold trains, and again on each resume; a resume that would draw another
patient split than the run's (:func:`check_run_split`), or that any fold's saved state refuses,
is refused before the record is touched, so run.json never describes folds its checkpoints were
not trained on.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from luvnet.engine.data.split_record import describe_sets
from luvnet.engine.data.splits import SplitPlan
from luvnet.engine.data.unreadable import SkippedVideo
from luvnet.engine.errors import LuvnetError
from luvnet.engine.files import write_json
from luvnet.engine.model.config import ModelConfig
from luvnet.engine.training.settings import TrainSettings

SPLIT_KEYS = ("mode", "seed", "test_fraction", "folds")  # what draws the patient split


def write_run_json(
    settings: TrainSettings,
    config: ModelConfig,
    plan: SplitPlan,
    manifest_sha: str,
    command: str,
    salt: str,
    skipped: list[SkippedVideo] | None = None,
) -> None:
    """``RUN/run.json``; the test patients as a count and a digest, never their ids. Call
    :func:`check_run_split` (and check the folds' saved settings) first."""
    split = run_split(settings, plan)
    document = {
        "model": config.variant,
        "backbone": config.backbone,
        "config": config.to_dict(),
        "manifest": str(settings.manifest),  # as typed: a resolved path names this machine
        "manifest_sha256": manifest_sha,
        "split_mode": plan.mode,
        "folds": len(plan),
        "split": split | describe_sets({"test": plan.test}, salt),
        "args": settings.record(),
        "command": command,
        "updated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
    }
    if skipped is not None:
        document["skipped_videos"] = [item.to_dict() for item in skipped]
    write_json(settings.out / "run.json", document, indent=2)


def run_split(settings: TrainSettings, plan: SplitPlan) -> dict[str, Any]:
    """The settings that draw the run's patient split, as run.json records them."""
    seed, fraction = settings.patient_split_seed, settings.test_fraction
    return split_settings(plan, seed=seed, test_fraction=fraction)


def split_settings(plan: SplitPlan, *, seed: int, test_fraction: float) -> dict[str, Any]:
    """The settings that drew ``plan`` (mode, seed, test fraction, folds), in the form split
    records hold them."""
    return {"mode": plan.mode, "seed": seed, "test_fraction": test_fraction, "folds": len(plan)}


def check_run_split(settings: TrainSettings, plan: SplitPlan) -> None:
    """:func:`check_split` of ``RUN/run.json`` against the split this command draws.

    Raises:
        LuvnetError: ``RUN/run.json`` exists and records another split.
    """
    check_split(settings.out / "run.json", run_split(settings, plan))


def check_split(path: Path, split: Mapping[str, Any]) -> None:
    """Refuse to resume the run recorded at ``path`` with another patient split: its folds'
    checkpoints would go on training, and be scored, on other patients.

    A missing or unreadable record passes (the folds' own fingerprints still guard them).

    Raises:
        LuvnetError: one line with the recorded and the new split and the fix.
    """
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))["split"]
        keys = split_keys(split)
        old = {key: recorded[key] for key in keys}
    except (OSError, ValueError, KeyError, TypeError):
        return
    new = {key: split[key] for key in keys}
    if old != new:
        raise LuvnetError(
            f"{path.parent}: trained on the patient split {_describe(old)}, this command draws "
            f"{_describe(new)}; resume with the split options it was trained with (--split-seed "
            f"{old.get('seed')} keeps the folds whatever --seed), or train into a new --out"
        )


def split_keys(split: Mapping[str, Any]) -> tuple[str, ...]:
    """The settings that draw a split of this mode: none but the mode for a fixed ``split``
    column, no test fraction for a numbered one (the column holds the test patients)."""
    if split["mode"] == "fixed":
        return ("mode",)
    if split["mode"] == "folds":
        return ("mode", "seed", "folds")
    return SPLIT_KEYS


def _describe(split: dict[str, Any]) -> str:
    return "(" + ", ".join(f"{key} {value}" for key, value in split.items()) + ")"
