"""Argument types shared by every subcommand: one parser per kind of value, one message each.

Each is an ``argparse`` ``type=`` callable, so a bad value is a usage error at parse time
(exit 2, the option named by argparse) and never reaches a library function. The one exception,
:func:`add_split_arguments`, leaves the split's ranges to the settings check that train and
pretrain share.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from luvnet.engine.data.timing import DEFAULT_DECIMATE_ABOVE
from luvnet.engine.errors import LuvnetError
from luvnet.streamer.protocol import DEFAULT_ENDPOINT, ProtocolError, check_topic_prefix
from luvnet.streamer.schema import check_stream_id
from luvnet.streamer.sources import available_sources, split_uri

T = TypeVar("T")


def _number(
    text: str, convert: Callable[[str], T], accept: Callable[[T], bool], expected: str
) -> T:
    """``convert(text)`` when it parses and ``accept`` holds; else argparse's usage error."""
    try:
        value = convert(text)
    except ValueError:
        value = None
    if value is None or not accept(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (frame counts, workers, ports' siblings)."""
    return _number(text, int, lambda v: v >= 1, "a positive integer")


def nonnegative_int(text: str) -> int:
    """An integer >= 0 (0 usually means "off")."""
    return _number(text, int, lambda v: v >= 0, "an integer >= 0")


def positive_float(text: str) -> float:
    """A finite number > 0 (seconds, rates); refuses nan and inf."""
    return _number(text, float, lambda v: v > 0 and math.isfinite(v), "a positive number")


def nonnegative_float(text: str) -> float:
    """A finite number >= 0 (seconds where 0 means "do not wait"); refuses nan and inf."""
    return _number(text, float, lambda v: v >= 0 and math.isfinite(v), "a number >= 0")


def decimate_factor(text: str) -> float:
    """``--decimate-above``: 0 (never decimate) or a factor >= 1 over the model's frame rate."""
    return _number(
        text, float, lambda v: v == 0 or (v >= 1 and math.isfinite(v)), "0 (off) or a number >= 1"
    )


def add_decimate_argument(parser: argparse._ActionsContainer) -> None:
    """``--decimate-above F`` for train, evaluate and stream (docs/formats.md, "Time")."""
    parser.add_argument(
        "--decimate-above",
        type=decimate_factor,
        default=DEFAULT_DECIMATE_ABOVE,
        metavar="F",
        help="decimate by timestamp to the model's frame rate a source at F times that rate or "
        "faster; slower sources are never padded; 0 = off",
    )


def add_split_arguments(
    parser: argparse.ArgumentParser,
    *,
    title: str,
    fold_default: int | None,
    fold_help: str,
    seed_help: str,
) -> argparse._ArgumentGroup:
    """``--folds/--fold/--test-fraction/--seed``, the patient split of train and pretrain;
    returns the group, for a command's own split options.

    Plain ints and floats here: :func:`~luvnet.engine.training.settings.check_split_options`
    refuses a bad value in the same one line for both commands.
    """
    split = parser.add_argument_group(title)
    split.add_argument("--folds", type=int, default=5, help="cross-validation folds K")
    split.add_argument("--fold", type=int, default=fold_default, help=fold_help)
    split.add_argument("--test-fraction", type=float, default=0.1, help="patients held out")
    split.add_argument("--seed", type=int, default=0, help=seed_help)
    return split


def crop_box(text: str) -> tuple[int, int, int, int]:
    """A fixed sector box ``X,Y,W,H`` in source pixels: x, y >= 0 and w, h >= 1."""
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected X,Y,W,H (4 integers, in pixels), got {text!r}"
        ) from None
    if x < 0 or y < 0 or w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"expected X, Y >= 0 and W, H >= 1, got {text!r}")
    return x, y, w, h


def frame_size(text: str) -> tuple[int, int]:
    """A frame size ``HxW`` in pixels, such as ``924x1232``; returns (height, width)."""
    h, sep, w = text.lower().partition("x")
    if not sep or not h.isdigit() or not w.isdigit() or int(h) < 1 or int(w) < 1:
        raise argparse.ArgumentTypeError(f"expected HxW such as 924x1232, got {text!r}")
    return int(h), int(w)


def fourcc(text: str) -> str:
    """A capture pixel format: exactly 4 printable ASCII characters, such as ``MJPG``, ``YUYV``."""
    if len(text) != 4 or not all(" " <= char <= "~" for char in text):
        raise argparse.ArgumentTypeError(
            f"expected 4 characters such as MJPG or YUYV (a FOURCC code), got {text!r}"
        )
    return text


def stream_id(text: str) -> str:
    """A stream id: 1..64 of ``[A-Za-z0-9_-]`` (it is a word of the topic), such as ``bed1``."""
    try:
        return check_stream_id(text)
    except ProtocolError:
        raise argparse.ArgumentTypeError(
            f"expected 1 to 64 letters, digits, '_' or '-' such as bed1, got {text!r}"
        ) from None


def topic_prefix(text: str) -> str:
    """A topic prefix: dot-separated ``[A-Za-z0-9_-]`` words, such as ``luvnet.ward3``."""
    try:
        return check_topic_prefix(text)
    except ProtocolError:
        raise argparse.ArgumentTypeError(
            f"expected dot-separated words of letters, digits, '_' or '-' such as luvnet.ward3, "
            f"got {text!r}"
        ) from None


def client_name(text: str) -> str:
    """A CURVE client key name: 1..64 of ``[A-Za-z0-9_-]``, not ``server``."""
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", text) or text == "server":
        raise argparse.ArgumentTypeError(
            f"expected 1 to 64 letters, digits, '_' or '-' (not 'server'), got {text!r}"
        )
    return text


def device_name(text: str) -> str:
    """Where the model runs: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (whether this machine
    has that device is checked when the model loads)."""
    if not re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", text):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}")
    return text


def zmq_endpoint(text: str) -> str:
    """A ZeroMQ address: ``tcp://HOST:PORT`` (an IPv6 host in brackets, ``tcp://[::1]:5555``),
    ``ipc://PATH`` or ``inproc://NAME``. Whether other hosts may reach it is the publisher's
    check (``--allow-remote``)."""
    example = f"such as {DEFAULT_ENDPOINT} or tcp://[::1]:5555"
    transport, sep, address = text.partition("://")
    if not sep or not address or transport not in ("tcp", "ipc", "inproc"):
        raise argparse.ArgumentTypeError(
            f"expected tcp://HOST:PORT, ipc://PATH or inproc://NAME {example}, got {text!r}"
        )
    if transport != "tcp":
        return text
    host, colon, port = address.rpartition(":")
    if not colon or not host or not (port == "*" or (port.isdigit() and 0 < int(port) < 65536)):
        raise argparse.ArgumentTypeError(
            f"expected tcp://HOST:PORT with a port 1..65535 {example}, got {text!r}"
        )
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host.removeprefix("[").removesuffix("]"))
        except ValueError:
            ok = False
        else:
            ok = host.endswith("]")
        if not ok:
            raise argparse.ArgumentTypeError(
                f"expected an IPv6 address in brackets such as tcp://[::1]:5555, got {text!r}"
            )
    elif ":" in host:
        raise argparse.ArgumentTypeError(
            f"write an IPv6 address in brackets, tcp://[{host}]:{port}, got {text!r}"
        )
    return text


def source_uri(text: str) -> str:
    """A frame source whose scheme is installed (``phantom:7``, ``file:scan.mp4``, ``device:0``,
    ``rtsp://...``); whether it opens is the source's own check when the stream starts."""
    scheme, _ = split_uri(text)
    schemes = available_sources()
    if scheme not in schemes:
        raise argparse.ArgumentTypeError(
            f"unknown scheme {scheme!r} in {text!r}; expected one of {', '.join(sorted(schemes))} "
            "(e.g. phantom:7, file:scan.mp4, device:0)"
        )
    return text


VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".avi")  # containers OpenCV writes mp4v to


def video_out(text: str) -> Path:
    """A video file to write: a suffix OpenCV can write (``.mp4``, ...) in an existing folder."""
    path = Path(text)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise argparse.ArgumentTypeError(
            f"expected a video file name ending in {', '.join(VIDEO_SUFFIXES)}, got {text!r}"
        )
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(
            f"folder {str(path.parent)!r} does not exist (create it first), got {text!r}"
        )
    return path


def checked(option: str, parse: Callable[[str], T], text: str) -> T:
    """``parse(text)`` with one of the types above, after argument parsing.

    A bad value is then a one-line ``LuvnetError`` naming ``option`` (``luvnet CMD: error:
    --size: expected HxW ...``, exit 2) rather than argparse's usage text, for the options whose
    error has always been that one line.
    """
    try:
        return parse(text)
    except argparse.ArgumentTypeError as err:
        raise LuvnetError(f"{option}: {err}") from None
