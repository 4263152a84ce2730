"""Run a live stream to its end: compose it, publish until the source ends or a stop, report.

What ``luvnet stream`` and ``luvnet overlay`` do between parsing their arguments and exiting,
as one function with typed arguments. Progress goes to this module's logger at INFO (the
start line, one status line a second, the summary); a source that failed for good is logged
at ERROR and shows in :attr:`StreamOutcome.exit_status`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from luvnet.streamer.compose import StreamSettings, compose_stream
from luvnet.streamer.pipeline import Sink
from luvnet.streamer.protocol import ScoreMessage, StatusMessage
from luvnet.streamer.publisher import PublisherOptions, open_publisher

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamOutcome:
    """How a stream ended."""

    published: int  # frames scored and published
    state: str  # the source's state in the last status message; "unknown" if none went out
    last_error: str | None = None

    @property
    def failed(self) -> bool:
        """The source failed for good (a file that cannot be decoded)."""
        return self.state == "error"

    @property
    def exit_status(self) -> int:
        """0 when the source ended or the stream was stopped, 1 when the source failed."""
        return 1 if self.failed else 0


def status_line(msg: StatusMessage) -> str:
    """The once-a-second progress line of a running stream."""
    error = f"  last error: {msg.last_error}" if msg.last_error else ""
    return (
        f"[{msg.uptime_s:7.1f}s] {msg.state:12s} in {msg.input_fps:5.1f} fps  "
        f"out {msg.output_fps:5.1f} fps  published {msg.frames_published}  "
        f"dropped {msg.frames_dropped}  {msg.backend}/{msg.device}{error}"
    )


def run_stream(
    settings: StreamSettings,
    publishing: PublisherOptions,
    *,
    stop: threading.Event,
    sinks: Sequence[Sink] = (),
    wait_subscriber_s: float = 0.0,
    status_lines: bool = True,
    on_started: Callable[[], None] | None = None,
) -> StreamOutcome:
    """Publish ``settings``' stream until its source ends, ``max_frames`` or ``stop`` is set.

    Args:
        settings: what to stream (source, checkpoint, backend, ...).
        publishing: where to publish; the socket is bound before the model loads and closed
            on return.
        stop: set it (a signal handler, another thread) to end the loop within one frame.
        sinks: in-process consumers of each frame and its message (an overlay writer); the
            caller closes them.
        wait_subscriber_s: before the first frame, wait up to this long for a subscriber
            (PUB keeps no history); 0 does not wait.
        status_lines: log one status line a second.
        on_started: called once start-up (model load, compile, the wait) is over, just before
            the first frame.

    Raises:
        LuvnetError: a configuration error (address, keys, checkpoint, source, device).
    """
    with open_publisher(
        bind=publishing.bind,
        topic_prefix=publishing.topic_prefix,
        allow_remote=publishing.allow_remote,
        curve_keys=publishing.curve_keys,
    ) as publisher:
        last_status: list[StatusMessage] = []

        def publish(msg: ScoreMessage | StatusMessage) -> None:
            publisher.publish(msg)
            if isinstance(msg, StatusMessage):
                last_status[:] = [msg]
                if status_lines:
                    log.info("%s", status_line(msg))

        pipeline = compose_stream(settings, publish, list(sinks))
        if wait_subscriber_s > 0 and not publisher.wait_for_subscriber(wait_subscriber_s):
            log.info("no subscriber yet; starting anyway")
        identity = pipeline.identity
        log.info(
            "%s -> %s (model %s, %s on %s)",
            settings.source,
            publisher.endpoint,
            identity.model_id,
            identity.backend,
            identity.device,
        )
        log.info("backend %s", identity.detail)
        if on_started is not None:
            on_started()
        published = pipeline.run(stop)
    final = last_status[0] if last_status else None
    outcome = StreamOutcome(
        published=published,
        state=final.state if final else "unknown",
        last_error=final.last_error if final else None,
    )
    log.info("%d frames scored, source %s", published, outcome.state)
    if outcome.failed:
        log.error("%s", outcome.last_error)
    return outcome
