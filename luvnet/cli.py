"""The ``luvnet`` console script: a thin dispatcher over the command modules.

Each command is a module with ``add_arguments(parser)`` and ``run(args) -> int`` (see
:mod:`luvnet.commands`). Built-in commands are listed below; score consumers (``listen``,
``record``, ``overlay`` and any third party's) are found through the ``luvnet.consumers``
entry-point group, as a third-party consumer would be. Modules are imported only when their
command is chosen, so ``luvnet --help`` stays fast and a missing optional dependency only
breaks its own command.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
from importlib.metadata import entry_points
from types import ModuleType

from luvnet.commands.logs import configure_logging, on_terminal
from luvnet.commands.signals import StopOnSignal
from luvnet.engine.errors import LuvnetError

log = logging.getLogger("luvnet.cli")

CONSUMER_GROUP = "luvnet.consumers"
IMPORT_NOTICE_S = 1.5  # a command whose imports take longer says so
# name -> (module, one-line usage)
COMMANDS: dict[str, tuple[str, str]] = {
    "stream": ("luvnet.commands.stream", "run the live pipeline and publish scores over ZeroMQ"),
    "serve": (
        "luvnet.commands.serve",
        "serve many streams with one encoder batched across them (Ray Serve)",
    ),
    "info": ("luvnet.commands.info", "parameter and compute counts of a model or checkpoint"),
    "phantom": ("luvnet.commands.phantom", "write synthetic labelled lung-ultrasound videos"),
    "train": ("luvnet.commands.train", "train LUV-Net on a manifest of labelled videos"),
    "pretrain": (
        "luvnet.commands.pretrain",
        "contrastive pretraining of a trunk on unlabelled frames",
    ),
    "evaluate": ("luvnet.commands.evaluate", "score a checkpoint on a manifest split"),
    "compare": ("luvnet.commands.compare", "paired DeLong test between two prediction files"),
    "ensemble": (
        "luvnet.commands.ensemble",
        "average several models' predictions on the same clips",
    ),
    "report": ("luvnet.commands.report", "cross-validation table of a run, as Markdown"),
    "attention": ("luvnet.commands.attention", "per-pattern attention curves for one video"),
    "covid-blues-manifest": (
        "luvnet.commands.covid_blues_manifest",
        "build a manifest for the COVID-BLUES videos",
    ),
    "dicom-manifest": (
        "luvnet.commands.dicom_manifest",
        "build a manifest (labels to fill in) for a folder of DICOM cine loops",
    ),
    "export": ("luvnet.commands.export", "export encoder and head to ONNX"),
    "bench": ("luvnet.commands.bench", "latency of the pipeline stages, cached vs naive, backends"),
    "keys": ("luvnet.commands.keys", "create CURVE keys for an authenticated score stream"),
}


INTRO = """\
luvnet scores lung-ultrasound video live: it reads frames from a capture card, a file, a network
stream or the built-in phantom and publishes four pattern scores per frame over ZeroMQ."""
# The overview's groups, in order; consumers found only through entry points go under "plugins".
GROUPS: dict[str, tuple[str, ...]] = {
    "live": ("stream", "serve", "listen", "record", "overlay"),
    "models": (
        "train",
        "pretrain",
        "evaluate",
        "compare",
        "ensemble",
        "report",
        "attention",
        "info",
        "export",
    ),  # fmt: skip
    "data": ("phantom", "covid-blues-manifest", "dicom-manifest"),
    "tools": ("bench", "keys"),
}
FIRST_COMMANDS = (
    ("luvnet stream --max-frames 300", "score the phantom with the demo model (Ctrl-C stops)"),
    ("luvnet listen", "in a second terminal: the scores as they arrive"),
    ("luvnet overlay --max-frames 240", "write overlay.mp4: the video with score bars"),
    ("luvnet COMMAND --help", "a command's options, with their defaults"),
)
FIRST_WIDTH = 34


def consumer_commands() -> dict[str, tuple[str, str]]:
    """Consumers registered in ``luvnet.consumers``: name -> (module, one-line usage).

    The usage line is the module's ``HELP``; a consumer that fails to load is logged and
    skipped, never fatal.
    """
    found: dict[str, tuple[str, str]] = {}
    for entry in entry_points(group=CONSUMER_GROUP):
        if entry.name in COMMANDS:
            log.warning("consumer %r skipped: the name is a built-in command", entry.name)
            continue
        try:
            module = entry.load()
        except Exception as err:  # noqa: BLE001 - a broken plugin must not stop the command line
            log.warning("consumer %r skipped: %s", entry.name, err)
            continue
        found[entry.name] = (module.__name__, getattr(module, "HELP", "score consumer"))
    return found


def overview(commands: dict[str, tuple[str, str]]) -> str:
    """``luvnet --help``: the intro, the commands by group, the first commands to try."""
    lines = [INTRO, ""]
    grouped = {name for names in GROUPS.values() for name in names}
    groups = dict(GROUPS)
    others = [name for name in commands if name not in grouped]
    if others:
        groups["plugins"] = tuple(others)
    width = max(len(name) for name in commands) + 2
    for group, names in groups.items():
        present = [name for name in names if name in commands]
        if not present:
            continue
        lines.append(f"{group}:")
        lines += [f"  {name:{width}s}{commands[name][1]}" for name in present]
        lines.append("")
    lines.append("first commands:")
    lines += [f"  {command:{FIRST_WIDTH}s}{what}" for command, what in FIRST_COMMANDS]
    return "\n".join(lines)


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default, except where there is nothing to show (no
    default, a flag that is off) or the help text already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            default is None
            or default is False
            or default is argparse.SUPPRESS
            or "(default" in text
            or "%(default)" in text
            or not action.option_strings
        ):
            return text
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


def show_every_default(parser: argparse.ArgumentParser) -> None:
    """Options written without a help text get one, so that their default shows too (argparse
    prints nothing for an option without help)."""
    for action in parser._actions:  # noqa: SLF001 - argparse has no public list of actions
        if action.help is None and action.option_strings:
            action.help = ""
            if action.default not in (None, False, argparse.SUPPRESS):
                action.help = "(default: %(default)s)"


def build_parser(commands: dict[str, tuple[str, str]]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="luvnet",
        usage="luvnet COMMAND [OPTIONS]",
        description=overview(commands),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", help=argparse.SUPPRESS)
    for name, (_, usage) in commands.items():
        sub.add_parser(name, help=usage, add_help=False)
    return parser


def _import_interruptibly(module_name: str) -> tuple[ModuleType, int | None]:
    """Import a command's module (torch takes seconds); also the signal that came meanwhile.

    A KeyboardInterrupt raised inside a third-party import can be swallowed by a bare
    ``except`` there, and the command would then start as if never interrupted. So during the
    import the signals only set a flag, checked once the import is done.
    """
    # torch takes seconds to import (tens on a cold disk): say what the wait is, if it is one.
    notice = threading.Timer(IMPORT_NOTICE_S, log.info, ("loading its modules ...",))
    notice.daemon = True
    if on_terminal():
        notice.start()
    try:
        with StopOnSignal() as signals:
            module = importlib.import_module(module_name)
    finally:
        notice.cancel()
    return module, signals.signum


def main(argv: list[str] | None = None) -> int:
    # FFmpeg and OpenCV print their own multi-line warnings on broken files; our errors are
    # one line. Must be set before cv2 is first imported.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    argv = sys.argv[1:] if argv is None else argv
    configure_logging("")
    commands = dict(COMMANDS)
    if not argv or argv[0] not in commands:
        commands |= consumer_commands()
    parser = build_parser(commands)
    if not argv or argv[0] not in commands:
        if argv and not argv[0].startswith("-"):
            parser.error(f"unknown command {argv[0]!r}; choose one of {', '.join(commands)}")
        parser.parse_args(argv)
        parser.print_help()
        return 0
    name, rest = argv[0], argv[1:]
    module_name, usage = commands[name]
    configure_logging(name)
    try:
        module, interrupted = _import_interruptibly(module_name)
        if interrupted is not None:
            # Ctrl-C: the shell's 130; SIGTERM: a requested stop, like the stream's own 0.
            return 130 if interrupted == signal.SIGINT else 0
        sub_parser = argparse.ArgumentParser(
            prog=f"luvnet {name}", description=usage, formatter_class=DefaultsHelpFormatter
        )
        module.add_arguments(sub_parser)
        show_every_default(sub_parser)
        args = sub_parser.parse_args(rest)
        return int(module.run(args) or 0)
    except LuvnetError as err:
        log.error("%s", err)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
