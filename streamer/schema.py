"""The limits of wire schema version 1 and one check per kind of field.

Each check takes the field's name (for the message) and its value, returns the value in its
normal form (an ``int``, a ``float``, a read-only float16 array) and raises
:class:`ProtocolError` with a one-line reason that starts with the field's name. The message
classes and the decoder in :mod:`luvnet.streamer.protocol` are built from these.
"""

from __future__ import annotations

import math
import re
import reprlib
from collections.abc import Mapping

import numpy as np

from luvnet.engine.errors import LuvnetError

ATTENTION_DTYPE = "<f2"  # the only array dtype a decoder accepts
MAX_MESSAGE_BYTES = 1 << 20  # topic + body; anything larger is refused unread
MAX_TOPIC_BYTES = 128
MAX_PATTERNS = 16
MAX_WINDOW = 1024
MAX_STAGES = 16
MAX_TEXT_CHARS = 256  # model id, backend, device, source name
MAX_ERROR_CHARS = 500  # last_error is cut to this length
MAX_UINT64 = 2**64 - 1
MAX_SESSION = 2**32 - 1

_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")  # pattern and stage names
_STREAM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_TOPIC_PREFIX = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 40


class ProtocolError(LuvnetError, ValueError):
    """A message (or a field of one) does not follow the schema; the text names the field."""


def describe(value: object) -> str:
    """``type value`` for an error message, the value cut to about 40 characters."""
    return f"{type(value).__name__} {_repr.repr(value)}"


def check_int(name: str, value: object, lo: int = 0, hi: int = MAX_UINT64) -> int:
    # bool is an int subclass in Python and msgpack has a separate bool type: refuse it here.
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        raise ProtocolError(f"{name}: expected an integer, got {describe(value)}")
    value = int(value)
    if not lo <= value <= hi:
        raise ProtocolError(f"{name}: expected {lo}..{hi}, got {value}")
    return value


def check_float(name: str, value: object, lo: float = 0.0, hi: float = math.inf) -> float:
    # Integers are accepted: JavaScript encoders send 1.0 as the integer 1.
    if isinstance(value, bool | np.bool_) or not isinstance(
        value, int | float | np.integer | np.floating
    ):
        raise ProtocolError(f"{name}: expected a number, got {describe(value)}")
    try:
        number = float(value)
    except OverflowError:
        raise ProtocolError(f"{name}: expected {lo:g}..{hi:g}, got {describe(value)}") from None
    if not math.isfinite(number):
        raise ProtocolError(f"{name}: expected a finite number, got {number}")
    if not lo <= number <= hi:
        raise ProtocolError(f"{name}: expected {lo:g}..{hi:g}, got {number:g}")
    return number


def check_text(name: str, value: object, max_chars: int = MAX_TEXT_CHARS) -> str:
    if not isinstance(value, str):
        raise ProtocolError(f"{name}: expected a string, got {describe(value)}")
    if len(value) > max_chars:
        raise ProtocolError(f"{name}: expected at most {max_chars} characters, got {len(value)}")
    if not value.isprintable():  # keeps terminal escapes out of consumers' screens
        raise ProtocolError(f"{name}: expected printable text, got {value!r:.60}")
    return value


def printable(text: str, max_chars: int = MAX_TEXT_CHARS) -> str:
    """``text`` made fit for a text field: each non-printable character written as a Python
    escape (``\\xa0``, ``\\u200b``, ``\\x1b``), cut to ``max_chars`` with ``...``.

    For names a user chose (a file name with a no-break space pasted from a web page): the
    field stays printable without refusing the name, and the escape still tells it apart.
    """
    pieces = [char if char.isprintable() else ascii(char)[1:-1] for char in text]
    if sum(map(len, pieces)) <= max_chars:
        return "".join(pieces)
    kept, length = [], 0
    for piece in pieces:  # whole escapes only, never half of one
        if length + len(piece) > max_chars - 3:
            break
        kept.append(piece)
        length += len(piece)
    return "".join(kept) + "..."


def _matching(name: str, value: object, pattern: re.Pattern[str], expected: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ProtocolError(f"{name}: expected {expected}, got {describe(value)}")
    return value


def check_name(name: str, value: object) -> str:
    """A pattern or stage name: ``[a-z][a-z0-9_]{0,31}``."""
    return _matching(name, value, _NAME, "a name matching [a-z][a-z0-9_]{0,31}")


def check_stream_id(value: object) -> str:
    return _matching("stream_id", value, _STREAM_ID, "[A-Za-z0-9_-]{1,64}")


def check_patterns(value: object) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not 1 <= len(value) <= MAX_PATTERNS:
        raise ProtocolError(
            f"patterns: expected a list of 1..{MAX_PATTERNS} names, got {describe(value)}"
        )
    names = tuple(check_name(f"patterns[{i}]", item) for i, item in enumerate(value))
    if len(set(names)) != len(names):
        raise ProtocolError(f"patterns: expected unique names, got {list(names)}")
    return names


def check_per_pattern(name: str, value: object, patterns: tuple[str, ...]) -> dict[str, float]:
    """A map pattern -> probability in [0, 1] with exactly the keys ``patterns``."""
    if not isinstance(value, Mapping):
        raise ProtocolError(f"{name}: expected a map of pattern -> number, got {describe(value)}")
    if set(value) != set(patterns):
        keys = sorted(map(str, value))[:MAX_PATTERNS]
        raise ProtocolError(f"{name}: expected keys {list(patterns)}, got {keys}")
    return {p: check_float(f"{name}.{p}", value[p], 0.0, 1.0) for p in patterns}


def check_stages(value: object) -> dict[str, float]:
    """``latency_ms``: up to MAX_STAGES stage name -> milliseconds >= 0."""
    if not isinstance(value, Mapping) or len(value) > MAX_STAGES:
        raise ProtocolError(
            f"latency_ms: expected a map of up to {MAX_STAGES} stage -> ms, got {describe(value)}"
        )
    return {
        check_name("latency_ms key", key): check_float(f"latency_ms.{key}", ms)
        for key, ms in value.items()
    }


def check_attention(value: object, shape: tuple[int, int]) -> np.ndarray:
    """A float array of ``shape`` [P, L], finite and >= 0; returns a read-only float16 copy."""
    if not isinstance(value, np.ndarray) or value.dtype.kind != "f":
        raise ProtocolError(f"attention: expected a float numpy array, got {describe(value)}")
    if value.shape != shape:
        raise ProtocolError(f"attention: expected shape {list(shape)}, got {list(value.shape)}")
    with np.errstate(over="ignore"):  # too-large values become inf and are refused below
        array = np.array(value, dtype=ATTENTION_DTYPE, order="C", copy=True)  # caller keeps theirs
    if not np.isfinite(array).all() or (array < 0).any():
        raise ProtocolError("attention: expected finite values >= 0")
    array.setflags(write=False)
    return array


def attention_from_wire(value: object, shape: tuple[int, int]) -> np.ndarray:
    """The wire form ``{dtype, shape, data}`` of the attention array, checked as above."""
    if not isinstance(value, Mapping):
        raise ProtocolError(f"attention: expected a map dtype/shape/data, got {describe(value)}")
    dtype, dims, data = value.get("dtype"), value.get("shape"), value.get("data")
    if dtype != ATTENTION_DTYPE:
        raise ProtocolError(f"attention.dtype: expected {ATTENTION_DTYPE!r}, got {describe(dtype)}")
    if dims != list(shape) or any(type(d) is not int for d in dims):
        raise ProtocolError(f"attention.shape: expected {list(shape)}, got {describe(dims)}")
    expected = shape[0] * shape[1] * 2
    if not isinstance(data, bytes) or len(data) != expected:
        got = f"{len(data)} bytes" if isinstance(data, bytes) else describe(data)
        raise ProtocolError(f"attention.data: expected {expected} bytes, got {got}")
    return check_attention(np.frombuffer(data, dtype=ATTENTION_DTYPE).reshape(shape), shape)


def check_topic_prefix(prefix: object) -> str:
    """Validate a topic prefix such as ``luvnet`` or ``luvnet.ward3``; return it."""
    if (
        not isinstance(prefix, str)
        or len(prefix) > MAX_TOPIC_BYTES - len(".scores")
        or not _TOPIC_PREFIX.fullmatch(prefix)
    ):
        raise ProtocolError(
            f"topic prefix: expected dot-separated [A-Za-z0-9_-] words such as 'luvnet' or "
            f"'luvnet.ward3', got {describe(prefix)}"
        )
    return prefix
