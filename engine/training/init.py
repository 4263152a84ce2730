"""``luvnet train --init CHECKPOINT``: start a run from another checkpoint's weights.

The trunk is always taken from the checkpoint; the clip head only with ``--init-head`` (a
head trained on other data or for another variant is rarely what a comparison between
variants wants, so it stays randomly initialised unless asked for). A checkpoint whose trunk
does not fit the run (another backbone, embedding width, input size or normalisation) is
refused with one line that names the checkpoint, what differs and the fix.

A trunk ``luvnet pretrain`` wrote has seen the frames of one fold's training patients, who
are every other fold's validation patients: :func:`check_pretrained_fold` lets it train that
fold of that split only. :func:`build_fold_model` builds a fold's model with all of that.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from luvnet.engine.data.split_record import recorded_digest
from luvnet.engine.data.splits import SplitPlan
from luvnet.engine.errors import LuvnetError
from luvnet.engine.model.backbones import freeze_trunk
from luvnet.engine.model.checkpoint import load_checkpoint, read_config
from luvnet.engine.model.config import ModelConfig
from luvnet.engine.model.network import LUVNet, build_model
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
            f"this run's is {dst.variant} with {dst.num_patterns} patterns; drop --init-head "
            "(trunk only)"
            + (f" or pass --model {src.variant} to match" if src.variant != dst.variant else "")
        )
    theirs, ours = source.clip_head.state_dict(), model.clip_head.state_dict()
    for key, tensor in ours.items():
        if key not in theirs or tuple(theirs[key].shape) != tuple(tensor.shape):
            shape = tuple(theirs[key].shape) if key in theirs else "absent"
            was, now = _head_options(src, dst)
            fix = (
                f"its head was trained with {was} (this run: {now}); pass {was}"
                if was
                else f"head weight {key} is {shape} there, {tuple(tensor.shape)} here; match it"
            )
            raise LuvnetError(f"--init-head {path}: {fix}, or drop --init-head (trunk only)")
    model.clip_head.load_state_dict(theirs, strict=True)


def _head_options(src: ModelConfig, dst: ModelConfig) -> tuple[str, str]:
    """The ``luvnet train`` options that shape a head and differ between two configs, as
    each one sets them: ``("--fusion-hidden 256", "--fusion-hidden 4096")``."""
    heads = "--usvn-heads" if dst.variant == "usvn" else "--num-heads"
    options = {
        heads: "num_heads",
        "--kernel-size": "kernel_size",
        "--fusion-hidden": "fusion_hidden",
        "--classifier-hidden": "classifier_hidden",
    }
    differ = [(o, f) for o, f in options.items() if getattr(src, f) != getattr(dst, f)]
    was = " ".join(f"{o} {getattr(src, f)}" for o, f in differ)
    return was, " ".join(f"{o} {getattr(dst, f)}" for o, f in differ)


def check_pretrained_fold(
    init: Path | None, plan: SplitPlan, folds: Sequence[int]
) -> dict[str, Any]:
    """Refuse ``--init`` of a trunk that has seen some patients' frames (``luvnet pretrain``'s,
    or a checkpoint trained from one) for any fold but the one whose training patients those
    were, or for a split whose sets differ from the recorded ones (another manifest,
    ``--folds``, ``--test-fraction``, split seed or ``split`` column).

    Returns:
        ``{"pretrained_split": record}`` for the checkpoints of this run to carry on, so a run
        started from one of them is held to the same fold; ``{}`` for any other ``init``.

    Raises:
        LuvnetError: one line naming ``--init``, the fold it fits and the fix.
    """
    split = _pretrained_split(init) if init is not None else None
    if split is None:
        return {}
    try:
        index = int(split["fold"])
        digests = split["patient_digests"]
        digest = recorded_digest(digests)
        fits = list(folds) == [index] and index < len(plan)
        if fits:
            fold = plan.fold(index)
            sets = {"train": fold.train, "val": fold.val, "test": fold.test}
            fits = all(digest(sets[k]) == digests[k] for k in sets)
    except (KeyError, TypeError, ValueError, OverflowError) as err:
        raise LuvnetError(
            f"--init {init}: its pretraining split record is damaged ({type(err).__name__}: "
            f"{err}); expected the form luvnet pretrain writes (docs/formats.md)"
        ) from None
    if not fits:
        raise LuvnetError(
            f"--init {init}: its trunk was pretrained on the frames of fold {index}'s training "
            f"patients (--folds {split.get('folds')} --test-fraction "
            f"{split.get('test_fraction')} --split-seed {split.get('seed')}), so another fold or "
            f"split would validate or test on patients it has seen; train only --fold {index} with "
            "the manifest and split options it was pretrained with, or pretrain a trunk for "
            "this fold"
        )
    return {"pretrained_split": dict(split)}


def _pretrained_split(init: Path) -> Mapping[str, Any] | None:
    """The split record of the patients ``init``'s trunk has seen, if it says."""
    _, document = read_config(init)
    provenance = document.get("provenance")
    if not isinstance(provenance, Mapping):
        return None
    pretrain, carried = provenance.get("pretrain"), provenance.get("init")
    if isinstance(pretrain, Mapping) and isinstance(pretrain.get("split"), Mapping):
        return pretrain["split"]  # a luvnet pretrain trunk
    if isinstance(carried, Mapping) and isinstance(carried.get("pretrained_split"), Mapping):
        return carried["pretrained_split"]  # trained from one
    return None


def build_fold_model(
    config: ModelConfig,
    weights: str | None,
    seed: int,
    settings: TrainSettings | None = None,
    init: Path | None = None,
) -> tuple[LUVNet, str | None]:
    """The fold's model, seeded: ``weights`` (None, ``"imagenet"`` or a file) or the trunk of
    checkpoint ``init`` (the fold's ``--init``: :func:`~.fold_init.fold_inits`), and its head
    with ``settings.init_head``; the trunk's first blocks fixed as ``settings.trainable_blocks``
    asks (:func:`~luvnet.engine.model.backbones.freeze_trunk`).

    Returns:
        The model and the init checkpoint's model id (None without ``--init``).

    Raises:
        LuvnetError: a model that cannot be built, an incompatible ``--init``, or more
            trainable blocks than the trunk has.
    """
    torch.manual_seed(seed)
    try:
        model = build_model(config, weights)
    except ValueError as err:  # e.g. --num-heads not dividing the embedding width
        raise LuvnetError(f"model {config.backbone}/{config.variant}: {err}") from None
    if settings is not None:
        freeze_trunk(model.encoder, settings.trainable_blocks)  # more than it has: refused
    if init is None:
        return model, None
    head = settings is not None and settings.init_head
    return model, init_from_checkpoint(model, init, head=head)
