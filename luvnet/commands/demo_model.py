"""``python -m luvnet.commands.demo_model --work scratch/demo --out engine/demo_model``.

Builds the demo model by the recipe of :mod:`luvnet.engine.training.demo`: ``luvnet phantom``
with its :data:`~luvnet.engine.training.demo.PHANTOM` options (skipped when ``WORK/phantom``
already holds a manifest), ``luvnet train`` with its :data:`~luvnet.engine.training.demo.TRAIN`
options, then :func:`~luvnet.engine.training.demo.export` of fold 0's best checkpoint. The
recipe is a list of command-line options, so each step runs through its command's own parser,
exactly as typed at a shell.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path
from types import ModuleType

from luvnet.commands import phantom as phantom_command
from luvnet.commands import train as train_command
from luvnet.commands.logs import configure_logging
from luvnet.engine.errors import LuvnetError
from luvnet.engine.training import demo

HELP = demo.__doc__.splitlines()[0] if demo.__doc__ else "build the demo model"
PROG = "python -m luvnet.commands.demo_model"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--work", type=Path, required=True, help="phantom set and run folder")
    parser.add_argument("--out", type=Path, required=True, help="checkpoint folder to write")
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="wall-clock cap on training (default: none, so that the model does not depend on "
        "the machine's speed)",
    )
    parser.add_argument("--float32", action="store_true", help="keep float32 weights")
    parser.add_argument("--cache", type=Path, default=None, help="frame cache folder")


def run_command(module: ModuleType, name: str, argv: list[str]) -> None:
    """Run ``luvnet NAME ARGV`` in this process through the command's own parser; its log
    lines read as that command's."""
    parser = argparse.ArgumentParser(prog=f"luvnet {name}")
    module.add_arguments(parser)
    configure_logging(name)
    args = parser.parse_args(argv)
    if module is train_command:  # the checkpoints record this step, not this process's command
        code = train_command.run(args, command=shlex.join(["luvnet", name, *argv]))
    else:
        code = module.run(args)
    if code:
        raise LuvnetError(f"luvnet {name} {' '.join(argv)}: exited with {code}")


def build_demo(
    work: Path,
    out: Path,
    *,
    max_minutes: float | None = None,
    half: bool = True,
    cache: Path | None = None,
) -> Path:
    """Generate, train and export; returns ``out``."""
    phantom = work / "phantom"
    if not (phantom / "manifest.csv").is_file():
        flags = demo.recipe_flags(demo.PHANTOM)
        run_command(phantom_command, "phantom", ["--out", str(phantom), *flags])
    run_dir = work / "run"
    argv = ["--manifest", str(phantom / "manifest.csv"), "--out", str(run_dir)]
    argv += demo.recipe_flags(demo.TRAIN)
    if max_minutes is not None:
        argv += ["--max-minutes", str(max_minutes)]
    if cache is not None:
        argv += ["--cache", str(cache)]
    run_command(train_command, "train", argv)
    return demo.export(run_dir / "fold_0", out, half=half, recipe=demo.demo_recipe())


def run(args: argparse.Namespace) -> int:
    from luvnet.engine.model.checkpoint import CONFIG_FILE, WEIGHTS_FILE

    out = build_demo(
        args.work, args.out, max_minutes=args.max_minutes, half=not args.float32, cache=args.cache
    )
    size = (out / WEIGHTS_FILE).stat().st_size
    summary = json.loads((out / CONFIG_FILE).read_text())["metrics"]
    print(f"wrote {out} ({size / 1e6:.1f} MB weights); test AUC {summary.get('test_auc')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=HELP)
    add_arguments(parser)
    args = parser.parse_args(argv)
    configure_logging("demo_model")
    try:
        return run(args)
    except LuvnetError as err:
        configure_logging("demo_model")  # a step may have renamed the log's command
        log.error("%s", err)
        return 2


if __name__ == "__main__":
    sys.exit(main())
