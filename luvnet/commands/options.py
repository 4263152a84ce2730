"""Argument types shared by every subcommand: one parser per kind of value, one message each.

Each is an ``argparse`` ``type=`` callable, so a bad value is a usage error at parse time
(exit 2, the option named by argparse) and never reaches a library function.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import TypeVar

from luvnet.engine.errors import LuvnetError

T = TypeVar("T")


def positive_int(text: str) -> int:
    """An integer >= 1 (frame counts, workers, ports' siblings)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def nonnegative_int(text: str) -> int:
    """An integer >= 0 (0 usually means "off")."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (seconds, rates); refuses nan and inf."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


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
