"""``luvnet train --init CHECKPOINT``: start a run from another checkpoint's weights.

The trunk is always taken from the checkpoint; the clip head only with ``--init-head`` (a
head trained on other data or for another variant is rarely what a comparison between
variants wants, so it stays randomly initialised unless asked for). A checkpoint whose trunk
does not fit the run (another backbone, embedding width, input size or normalisation) is
refused with one line that names the checkpoint, what differs and the fix.

A trunk ``luvnet pretrain`` wrote has seen the frames of one fold's training patients, who
are every other fold's validation patients: :func:`check_pretrained_fold` lets it train that
fold of that split only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from luvnet.engine.data.manifest import Manifest
from luvnet.engine.data.split_record import recorded_patients
from luvnet.engine.errors import LuvnetError
from luvnet.engine.model.checkpoint import load_checkpoint, read_config
from luvnet.engine.model.network import LUVNet

if TYPE_CHECKING:
    from luvnet.engine.training.settings import TrainSettings


def init_from_checkpoint(model: LUVNet, path: str | Path, *, head: bool = False) -> str:
    """Copy the trunk (and with ``head`` the clip head) of checkpoint ``path`` into ``model``.

    Returns:
        The checkpoint's model id (first 12 hex digits of its weights' SHA-256), for the
        run's provenance; never its path.

    Raises:
        LuvnetError: the checkpoint is unreadable, its trunk does not fit ``model`` (backbone,
            embedding width D, image size S, mean/std), or ``head`` is asked and its head
            differs (variant, pattern count or any weight shape).
    """
    source = load_checkpoint(path)
    src, dst = source.config, model.config
    differ = []
    if src.backbone != dst.backbone:
        differ.append(f"backbone {src.backbone} (this run: {dst.backbone})")
    elif source.model.embed_dim != model.embed_dim:
        differ.append(f"embedding size {source.model.embed_dim} (this run: {model.embed_dim})")
    sp, dp = src.preprocess, dst.preprocess
    if sp.image_size != dp.image_size:
        differ.append(f"image size {sp.image_size} (this run: {dp.image_size})")
    if (sp.mean, sp.std) != (dp.mean, dp.std):
        differ.append(f"normalisation mean/std {sp.mean}/{sp.std} (this run: {dp.mean}/{dp.std})")
    if differ:
        raise LuvnetError(
            f"--init {path}: its trunk does not fit this run: {'; '.join(differ)}; pass "
            f"--backbone {src.backbone} --image-size {sp.image_size} to train from it, or "
            "choose a checkpoint of this run's trunk"
        )
    model.encoder.load_state_dict(source.model.encoder.state_dict(), strict=True)
    if head:
        _copy_head(source.model, model, path)
    return source.model_id


def _copy_head(source: LUVNet, model: LUVNet, path: str | Path) -> None:
    src, dst = source.config, model.config
    if src.variant != dst.variant or src.num_patterns != dst.num_patterns:
        raise LuvnetError(
            f"--init-head {path}: its head is {src.variant} with {src.num_patterns} patterns, "
            f"this run's {dst.variant} with {dst.num_patterns}; drop --init-head (trunk only) "
            "or pass --model to match"
        )
    theirs, ours = source.clip_head.state_dict(), model.clip_head.state_dict()
    for key, tensor in ours.items():
        if key not in theirs or tuple(theirs[key].shape) != tuple(tensor.shape):
            shape = tuple(theirs[key].shape) if key in theirs else "absent"
            raise LuvnetError(
                f"--init-head {path}: head weight {key} is {shape} there, {tuple(tensor.shape)} "
                "here (other --num-heads/--fusion-hidden/--classifier-hidden/--kernel-size?); "
                "match them or drop --init-head"
            )
    model.clip_head.load_state_dict(theirs, strict=True)


def check_pretrained_fold(
    settings: TrainSettings, manifest: Manifest, folds: Sequence[int]
) -> None:
    """Refuse ``--init`` of a ``luvnet pretrain`` trunk for any fold but the one whose training
    patients it was pretrained on, or for another split (``--folds``, ``--test-fraction``,
    ``--seed`` or the manifest's patients). No-op without ``--init`` or for other checkpoints.

    Raises:
        LuvnetError: one line naming ``--init``, the fold and split it fits, and the fix.
    """
    if settings.init is None:
        return
    _, document = read_config(settings.init)
    pretrain = document.get("provenance", {}).get("pretrain")
    split = pretrain.get("split") if isinstance(pretrain, Mapping) else None
    if not isinstance(split, Mapping):
        return
    fits = (split.get("folds"), split.get("test_fraction"), split.get("seed"))
    runs = (settings.folds, settings.test_fraction, settings.seed)
    if list(folds) != [split.get("fold")] or fits != runs:
        raise LuvnetError(
            f"--init {settings.init}: its trunk was pretrained on the frames of fold "
            f"{split.get('fold')}'s training patients (--folds {fits[0]} --test-fraction "
            f"{fits[1]} --seed {fits[2]}), so any other fold or split would validate or test on "
            f"patients it has seen; train with --fold {split.get('fold')} and those options, or "
            "pretrain a trunk for this fold"
        )
    recorded_patients(manifest, {"split": split}, "train", settings.init)
