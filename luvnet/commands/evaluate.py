"""``luvnet evaluate --checkpoint C --manifest M [--split test|val|train|all] --out DIR``.

Writes ``DIR/metrics.json`` (at the checkpoint's stored thresholds) and ``DIR/predictions.csv``
and prints one summary line; see :mod:`luvnet.engine.evaluation.evaluate` for which patients a
split holds.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from luvnet.commands.options import add_decimate_argument
from luvnet.engine.errors import LuvnetError
from luvnet.engine.evaluation.evaluate import SPLITS, evaluate

HELP = "score a checkpoint on a manifest split"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage = (
        "luvnet evaluate --checkpoint C --manifest M [--split test|val|train|all] --out DIR"
    )
    parser.add_argument("--checkpoint", type=Path, required=True, help="checkpoint directory")
    parser.add_argument("--manifest", type=Path, required=True, help="manifest CSV of videos")
    parser.add_argument("--split", choices=SPLITS, default="test", help="default: test")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--batch-size", type=int, default=4, help="clips per batch (default 4)")
    parser.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda if any)")
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument(
        "--cache", type=Path, default=None, help="frame cache folder (default $LUVNET_CACHE)"
    )
    parser.add_argument("--amp", action="store_true", help="mixed precision")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--skip-unreadable",
        action="store_true",
        help="score the videos that decode and list the others, with why, in metrics.json "
        "(default: refuse the run, naming every unreadable video)",
    )
    add_decimate_argument(parser)


def run(args: argparse.Namespace) -> int:
    # Checked here, not by argparse types: one ``luvnet evaluate: error:`` line, no usage text.
    if args.batch_size < 1:
        raise LuvnetError(f"--batch-size: expected a positive integer, got {args.batch_size}")
    if args.num_workers < 0:
        raise LuvnetError(f"--num-workers: expected 0 or more, got {args.num_workers}")
    if args.threads is not None and args.threads < 1:
        raise LuvnetError(f"--threads: expected a positive integer, got {args.threads}")
    result = evaluate(
        args.checkpoint,
        args.manifest,
        args.out,
        split=args.split,
        batch_size=args.batch_size,
        device=args.device,
        num_workers=args.num_workers,
        cache=args.cache,
        amp=args.amp,
        threads=args.threads,
        skip_unreadable=args.skip_unreadable,
        decimate_above=args.decimate_above,
    )
    print(result.summary())
    return 0
