"""``luvnet train --manifest M --out RUN [options]``: cross-validated training (docs/model.md).

Parses the options into :class:`~luvnet.engine.training.settings.TrainSettings` (one field
per option, same name) and calls :func:`luvnet.engine.training.folds.train`, which checks
them and says what is wrong with a bad value in one line naming the option.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from luvnet.commands import options
from luvnet.engine.errors import LuvnetError
from luvnet.engine.model.config import INTENSITY_MODES, MODEL_VARIANTS
from luvnet.engine.training.settings import TrainSettings

HELP = "train LUV-Net on a manifest of labelled videos"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage = "luvnet train --manifest M --out RUN [options]"
    add = parser.add_argument
    add("--manifest", type=Path, required=True, help="manifest CSV (docs/formats.md)")
    add("--out", type=Path, required=True, help="run directory (created; resumed if present)")
    model = parser.add_argument_group("model")
    model.add_argument("--model", default="luvnet", help=f"one of {', '.join(MODEL_VARIANTS)}")
    model.add_argument("--backbone", default="densenet161", help="torchvision trunk name")
    model.add_argument(
        "--weights",
        default=None,
        help="trunk weights: 'imagenet' (local torchvision file) or a path; default random init",
    )
    model.add_argument("--kernel-size", type=int, default=13, help="temporal conv kernel (odd)")
    model.add_argument("--num-heads", type=int, default=8, help="attention heads N_a")
    model.add_argument("--fusion-hidden", type=int, default=4096, help="fusion MLP width")
    model.add_argument("--classifier-hidden", type=int, default=512, help="classifier width")
    model.add_argument("--dropout", type=float, default=0.5, help="classifier dropout")
    model.add_argument("--image-size", type=int, default=256, help="letterbox canvas S")
    model.add_argument(
        "--crop-box", default=None, help="fixed sector box x,y,w,h (default: detect per video)"
    )
    model.add_argument(
        "--intensity",
        choices=INTENSITY_MODES,
        default="none",
        help="per-frame intensity normalisation inside the sector, recorded in the checkpoint "
        "(default: none)",
    )
    model.add_argument("--clip-length", type=int, default=30, help="frames per clip L")
    model.add_argument("--clip-step", type=int, default=24, help="frames between clip starts")
    split = options.add_split_arguments(
        parser,
        title="split",
        fold_default=None,
        fold_help="train only this fold (0-based)",
        seed_help="splits (unless --split-seed), init, shuffling, augmentation",
    )
    split.add_argument(
        "--split-seed",
        type=int,
        default=None,
        help="the patient split's own seed, so that runs of other --seed (a seed ensemble) "
        "keep the same folds (default: --seed)",
    )
    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--epochs", type=int, default=150)
    opt.add_argument(
        "--patience", type=int, default=50, help="epochs without a better --eval-metric figure"
    )
    opt.add_argument("--lr", type=float, default=1e-6, help="Adam learning rate")
    opt.add_argument("--batch-size", type=int, default=4, help="clips per batch per process")
    opt.add_argument("--accumulate", type=int, default=1, help="batches per optimizer step")
    opt.add_argument("--amp", action="store_true", help="mixed precision (fp16 CUDA, bf16 CPU)")
    opt.add_argument(
        "--pos-weight", default=None, help="BCE pos_weight: 'auto' (neg/pos) or P numbers"
    )
    run_group = parser.add_argument_group("running")
    run_group.add_argument("--device", default=None, help="cuda or cpu (default: cuda if any)")
    run_group.add_argument("--num-workers", type=int, default=None, help="DataLoader workers")
    run_group.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's; use 1 on a CPU shared with other jobs)",
    )
    run_group.add_argument(
        "--max-minutes", type=float, default=None, help="wall-clock budget for all folds"
    )
    run_group.add_argument(
        "--save-every", type=int, default=200, help="optimizer steps between state saves"
    )
    opt.add_argument(
        "--no-augment",
        dest="augment",
        action="store_false",
        help="no flip/rotation of training clips (default: on, as in the paper); refuses "
        "--augment-zoom and --augment-jitter",
    )
    opt.add_argument(
        "--augment-zoom",
        type=float,
        default=1.0,
        metavar="Z",
        help="also zoom each training clip by U(1, Z) with a random shift (1 = off, the paper's)",
    )
    opt.add_argument(
        "--augment-jitter",
        type=float,
        default=0.0,
        metavar="J",
        help="also draw each training clip's gain 1±J, gamma 1-0.75J..1+J and noise sd up to "
        "20J grey levels (0 = off, the paper's)",
    )
    opt.add_argument(
        "--lr-decay",
        type=float,
        default=1.0,
        help="multiply the lr by this after --lr-patience epochs without a better "
        "--eval-metric figure",
    )
    opt.add_argument(
        "--lr-patience",
        type=int,
        default=0,
        help="epochs without a better --eval-metric figure before --lr-decay (0 = constant lr)",
    )
    opt.add_argument(
        "--lr-schedule",
        default="plateau",
        help="plateau (--lr-decay after --lr-patience bad epochs; constant when "
        "--lr-patience is 0, the paper's) or linear (decay to 0 over --max-minutes or "
        "--epochs, whichever ends first: for fixed-budget training from scratch)",
    )
    opt.add_argument(
        "--freeze-bn-after",
        type=float,
        default=None,
        metavar="F",
        help="after this share of the run (0-1, measured as for --lr-schedule linear) "
        "recalibrate BatchNorm once and train on with those statistics fixed; needs "
        "--bn-recalibrate (default: off)",
    )
    opt.add_argument(
        "--bn-recalibrate",
        type=int,
        default=0,
        metavar="N",
        help="re-estimate BatchNorm statistics on N training batches before each validation "
        "(for high-lr training from scratch; 0 = off, the paper's protocol)",
    )
    run_group.add_argument(
        "--cache", type=Path, default=None, help="frame cache folder (default $LUVNET_CACHE)"
    )
    run_group.add_argument(
        "--skip-unreadable",
        action="store_true",
        help="train without the videos that do not decode, recording them with why in the "
        "metrics and the checkpoints (default: refuse the run, naming every one)",
    )
    options.add_decimate_argument(run_group)
    model.add_argument(
        "--init",
        type=Path,
        default=None,
        metavar="CHECKPOINT|RUN",
        help="start from this checkpoint's trunk (same --backbone and --image-size; the "
        "head stays random unless --init-head), or from a training run's: each fold from its "
        "fold_<k>/best; its model id is recorded; one trained on patients a fold holds out "
        "is refused",
    )
    model.add_argument(
        "--init-head",
        action="store_true",
        help="with --init: take the checkpoint's clip head too (same --model and head sizes)",
    )
    opt.add_argument(
        "--freeze-encoder",
        action="store_true",
        help="keep the trunk fixed (eval mode, no gradient) and train only the head on "
        "per-frame embeddings computed once per video and cached beside the frame cache; "
        "needs --no-augment",
    )
    opt.add_argument(
        "--trainable-blocks",
        type=int,
        default=None,
        metavar="N",
        help="fine-tune only the trunk's last N blocks (mobilenet_v3_small has 13); the "
        "earlier ones keep their --init or --weights values and BatchNorm statistics "
        "(default: the whole trunk trains)",
    )
    model.add_argument(
        "--usvn-heads",
        type=int,
        default=32,
        help="attention heads of --model usvn (default 32, as its authors ran it; "
        "--num-heads applies to luvnet and no-temporal)",
    )
    opt.add_argument(
        "--ema",
        type=float,
        default=0.0,
        metavar="DECAY",
        help="validate, keep as best and test a moving average of the weights, updated "
        "after every optimizer step with this decay (0.99: about the last 100 steps); "
        "training itself is unchanged (default: 0, off, the paper's)",
    )
    opt.add_argument(
        "--eval-metric",
        default="loss",
        help="the validation figure that picks best/ and counts epochs without gain for "
        "--patience and --lr-patience: loss (lower is better; the paper's, default) or "
        "macro_auc (the mean clip AUC over the patterns the validation set can score)",
    )


def crop_box(text: str | None) -> tuple[int, int, int, int] | None:
    """``--crop-box`` through the shared parser, refused with train's one-line error.

    Not an argparse ``type=``: train reports every bad value as a LuvnetError naming the
    option (exit 2, one line), which a usage error would not be.
    """
    if text is None:
        return None
    try:
        return options.crop_box(text)
    except argparse.ArgumentTypeError:
        fields_ = text.split(",")
        if len(fields_) == 4 and all(_is_int(v) for v in fields_):
            raise LuvnetError(
                f"--crop-box: expected x, y >= 0 and w, h >= 1, got {text!r}"
            ) from None
        raise LuvnetError(f"--crop-box: expected x,y,w,h (4 integers), got {text!r}") from None


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def settings_from(args: argparse.Namespace) -> TrainSettings:
    """The parsed options as typed settings: one field per option, of the same name."""
    values = {field.name: getattr(args, field.name) for field in fields(TrainSettings)}
    return TrainSettings(**(values | {"crop_box": crop_box(args.crop_box)}))


def run(args: argparse.Namespace, command: str | None = None) -> int:
    """Train as ``args`` say; ``command`` is what the run and its checkpoints record as the
    command line (default: this process's, its program by name)."""
    from luvnet.engine.training.folds import train

    train(settings_from(args), command=command)
    return 0
