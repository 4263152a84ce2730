"""Which checkpoint each fold of ``luvnet train --init`` starts from, and whether it has seen
that fold's held-out patients.

``--init`` takes a checkpoint (every fold starts from it) or a training run directory
(``run.json`` beside ``fold_<k>/``): fold k then starts from that run's ``fold_<k>/best``, which
is what fine-tuning after a frozen-trunk head needs (docs/training.md, "A small labelled set on a
CPU"): one command for all folds instead of one per fold. The run must have drawn the same
patient split as this one, or its fold k would not be this fold k.

A checkpoint that ``luvnet train`` wrote on this manifest has learnt from the labels of its
fold's training patients, and its validation patients picked its epoch. Starting a fold from it
that validates on those training patients, or tests on either, would give optimistic figures
that nothing on screen shows. :func:`seen_patients` re-derives the checkpoint's patients from
its split record (salted digests, never ids: :mod:`luvnet.engine.data.split_record`) and
:func:`check_init_fold` refuses the overlap. Only a manifest with the same patient ids and
``split`` column re-derives them: a checkpoint trained on another manifest (the phantom-trained
demo model, or a patient list since changed) cannot be checked, which is logged as a warning.
``--init RUN`` promises more, fold k from fold k, so there each ``fold_<k>/best`` must
re-derive as this run's fold k (:func:`check_run_fold`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from luvnet.engine.data.manifest import Manifest
from luvnet.engine.data.split_record import SplitNotDerived, recorded_digest, recorded_patients
from luvnet.engine.data.splits import SplitPlan
from luvnet.engine.errors import LuvnetError
from luvnet.engine.model.checkpoint import CONFIG_FILE, file_sha256, read_config
from luvnet.engine.model.config import ModelConfig
from luvnet.engine.training.init import build_fold_model, check_pretrained_fold
from luvnet.engine.training.run_record import run_split, split_keys
from luvnet.engine.training.settings import TrainSettings

log = logging.getLogger(__name__)

RUN_FILE = "run.json"  # what makes a directory a training run (engine/training/run_record.py)


@dataclass(frozen=True)
class SeenPatients:
    """This manifest's patients an ``--init`` checkpoint has used: ``train`` (their labels
    trained it) and ``val`` (they chose its epoch); ``record`` is its split record and
    ``frozen_from`` the model id its trunk is unchanged from (trained with ``--freeze-encoder``)."""

    train: frozenset[str]
    val: frozenset[str]
    record: Mapping[str, Any]
    frozen_from: str | None


def fold_inits(
    init: Path | None, folds: Sequence[int], plan: SplitPlan, split: Mapping[str, Any]
) -> dict[int, Path | None]:
    """Each fold's ``--init`` checkpoint: ``init`` itself, or for a training run directory its
    ``fold_<k>/best``; ``split`` is this run's split settings (``run_split``).

    Raises:
        LuvnetError: ``init`` is a run's fold directory, a run drawn with another patient split
            than ``plan``, or a run without a best checkpoint for one of ``folds``; one line
            each, with the fix.
    """
    if init is None or (init / CONFIG_FILE).is_file():
        return {k: init for k in folds}
    if (init / "best").is_dir() and not (init / RUN_FILE).is_file():
        raise LuvnetError(
            f"--init {init}: a fold directory of a training run, not a checkpoint; pass "
            f"{init / 'best'} for its best checkpoint, or {init.parent} to start each fold from "
            "its own"
        )
    if not (init / RUN_FILE).is_file():
        if not init.is_dir():
            return {k: init for k in folds}  # a file or nothing: load_checkpoint says which
        runs = sorted(str(d.parent) for d in init.glob(f"*/{RUN_FILE}"))[:3]
        raise LuvnetError(
            f"--init {init}: neither a checkpoint ({CONFIG_FILE} and its weights) nor a "
            f"training run ({RUN_FILE}); pass a checkpoint or a run directory"
            + (f" (runs in it: {', '.join(runs)})" if runs else "")
        )
    _check_run_split(init, plan, split)
    inits = {k: init / f"fold_{k}" / "best" for k in folds}
    missing = [k for k, path in inits.items() if not path.is_dir()]
    if missing:
        have = sorted(
            int(d.name.removeprefix("fold_"))
            for d in init.glob("fold_*")
            if d.name.removeprefix("fold_").isdigit() and (d / "best").is_dir()
        )
        raise LuvnetError(
            f"--init {init}: a training run with no fold_{missing[0]}/best (best checkpoints: "
            f"{', '.join(f'fold {k}' for k in have) or 'none'}); train fold {missing[0]} there "
            "first, or pass --fold with a fold it has"
        )
    return dict(inits)


def _check_run_split(run: Path, plan: SplitPlan, split: Mapping[str, Any]) -> None:
    """Refuse ``--init RUN`` whose run.json records another split than this run's."""
    one_by_one = f"pass --init {run}/fold_<k>/best --fold k, one fold at a time"
    try:
        document = json.loads((run / RUN_FILE).read_text(encoding="utf-8"))
        if isinstance(document, dict) and "split" not in document:
            raise LuvnetError(
                f"--init {run}: an older run whose {RUN_FILE} records no split, so its folds "
                f"cannot be matched to this run's; {one_by_one}"
            )
        recorded = document["split"]
        keys = split_keys(split)
        theirs = {key: recorded[key] for key in keys}
        digests = recorded["patient_digests"]
        same_test = recorded_digest(digests)(plan.test) == digests["test"]
    except (OSError, ValueError, KeyError, TypeError, OverflowError) as err:
        raise LuvnetError(
            f"--init {run / RUN_FILE}: unreadable split record ({type(err).__name__}: {err}); "
            f"expected the form luvnet train writes (docs/formats.md), or {one_by_one}"
        ) from None
    same_settings = theirs == {key: split[key] for key in keys}
    if same_settings and same_test:
        return
    why = (
        "the same split options but another test set (another patient list or split column)"
        if same_settings
        else f"{_options(recorded)} (this run: {_options(split)})"
    )
    raise LuvnetError(
        f"--init {run}: its folds were drawn with {why}, so its fold_<k> is not this run's "
        "fold k; train with the manifest and split options it was trained with (--split-seed "
        "keeps its split whatever --seed)"
    )


def _options(split: Mapping[str, Any]) -> str:
    """A split record's settings as the options that draw it."""
    if split.get("mode") == "fixed":
        return "the manifest's split column (train/val/test)"
    if split.get("mode") == "folds":
        return (
            f"--folds {split.get('folds')} --split-seed {split.get('seed')} on the manifest's "
            "numbered split column"
        )
    return (
        f"--folds {split.get('folds')} --test-fraction {split.get('test_fraction')} "
        f"--split-seed {split.get('seed')}"
    )


def seen_patients(init: Path, manifest: Manifest, *, quiet: bool = False) -> SeenPatients | None:
    """The patients of ``manifest`` that checkpoint ``init`` has used, from its split record;
    None when it has no record or its record does not re-derive from ``manifest`` (trained on
    other data; then a warning says it was not checked).

    Raises:
        LuvnetError: a damaged split record, or one that no longer re-derives from the very
            manifest it was trained on.
    """
    _, document = read_config(init)
    provenance = document.get("provenance")
    if not isinstance(provenance, Mapping) or not isinstance(provenance.get("split"), Mapping):
        if not quiet and not (isinstance(provenance, Mapping) and "pretrain" in provenance):
            log.warning("--init %s: no split record, so not checked against this run's folds", init)
        return None  # a luvnet pretrain trunk: check_pretrained_fold holds it to its fold
    record = provenance["split"]
    _check_record(init, record)
    try:
        train = recorded_patients(manifest, provenance, "train", init)
        val = recorded_patients(manifest, provenance, "val", init)
    except SplitNotDerived:  # a damaged record is refused by recorded_patients itself
        if provenance.get("manifest_sha256") == file_sha256(manifest.path):
            raise LuvnetError(  # the very file it was trained on: the record is wrong
                f"--init {init}: its split record does not re-derive from {manifest.path}, the "
                "manifest it was trained on (a damaged record); --init another checkpoint, or "
                "retrain this one"
            ) from None
        if quiet:
            return None
        log.warning(
            "--init %s: its split record does not re-derive from %s (other data, or a patient "
            "list or split column changed since), so it is not checked against this run's "
            "folds; fine for other data such as the phantom, a leak if the two share patients",
            init,
            manifest.path,
        )
        return None
    init_record = provenance.get("init")
    frozen_from = (
        str(init_record.get("model_id"))
        if provenance.get("freeze_encoder") is True and isinstance(init_record, Mapping)
        else None
    )
    return SeenPatients(train or frozenset(), val or frozenset(), record, frozen_from)


def _check_record(init: Path, record: Mapping[str, Any]) -> None:
    """A split record with the train and val digests (or older clear lists) the check needs:
    :func:`recorded_patients` takes a set without one for an unrecorded split."""
    try:
        if not isinstance(record.get("patients"), Mapping):  # digests, not clear ids
            digests = record["patient_digests"]
            for name in ("train", "val"):
                bytes.fromhex(digests[name])
    except (KeyError, TypeError, ValueError, OverflowError) as err:
        raise LuvnetError(
            f"--init {init}: its provenance split record is damaged ({type(err).__name__}: "
            f"{err}); expected the form luvnet train writes (docs/formats.md), or --init "
            "another checkpoint"
        ) from None


def check_init_fold(
    init: Path,
    seen: SeenPatients,
    plan: SplitPlan,
    fold: int,
    split: Mapping[str, Any],
    *,
    head: bool,
    runs: bool = True,
) -> None:
    """Refuse ``init`` for ``fold`` when its training patients are this fold's validation or
    test patients, or its validation patients (they chose its epoch) are tested on here.

    ``runs``: the command takes ``--init RUN`` (``luvnet train``; ``luvnet pretrain`` does not).

    Raises:
        LuvnetError: one line naming the checkpoint, the fold, how many patients overlap which
            set, and the fix for the case (another split, or another fold of this one).
    """
    held = plan.fold(fold)
    overlaps = [
        (len(seen.train & held.val), "training", "validation"),
        (len(seen.train & held.test), "training", "test"),
        (len(seen.val & held.test), "validation", "test"),
    ]
    count, theirs, ours = next((o for o in overlaps if o[0]), (0, "", ""))
    if not count:
        return
    record = seen.record
    keys = split_keys(split)
    source = record.get("fold")
    if {key: record.get(key) for key in keys} != {key: split[key] for key in keys}:
        fix = (
            f"it was trained on fold {source} of the split {_options(record)} (this run: "
            f"{_options(split)}); pass those options and --fold {source} to start from it"
        )
    else:
        run = init.parent.parent  # RUN/fold_<k>/best, as luvnet train writes them
        if init.name == "best" and (run / RUN_FILE).is_file():
            own = f"{run / f'fold_{fold}' / 'best'}"
            every = f", or --init {run} for every fold"
        else:
            own, every = f"that run's fold_{fold}/best", ", or --init RUN for every fold"
        own += every if runs else ""
        fix = f"it was trained on fold {source} of this split; start fold {fold} from {own}"
    if seen.frozen_from is not None and not head:
        fix += (
            f"; for its trunk alone, --init the checkpoint it was trained from (model id "
            f"{seen.frozen_from}): --freeze-encoder left the trunk as that one's"
        )
    raise LuvnetError(
        f"--init {init}: {count} of its {theirs} patients are fold {fold}'s {ours} patients "
        f"here, so fold {fold}'s figures would be optimistic; {fix}"
    )


def check_run_fold(run: Path, seen: SeenPatients | None, manifest: Manifest, fold: int) -> None:
    """Refuse ``--init RUN`` when ``RUN/fold_<fold>/best`` was not trained on this run's fold
    ``fold``: it has no split record, its record names another fold, or it does not re-derive
    from ``manifest`` (``seen`` None). With the run's split settings and test set already
    matched (:func:`fold_inits`), the last means a patient list or ``split`` column changed
    between the two runs; digests cannot tell an added patient from one moved between
    training and validation, so both are refused.

    Raises:
        LuvnetError: one line naming the run, the fold, the reason and the fix.
    """
    checkpoint = run / f"fold_{fold}" / "best"
    if seen is not None:
        record: object = seen.record
    else:  # read again only to say why it was not derived
        _, document = read_config(checkpoint)
        provenance = document.get("provenance")
        record = provenance.get("split") if isinstance(provenance, Mapping) else None
    if not isinstance(record, Mapping):
        why = "it has no split record"
    elif record.get("fold") != fold:
        why = f"its split record names fold {record.get('fold')}"
    elif seen is None:
        why = (
            f"its split record does not re-derive from {manifest.path}: its patients or split "
            "column changed since that run, though not its test set"
        )
    else:
        return
    raise LuvnetError(
        f"--init {run}: its fold_{fold}/best was not trained on this run's fold {fold} ({why}); "
        f"train both steps on one manifest, or pass --init {checkpoint} --fold {fold} to start "
        "from that checkpoint as it is"
    )


def fold_starts(
    settings: TrainSettings,
    config: ModelConfig,
    manifest: Manifest,
    plan: SplitPlan,
    folds: list[int],
    *,
    quiet: bool = False,
) -> tuple[dict[int, Path | None], dict[int, str | None], dict[int, dict[str, Any]]]:
    """Per fold: the ``--init`` checkpoint (:func:`fold_inits`), its model id, and the
    pretraining split record its checkpoints carry on; each distinct checkpoint is built
    into the model and checked against its folds (:func:`check_init_fold`) once.

    Raises:
        LuvnetError: a model that cannot be built, an incompatible or missing ``--init``, or
            one that has seen patients a fold holds out. ``quiet``: no warnings (other ranks).
    """
    s = settings
    split = run_split(s, plan)
    inits = fold_inits(s.init, folds, plan, split)
    ids, carried = {}, {}
    for path in dict.fromkeys(inits.values()):
        using = [k for k in folds if inits[k] == path]
        _, model_id = build_fold_model(config, s.weights, s.seed, s, path)
        record = check_pretrained_fold(path, plan, using)  # a pretrained trunk has seen patients
        from_run = path is not None and path != s.init  # RUN/fold_<k>/best
        seen = seen_patients(path, manifest, quiet=quiet or from_run) if path is not None else None
        for k in using:
            if from_run and s.init is not None:
                check_run_fold(s.init, seen, manifest, k)
            if seen is not None and path is not None:
                check_init_fold(path, seen, plan, k, split, head=s.init_head)
            ids[k], carried[k] = model_id, record
    return inits, ids, carried
