"""Files luvnet writes and reads back: atomic writes and JSON objects with one-line errors.

Every file luvnet writes (checkpoint config, metrics, predictions, history, training state,
caches, run records) goes through :func:`atomic_open` or a helper built on it: the bytes land
in a temporary file beside the target and ``os.replace`` moves it into place (atomic on
POSIX), so a reader or a killed process never sees half a file.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from luvnet.engine.errors import LuvnetError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path beside ``path``; moved onto ``path`` when the block ends without error.

    For writers that take a file name (safetensors, OpenCV). On an error the temporary file is
    removed and ``path`` is left as it was.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_open(
    path: str | os.PathLike[str],
    mode: str = "w",
    *,
    encoding: str | None = "utf-8",
    newline: str | None = None,
) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing; it replaces ``path`` on success.

    ``mode`` is ``"w"`` (text, ``encoding`` and ``newline`` apply) or ``"wb"``.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode must be 'w' or 'wb', got {mode!r}")
    with atomic_path(path) as tmp:
        if mode == "wb":
            with tmp.open("wb") as handle:
                yield handle
        else:
            with tmp.open("w", encoding=encoding, newline=newline) as handle:
                yield handle


def write_json(path: str | os.PathLike[str], document: Any, *, indent: int | None = 2) -> None:
    """Write ``document`` as strict JSON (no NaN or Infinity), atomically, newline-terminated.

    Raises:
        LuvnetError: a value JSON cannot hold (NaN, Infinity, an unknown type), naming the file.
    """
    try:
        text = json.dumps(document, indent=indent, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise LuvnetError(f"{path}: cannot be written as JSON ({err})") from None
    with atomic_open(path) as handle:
        handle.write(text + "\n")


# Longest first: the UTF-32 LE mark begins with the UTF-16 LE one.
_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


def decode_text(data: bytes, path: str | Path, *, hint: str = "save it as UTF-8") -> str:
    """Text from the bytes of a file people save with other programs.

    UTF-8 with or without a byte-order mark; UTF-16 or UTF-32 with one (a spreadsheet's
    "Unicode Text" export, Notepad's "Unicode"); UTF-16 without one when NUL bytes show it.
    The mark is dropped; line ends are left to the caller (``csv`` and ``json`` take CRLF).

    Raises:
        LuvnetError: none of these, naming the file, the byte and ``hint``.
    """
    encoding, skipped = "utf-8", 0
    for bom, name in _BOMS:
        if data.startswith(bom):
            encoding, skipped = name, len(bom)
            break
    else:
        if b"\x00" in data[:2]:  # "v\0i\0" is UTF-16 LE, "\0v\0i" is BE: ASCII text in UTF-16
            encoding = "utf-16-le" if data[1:2] == b"\x00" else "utf-16-be"
    try:
        return data[skipped:].decode(encoding)
    except UnicodeDecodeError as err:
        what = encoding.upper().replace("-LE", " LE").replace("-BE", " BE")
        at = err.start + skipped
        raise LuvnetError(f"{path}: not {what} text ({err.reason} at byte {at}); {hint}") from None


def read_text(path: str | Path, *, hint: str = "save it as UTF-8") -> str:
    """A text file's contents, decoded as :func:`decode_text` says.

    Raises:
        OSError: the file cannot be read (missing, a directory, no permission).
        LuvnetError: not text in any of those encodings.
    """
    return decode_text(Path(path).read_bytes(), path, hint=hint)


def read_json_object(path: str | Path, *, expected: str = "a JSON object") -> dict[str, Any]:
    """Read a JSON file whose top level is an object.

    A byte-order mark, UTF-16 and CRLF line ends are accepted (editors on Windows write them).

    Args:
        path: the file.
        expected: what the file should hold, for the error when it is missing or not an object.

    Raises:
        LuvnetError: missing, unreadable, not JSON (with line and column) or not an object.
    """
    path = Path(path)
    try:
        document = json.loads(read_text(path))
    except FileNotFoundError:
        raise LuvnetError(f"{path}: missing; expected {expected}") from None
    except IsADirectoryError:
        raise LuvnetError(f"{path}: is a directory; expected a file with {expected}") from None
    except json.JSONDecodeError as err:
        raise LuvnetError(
            f"{path}: not valid JSON ({err.msg} at line {err.lineno} column {err.colno})"
        ) from None
    except OSError as err:
        raise LuvnetError(f"{path}: cannot be read ({err.strerror or err})") from None
    if not isinstance(document, dict):
        raise LuvnetError(f"{path}: expected {expected}, got a JSON {type(document).__name__}")
    return document


def read_versioned_json(
    path: str | Path, *, format: str, version: int, expected: str, hint: str = ""
) -> dict[str, Any]:
    """Read a JSON object that declares ``"format"`` and ``"format_version"`` and check both.

    For luvnet's own documents (checkpoint config, training state, ONNX export description).

    Args:
        path: the file.
        format: the ``"format"`` value the document must declare.
        version: the one ``"format_version"`` this code reads.
        expected: what the file should hold, for the error when it is missing or not an object.
        hint: appended to every error after ``"; "`` (e.g. how to start over).

    Raises:
        LuvnetError: as :func:`read_json_object`, or another format or version.
    """
    suffix = f"; {hint}" if hint else ""
    try:
        document = read_json_object(path, expected=expected)
    except LuvnetError as err:
        raise LuvnetError(f"{err}{suffix}") from None
    if document.get("format") != format:
        raise LuvnetError(
            f'{path}: expected "format": "{format}", got {document.get("format")!r}{suffix}'
        )
    if document.get("format_version") != version:
        raise LuvnetError(
            f"{path}: format_version {document.get('format_version')!r} unsupported; "
            f"expected {version}{suffix}"
        )
    return document
