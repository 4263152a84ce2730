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
from importlib.metadata import entry_points
from types import ModuleType

from luvnet.commands.logs import configure_logging
from luvnet.commands.signals import StopOnSignal
from luvnet.engine.errors import LuvnetError

log = logging.getLogger("luvnet.cli")

CONSUMER_GROUP = "luvnet.consumers"
# name -> (module, one-line usage)
COMMANDS: dict[str, tuple[str, str]] = {
    "stream": ("luvnet.commands.stream", "run the live pipeline and publish scores over ZeroMQ"),
    "info": ("luvnet.commands.info", "parameter and compute counts of a model or checkpoint"),
    "phantom": ("luvnet.commands.phantom", "write synthetic labelled lung-ultrasound videos"),
    "train": ("luvnet.commands.train", "train LUV-Net on a manifest of labelled videos"),
    "evaluate": ("luvnet.commands.evaluate", "score a checkpoint on a manifest split"),
    "compare": ("luvnet.commands.compare", "paired DeLong test between two prediction files"),
    "report": ("luvnet.commands.report", "cross-validation table of a run, as Markdown"),
    "attention": ("luvnet.commands.attention", "per-pattern attention curves for one video"),
    "covid-blues-manifest": (
        "luvnet.commands.covid_blues_manifest",
        "build a manifest for the COVID-BLUES videos",
    ),
    "export": ("luvnet.commands.export", "export encoder and head to ONNX"),
    "bench": ("luvnet.commands.bench", "latency of the pipeline stages, cached vs naive, backends"),
    "keys": ("luvnet.commands.keys", "create CURVE keys for an authenticated score stream"),
}


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


def build_parser(commands: dict[str, tuple[str, str]]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="luvnet", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, usage) in commands.items():
        sub.add_parser(name, help=usage, add_help=False)
    return parser


def _import_interruptibly(module_name: str) -> tuple[ModuleType, int | None]:
    """Import a command's module (torch takes seconds); also the signal that came meanwhile.

    A KeyboardInterrupt raised inside a third-party import can be swallowed by a bare
    ``except`` there, and the command would then start as if never interrupted. So during the
    import the signals only set a flag, checked once the import is done.
    """
    with StopOnSignal() as signals:
        module = importlib.import_module(module_name)
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
        sub_parser = argparse.ArgumentParser(prog=f"luvnet {name}", description=usage)
        module.add_arguments(sub_parser)
        args = sub_parser.parse_args(rest)
        return int(module.run(args) or 0)
    except LuvnetError as err:
        log.error("%s", err)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
