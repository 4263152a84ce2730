"""Which checkpoint each fold of ``luvnet train --init`` starts from, and whether it has seen
that fold's held-out patients.

``--init`` takes a checkpoint (every fold starts from it) or a training run directory
(``run.json`` beside ``fold_<k>/``): fold k then starts from that run's ``fold_<k>/best``, which
is what fine-tuning after a frozen-trunk head needs (docs/training.md, "A small labelled set on a
CPU"): one command for all folds instead of one per fold.

A checkpoint that ``luvnet train`` wrote on this manifest has learnt from the labels of its
fold's training patients, and its validation patients picked its epoch. Starting another fold
(or another split) from it would validate or test on patients whose labels it has already used:
optimistic figures that nothing on screen shows. :func:`check_init_patients` re-derives the
checkpoint's patients from its split record (salted digests, never ids:
:mod:`luvnet.engine.data.split_record`) and refuses that overlap. A checkpoint trained on other
data (the phantom-trained demo model) has a record this manifest does not re-derive, and passes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from luvnet.engine.data.manifest import Manifest
from luvnet.engine.data.split_record import recorded_patients
from luvnet.engine.data.splits import SplitPlan
from luvnet.engine.errors import LuvnetError
from luvnet.engine.model.checkpoint import CONFIG_FILE, read_config
from luvnet.engine.model.config import ModelConfig
from luvnet.engine.training.init import build_fold_model, check_pretrained_fold
from luvnet.engine.training.settings import TrainSettings

log = logging.getLogger(__name__)

RUN_FILE = "run.json"  # what makes a directory a training run (engine/training/run_record.py)


def fold_inits(init: Path | None, folds: Sequence[int]) -> dict[int, Path | None]:
    """Each fold's ``--init`` checkpoint: ``init`` itself, or for a training run directory its
    ``fold_<k>/best``.

    Raises:
        LuvnetError: ``init`` is a run without a best checkpoint for one of ``folds``; one line
            naming the folds it has.
    """
    if init is None or (init / CONFIG_FILE).is_file() or not (init / RUN_FILE).is_file():
        return {k: init for k in folds}  # a checkpoint (or not one: load_checkpoint says so)
    inits = {k: init / f"fold_{k}" / "best" for k in folds}
    missing = [k for k, path in inits.items() if not path.is_dir()]
    if missing:
        have = sorted(
            int(d.name.removeprefix("fold_"))
            for d in init.glob("fold_*")
            if d.name.removeprefix("fold_").isdigit() and (d / "best").is_dir()
        )
        raise LuvnetError(
            f"--init {init}: a training run with no fold_{missing[0]}/best (best checkpoints "
            f"for folds {', '.join(map(str, have)) or 'none'}); train fold {missing[0]} there "
            "first, or pass --fold with one of those folds"
        )
    return dict(inits)


def check_init_patients(init: Path | None, manifest: Manifest, plan: SplitPlan, fold: int) -> None:
    """Refuse ``init`` for ``fold`` when it was trained on this manifest's patients and some of
    them are this fold's validation or test patients: its training patients must not be held
    out here, nor its validation patients (they chose its epoch) be tested on.

    A checkpoint without a split record, or one whose record ``manifest`` does not re-derive
    (other data, another patient list), cannot be checked and passes, with a log line.

    Raises:
        LuvnetError: one line naming the checkpoint, the fold, how many patients overlap which
            set, and the fix.
    """
    if init is None:
        return
    _, document = read_config(init)
    provenance = document.get("provenance")
    if not isinstance(provenance, dict) or not isinstance(provenance.get("split"), dict):
        return
    try:
        seen = {k: recorded_patients(manifest, provenance, k, init) for k in ("train", "val")}
    except LuvnetError:  # trained on other data: no patient of this manifest to overlap
        log.info("--init %s: trained on other patients than %s (not checked)", init, manifest.path)
        return
    held = plan.fold(fold)
    trained, chose = seen["train"] or frozenset(), seen["val"] or frozenset()
    overlaps = [
        (len(trained & held.val), "training", "validation"),
        (len(trained & held.test), "training", "test"),
        (len(chose & held.test), "validation", "test"),
    ]
    for count, theirs, ours in overlaps:
        if count:
            raise LuvnetError(
                f"--init {init}: {count} of its {theirs} patients are fold {fold}'s {ours} "
                f"patients here (it was trained on fold {provenance['split'].get('fold')} of "
                f"split seed {provenance['split'].get('seed')}), so fold {fold}'s figures would "
                "be optimistic; start each fold from the same fold's checkpoint of the same "
                "split (--init RUN_DIR does that for every fold), or train fold "
                f"{provenance['split'].get('fold')} only"
            )


def fold_starts(
    settings: TrainSettings,
    config: ModelConfig,
    manifest: Manifest,
    plan: SplitPlan,
    folds: list[int],
) -> tuple[dict[int, Path | None], dict[int, str | None], dict[int, dict[str, Any]]]:
    """Per fold: the ``--init`` checkpoint (engine/training/fold_init.py), its model id, and the
    pretraining split record its checkpoints carry on; every fold's model built once here.

    Raises:
        LuvnetError: a model that cannot be built, an incompatible or missing ``--init``, or
            one that has seen patients a fold holds out.
    """
    s = settings
    inits = fold_inits(s.init, folds)
    ids, seen = {}, {}
    for path in dict.fromkeys(inits.values()):  # each distinct checkpoint once
        using = [k for k in folds if inits[k] == path]
        _, model_id = build_fold_model(config, s.weights, s.seed, s, path)
        record = check_pretrained_fold(path, plan, using)  # a pretrained trunk has seen patients
        for k in using:
            check_init_patients(path, manifest, plan, k)
            ids[k], seen[k] = model_id, record
    return inits, ids, seen
