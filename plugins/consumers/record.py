"""Append every message of the score stream to a JSON Lines file (``luvnet record``).

One JSON object per line, appended (a file can hold several recordings):

- a message: the decoded fields as in docs/protocol.md (``"kind": "scores"`` or ``"status"``,
  with ``v``, ``stream_id``, ``session``, ``seq``, ...; a score's ``flags`` included and its
  ``attention`` as a list of P lists of L floats);
- ``{"kind": "gap", "stream_id", "of", "expected", "got", "missed"}`` where seq numbers of
  kind ``of`` were lost, written just before the message that revealed the gap;
- ``{"kind": "end", "messages", "scores", "gaps", "missed", "malformed", "last_malformed"}``
  when the recording stops.

The file is flushed at least every ``FLUSH_INTERVAL_S`` while lines wait, also when no new
message comes, and on exit. The recording ends when every stream it heard has sent its final
status (state ``ended`` or ``error``: the publisher's source ended, ``--max-frames`` or a
stop; not with ``follow``, which records across publisher restarts), after ``count`` score
messages or ``duration_s`` seconds, on the stop flag (the command's SIGINT or SIGTERM), or
with an error after ``timeout_s`` without a message. A write failure
(disk full, read-only place) stops the recording with a one-line error; a line the disk took
only part of is cut off, so every line left in the file is whole JSON.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from luvnet.engine.errors import LuvnetError
from luvnet.plugins.consumers.common import (
    FINAL_STATES,
    POLL_MS,
    SubscriberOptions,
    open_subscriber,
)
from luvnet.streamer.client import Gap, ScoreSubscriber
from luvnet.streamer.protocol import SCORES, StatusMessage

FLUSH_INTERVAL_S = 1.0

log = logging.getLogger(__name__)


class JsonlWriter:
    """Appends one JSON object per line; flushes at most every FLUSH_INTERVAL_S and on close."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines = 0
        try:
            self._file: TextIO | None = path.open("a", encoding="utf-8")
        except OSError as err:
            raise LuvnetError(f"--out {path}: cannot open for appending ({err.strerror})") from None
        self._flushed_at = time.monotonic()
        self._pending = False  # lines written since the last flush
        self._torn = False

    def _failed(self, err: OSError) -> LuvnetError:
        self._torn = True  # part of a line may have reached the disk: cut it when closed
        return LuvnetError(f"--out {self.path}: write failed ({err.strerror}); recording stopped")

    def write(self, record: dict[str, Any]) -> None:
        assert self._file is not None, "write after close"
        line = json.dumps(record, allow_nan=False, separators=(",", ":"))
        try:
            self._file.write(line + "\n")
        except OSError as err:
            raise self._failed(err) from None
        self.lines += 1
        self._pending = True
        self.flush_if_due()

    def flush_if_due(self) -> None:
        """Flush when lines have waited FLUSH_INTERVAL_S; call it also when nothing arrives,
        so the last messages of a stream that went quiet reach the file within a second."""
        assert self._file is not None, "flush after close"
        if self._pending and time.monotonic() - self._flushed_at >= FLUSH_INTERVAL_S:
            try:
                self._file.flush()
            except OSError as err:
                raise self._failed(err) from None
            self._flushed_at = time.monotonic()
            self._pending = False

    def close(self) -> None:
        """Flush, sync a regular file to disk, close; raises LuvnetError if that fails."""
        file, self._file = self._file, None
        if file is None:
            return
        try:
            file.flush()
            if self.path.is_file():
                os.fsync(file.fileno())
        except OSError as err:
            raise self._failed(err) from None
        finally:
            with contextlib.suppress(OSError):  # the flush above already reported it
                file.close()
            if self._torn:
                _drop_partial_line(self.path)

    def discard(self) -> None:
        """Close after an error without raising again."""
        with contextlib.suppress(LuvnetError):
            self.close()


def _drop_partial_line(path: Path) -> None:
    """Truncate a regular file after its last newline, so every line left is whole JSON (a
    full disk accepts part of a buffer). Best effort: the error is reported either way."""
    with contextlib.suppress(OSError):
        if not path.is_file():
            return
        with path.open("rb+") as raw:
            end = raw.seek(0, os.SEEK_END)
            pos = end
            while pos > 0:
                start = max(0, pos - 65536)
                raw.seek(start)
                newline = raw.read(pos - start).rfind(b"\n")
                if newline >= 0:
                    pos = start + newline + 1
                    break
                pos = start
            if pos < end:
                raw.truncate(pos)


def gap_record(gap: Gap) -> dict[str, Any]:
    return {
        "kind": "gap",
        "stream_id": gap.stream_id,
        "of": gap.kind,
        "expected": gap.expected,
        "got": gap.got,
        "missed": gap.missed,
    }


def end_record(sub: ScoreSubscriber, scores: int) -> dict[str, Any]:
    return {
        "kind": "end",
        "messages": sub.received_count,
        "scores": scores,
        "gaps": sub.gap_count,
        "missed": sub.missed_count,
        "malformed": sub.malformed_count,
        "last_malformed": sub.last_malformed,
    }


def _record(
    writer: JsonlWriter,
    options: SubscriberOptions,
    stop: threading.Event,
    count: int | None,
    duration_s: float | None,
    timeout_s: float | None,
    follow: bool,
) -> tuple[str, str | None]:
    """Record until a stop condition; return the summary for the user and the error, if any
    (no message within ``timeout_s``: the file is closed properly first)."""
    scores = 0
    stop_at = None if duration_s is None else time.monotonic() + duration_s
    error: str | None = None
    heard: set[str] = set()  # streams heard from, and those that sent their final status
    ended: set[str] = set()
    with open_subscriber(options, on_gap=lambda gap: writer.write(gap_record(gap))) as sub:
        last_heard = time.monotonic()
        while not stop.is_set() and (count is None or scores < count):
            if stop_at is not None and time.monotonic() >= stop_at:
                break
            msg = sub.recv(POLL_MS)
            if msg is None:
                writer.flush_if_due()
                if timeout_s is not None and time.monotonic() - last_heard >= timeout_s:
                    error = f"no message from {options.endpoint} within {timeout_s:g} s"
                    break
                continue
            last_heard = time.monotonic()
            writer.write(msg.to_dict())
            scores += msg.kind == SCORES
            heard.add(msg.stream_id)
            if isinstance(msg, StatusMessage):
                # A stream that restarts after its end is recorded again.
                (ended.add if msg.state in FINAL_STATES else ended.discard)(msg.stream_id)
                if heard <= ended and not follow:
                    log.info("the stream ended (%s)", ", ".join(sorted(ended)))
                    break
        writer.write(end_record(sub, scores))
        gaps = "".join(
            f"\n  {gap.stream_id} {gap.kind}: seq {gap.expected}..{gap.got - 1} lost"
            for gap in list(sub.gaps)[-10:]
        )
        return (
            f"recorded {sub.received_count} messages ({scores} scores) to {writer.path}; "
            f"{sub.gap_count} gaps ({sub.missed_count} messages lost), "
            f"{sub.malformed_count} malformed skipped{gaps}"
        ), error


def record(
    out: Path,
    options: SubscriberOptions,
    *,
    stop: threading.Event,
    count: int | None = None,
    duration_s: float | None = None,
    timeout_s: float | None = None,
    follow: bool = False,
) -> None:
    """Append the stream to ``out`` until the stream ends (unless ``follow``), ``stop``,
    ``count`` score messages or ``duration_s`` (see the module docstring).

    The summary (messages, gaps, the last ten gaps) is logged at the end.

    Raises:
        LuvnetError: no message within ``timeout_s`` seconds (None waits forever; the file is
            closed with its end line first), ``out`` cannot be opened or written (the file
            keeps only whole lines), or bad subscriber options.
    """
    writer = JsonlWriter(out)
    try:
        summary, error = _record(writer, options, stop, count, duration_s, timeout_s, follow)
        writer.close()
    except BaseException:
        writer.discard()
        raise
    log.info("%s", summary)
    if error is not None:
        raise LuvnetError(error)
