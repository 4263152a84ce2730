"""``luvnet pretrain --manifest M --init CHECKPOINT --out DIR``: self-supervised pretraining.

Contrastive pretraining of a checkpoint's trunk on the unlabelled frames of one fold's training
patients (:mod:`luvnet.engine.training.pretrain`); ``luvnet train --init DIR`` then trains on it
like on any checkpoint (docs/training.md, "Self-supervised pretraining").
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from luvnet.commands import options
from luvnet.engine.training.pretrain import PretrainSettings

HELP = "contrastive pretraining of a trunk on unlabelled frames"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage = "luvnet pretrain --manifest M --init CHECKPOINT --out DIR [options]"
    add = parser.add_argument
    add("--manifest", type=Path, required=True, help="manifest CSV; its labels are not read")
    add("--init", type=Path, required=True, metavar="CHECKPOINT", help="trunk to start from")
    add("--out", type=Path, required=True, help="checkpoint directory to write")
    options.add_split_arguments(
        parser,
        title="split (the same as luvnet train's)",
        fold_default=0,
        fold_help="0-based",
        seed_help="split, pairs and augmentation",
    )
    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--steps", type=options.positive_int, default=600)
    opt.add_argument(
        "--batch-size", type=options.positive_int, default=64, help="videos (pairs) per step"
    )
    opt.add_argument("--lr", type=options.positive_float, default=3e-4, help="Adam, cosine decay")
    opt.add_argument("--temperature", type=options.positive_float, default=0.2, help="NT-Xent tau")
    opt.add_argument(
        "--max-offset",
        type=options.nonnegative_int,
        default=30,
        help="most frames between the two views of a video (0: the same frame twice)",
    )
    opt.add_argument(
        "--jitter",
        type=float,
        default=0.4,
        help="intensity jitter j of the views: gain 1±j, gamma 1-0.75j..1+j, noise sd 0..20j "
        "grey levels (0: grey levels kept)",
    )
    opt.add_argument("--projection", type=options.positive_int, default=128, help="output width")
    run = parser.add_argument_group("running")
    run.add_argument("--max-minutes", type=options.positive_float, default=None)
    run.add_argument("--cache", type=Path, default=None, help="frame cache (default $LUVNET_CACHE)")
    run.add_argument("--threads", type=options.positive_int, default=None, help="torch threads")
    run.add_argument("--device", default=None, help="cuda or cpu (default: cuda if any)")


def run(args: argparse.Namespace) -> int:
    from luvnet.engine.training.pretrain import pretrain

    pretrain(PretrainSettings(**{f.name: getattr(args, f.name) for f in fields(PretrainSettings)}))
    return 0
