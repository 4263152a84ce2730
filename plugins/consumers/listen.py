"""A live text view of the score stream (``luvnet listen``).

One line on stdout per score message (seq, frame, window fill, each pattern's score with ``*``
when it reaches its threshold, capture-to-publish latency, frames dropped per the last status),
one per status message, one per seq gap. Setting the stop flag (the command's SIGINT/SIGTERM)
ends it within ``POLL_MS``; a summary of messages, gaps and skipped malformed messages is
logged at the end. While nothing has arrived it logs what it waits for (endpoint, topic
prefix) after a second, then every 10 s.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time

from luvnet.engine.errors import LuvnetError
from luvnet.plugins.consumers.common import POLL_MS, SubscriberOptions, open_subscriber
from luvnet.streamer.client import Gap, ScoreSubscriber
from luvnet.streamer.protocol import DEFAULT_STREAM_ID, ScoreMessage, StatusMessage

log = logging.getLogger(__name__)

# While nothing has arrived: say what is awaited after a second (a running stream sends a
# status message every second, so a working setup never sees it), then every 10 s.
WAITING_NOTICE_S = 1.0
WAITING_REMINDER_S = 10.0


def _stream(msg: ScoreMessage | StatusMessage) -> str:
    return "" if msg.stream_id == DEFAULT_STREAM_ID else f"[{msg.stream_id}] "


def format_score(msg: ScoreMessage, last_status: StatusMessage | None) -> str:
    flags = msg.flags
    scores = " ".join(f"{p} {msg.scores[p]:.2f}{'*' if flags[p] else ' '}" for p in msg.patterns)
    drops = "-" if last_status is None else str(last_status.frames_dropped)
    return (
        f"{_stream(msg)}seq {msg.seq} frame {msg.frame} fill {msg.fill}/{msg.window} | "
        f"{scores}| e2e {msg.latency_e2e_ms:.1f} ms | drops {drops}"
    )


def format_status(msg: StatusMessage) -> str:
    line = (
        f"{_stream(msg)}status seq {msg.seq}: {msg.source} {msg.state} | "
        f"in {msg.input_fps:.1f} fps, out {msg.output_fps:.1f} fps | "
        f"captured {msg.frames_captured}, dropped {msg.frames_dropped}, "
        f"published {msg.frames_published} | {msg.backend} {msg.device} "
        f"model {msg.model_id or '-'} | up {msg.uptime_s:.0f} s"
    )
    return line if msg.last_error is None else f"{line} | last error: {msg.last_error}"


def format_gap(gap: Gap) -> str:
    return f"gap: {gap.missed} {gap.kind} message(s) lost, seq {gap.expected}..{gap.got - 1}"


def summary(sub: ScoreSubscriber) -> str:
    text = (
        f"{sub.received_count} messages, {sub.gap_count} gaps ({sub.missed_count} lost), "
        f"{sub.malformed_count} malformed skipped"
    )
    return text if sub.last_malformed is None else f"{text} (last: {sub.last_malformed})"


def waiting_line(options: SubscriberOptions, waited_s: float) -> str:
    """What ``listen`` waits for, and what to check, while nothing has arrived."""
    secure = ", CURVE-encrypted" if options.curve_keys is not None else ""
    return (
        f"waiting for messages from {options.endpoint} (topics under {options.topic_prefix}"
        f"{secure}); nothing for {waited_s:.0f} s: is a `luvnet stream` publishing there "
        f"(its --bind)?"
    )


def listen(
    options: SubscriberOptions,
    *,
    stop: threading.Event,
    count: int | None = None,
    timeout_s: float | None = None,
) -> None:
    """Print the stream until ``stop`` is set or ``count`` score messages have come.

    Raises:
        LuvnetError: no message within ``timeout_s`` seconds (None waits forever), or bad
            subscriber options (keys, topic prefix).
    """
    last_status: StatusMessage | None = None
    logged_reason: str | None = None
    scores = 0
    try:
        with open_subscriber(options, on_gap=lambda g: print(format_gap(g), flush=True)) as sub:
            heard = time.monotonic()
            next_notice = heard + WAITING_NOTICE_S
            while not stop.is_set() and (count is None or scores < count):
                msg = sub.recv(POLL_MS)
                silent = sub.received_count == 0 and sub.malformed_count == 0
                if msg is None and silent and time.monotonic() >= next_notice:
                    waited_s = time.monotonic() - heard
                    log.info("%s", waiting_line(options, waited_s))
                    next_notice = time.monotonic() + WAITING_REMINDER_S
                if sub.last_malformed is not None and sub.last_malformed != logged_reason:
                    logged_reason = sub.last_malformed  # once per distinct reason, not per message
                    log.warning("skipped a malformed message: %s", logged_reason)
                if msg is None:
                    if timeout_s is not None and time.monotonic() - heard >= timeout_s:
                        raise LuvnetError(
                            f"no message from {options.endpoint} within {timeout_s:g} s"
                        )
                    continue
                heard = time.monotonic()
                if isinstance(msg, StatusMessage):
                    last_status = msg
                    print(format_status(msg), flush=True)
                else:
                    scores += 1
                    print(format_score(msg, last_status), flush=True)
            log.info("%s", summary(sub))
    except BrokenPipeError:  # e.g. `luvnet listen | head`: the reader left, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
