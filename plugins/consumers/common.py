"""What the subscribing consumers share: their command-line options and a clean stop on signals."""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Self

from luvnet.streamer.client import Gap, ScoreSubscriber
from luvnet.streamer.protocol import DEFAULT_ENDPOINT, DEFAULT_TOPIC_PREFIX
from luvnet.streamer.security import load_client_keys

POLL_MS = 200  # how often a consumer loop checks for a stop request


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text}")
    return value


def add_subscriber_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--endpoint",
        default=DEFAULT_ENDPOINT,
        help=f"publisher address (default {DEFAULT_ENDPOINT})",
    )
    parser.add_argument(
        "--topic-prefix",
        default=DEFAULT_TOPIC_PREFIX,
        help="receive topics under this prefix, e.g. luvnet.ward3 (default luvnet: all)",
    )
    parser.add_argument(
        "--curve-keys",
        type=Path,
        metavar="DIR",
        help="CURVE key directory with client.key_secret and server.key",
    )


def open_subscriber(
    args: argparse.Namespace, on_gap: Callable[[Gap], None] | None = None
) -> ScoreSubscriber:
    curve = load_client_keys(args.curve_keys) if args.curve_keys is not None else None
    return ScoreSubscriber(
        args.endpoint, topic_prefix=args.topic_prefix, curve=curve, on_gap=on_gap
    )


class StopOnSignal:
    """Within the block, SIGINT and SIGTERM set ``stopped`` instead of killing the process, so a
    consumer finishes its loop iteration and cleans up. Signals can only be caught in the main
    thread; elsewhere (a consumer run from a test thread) this does nothing."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.stopped = False
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.stopped = True

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()
