"""The ``luvnet`` console script: a thin dispatcher over subcommand modules.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int``. Modules are imported only when their subcommand is chosen, so
``luvnet --help`` stays fast and a missing optional dependency only breaks its own command.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys

from luvnet.engine.errors import LuvnetError

# name -> (module, one-line usage)
COMMANDS: dict[str, tuple[str, str]] = {
    "stream": ("luvnet.commands.stream", "run the live pipeline and publish scores over ZeroMQ"),
    "listen": ("luvnet.plugins.consumers.listen", "live text view of scores, latency and drops"),
    "record": (
        "luvnet.plugins.consumers.record",
        "append every message to a file, report seq gaps",
    ),
    "overlay": (
        "luvnet.plugins.consumers.overlay",
        "live video with score bars and attention strip",
    ),
    "info": ("luvnet.commands.info", "parameter and compute counts of a model or checkpoint"),
    "phantom": (
        "luvnet.plugins.phantom.generate",
        "write synthetic labelled lung-ultrasound videos",
    ),
    "train": ("luvnet.engine.training.folds", "train LUV-Net on a manifest of labelled videos"),
    "evaluate": ("luvnet.engine.evaluation.evaluate", "score a checkpoint on a manifest split"),
    "compare": (
        "luvnet.engine.evaluation.compare",
        "paired DeLong test between two prediction files",
    ),
    "report": (
        "luvnet.engine.evaluation.report",
        "cross-validation table of a training run, as Markdown",
    ),
    "attention": (
        "luvnet.engine.evaluation.attention_plot",
        "per-pattern attention curves for one video",
    ),
    "covid-blues-manifest": (
        "luvnet.engine.data.covid_blues",
        "build a manifest for the COVID-BLUES videos",
    ),
    "export": ("luvnet.commands.export", "export encoder and head to ONNX"),
    "bench": ("luvnet.bench.run", "latency of the pipeline stages, cached vs naive, backends"),
    "keys": ("luvnet.commands.keys", "create CURVE keys for an authenticated score stream"),
}


def build_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    parser = argparse.ArgumentParser(prog="luvnet", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, usage) in COMMANDS.items():
        sub.add_parser(name, help=usage, add_help=False)
    return parser, sub


def _import_interruptibly(module_name: str) -> tuple[object, int | None]:
    """Import a subcommand's module (torch takes seconds); also the signal that came meanwhile.

    A KeyboardInterrupt raised inside a third-party import can be swallowed by a bare
    ``except`` there, and the command would then start as if never interrupted. So during the
    import the signals only set a flag, checked once the import is done.
    """
    requested: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda signum, _frame: requested.append(signum))
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        module = importlib.import_module(module_name)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return module, (requested[0] if requested else None)


def main(argv: list[str] | None = None) -> int:
    # FFmpeg and OpenCV print their own multi-line warnings on broken files; our errors are
    # one line. Must be set before cv2 is first imported.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    argv = sys.argv[1:] if argv is None else argv
    parser, _ = build_parser()
    if not argv or argv[0] not in COMMANDS:
        if argv and not argv[0].startswith("-"):
            parser.error(f"unknown command {argv[0]!r}; choose one of {', '.join(COMMANDS)}")
        parser.parse_args(argv)
        parser.print_help()
        return 0
    name, rest = argv[0], argv[1:]
    module_name, usage = COMMANDS[name]
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
        print(f"luvnet {name}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
