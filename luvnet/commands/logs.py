"""One log format for the command line: ``luvnet COMMAND: message`` on stderr.

Library modules log through ``logging.getLogger(__name__)`` (all under ``luvnet.``) and never
print to stderr themselves; the dispatcher calls :func:`configure_logging` once per command.
"""

from __future__ import annotations

import logging
import sys

ROOT = "luvnet"


class CommandFormatter(logging.Formatter):
    """``luvnet train: message``; errors and warnings say so after the command name."""

    def __init__(self, command: str) -> None:
        super().__init__()
        self.prefix = f"luvnet {command}: " if command else "luvnet: "

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.ERROR:
            message = f"error: {message}"
        elif record.levelno >= logging.WARNING:
            message = f"warning: {message}"
        if record.exc_info and record.levelno >= logging.ERROR:
            # One line: the exception's own message, never a traceback.
            message = f"{message} ({record.exc_info[1]})"
        return self.prefix + message


def on_terminal() -> bool:
    """Whether a person is likely watching stderr. "Please wait" notices (a slow import, a model
    being built) are shown only then: a log file or a script reading stderr gets results and
    errors, and a bad input's error stays the one line it is."""
    return sys.stderr.isatty()


def configure_logging(command: str, level: int = logging.INFO) -> None:
    """Send every ``luvnet.*`` logger to stderr in the command-line format, at ``level``.

    Idempotent: a second call (a command run twice in one process, as tests do) replaces the
    handler rather than adding another.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(CommandFormatter(command))
    logger = logging.getLogger(ROOT)
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
