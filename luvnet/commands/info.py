"""``luvnet info``: parameter and compute counts of a backbone's LUV-Net or a checkpoint."""

from __future__ import annotations

import argparse
import json
import logging

from luvnet.commands.logs import on_terminal
from luvnet.engine.errors import LuvnetError
from luvnet.engine.model.config import MODEL_VARIANTS, ModelConfig

HELP = "parameter and compute counts of a model or checkpoint"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--backbone", default=None, help="torchvision trunk (default densenet161)")
    source.add_argument("--checkpoint", default=None, help="checkpoint directory")
    parser.add_argument("--model", default="luvnet", choices=MODEL_VARIANTS, help="variant")
    parser.add_argument(
        "--image-size", type=int, default=None, help="letterbox canvas (default: the config's)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    # Importing torch, building a DenseNet-161 and tracing it take 10-20 s on a CPU: say so.
    if on_terminal():
        what = (
            f"loading {args.checkpoint}"
            if args.checkpoint
            else f"building {args.model} on {args.backbone or 'densenet161'} (random weights)"
        )
        log.info("%s and counting its parameters and multiply-accumulates ...", what)
    from luvnet.engine.model.checkpoint import load_checkpoint
    from luvnet.engine.model.complexity import model_complexity
    from luvnet.engine.model.network import build_model

    if args.checkpoint:
        checkpoint = load_checkpoint(args.checkpoint)
        model, extra = checkpoint.model, {"model_id": checkpoint.model_id}
    else:
        config = ModelConfig(backbone=args.backbone or "densenet161", variant=args.model)
        model, extra = build_model(config), {}
    image_size = args.image_size or model.config.preprocess.image_size
    if image_size < 32:
        raise LuvnetError(f"--image-size: expected at least 32, got {image_size}")
    info = model_complexity(model, image_size=image_size, window=model.config.clip_length)
    info.update(extra)
    if args.json:
        print(json.dumps(info))
    else:
        for key, value in info.items():
            print(f"{key:16s} {value:,}" if isinstance(value, int) else f"{key:16s} {value}")
    return 0
