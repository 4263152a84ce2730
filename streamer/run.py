"""Run a live stream to its end: compose it, publish until the source ends or a stop, report.

What ``luvnet stream`` and ``luvnet overlay`` do between parsing their arguments and exiting,
as one function with typed arguments. Progress goes to this module's logger and
:mod:`luvnet.streamer.progress`'s at INFO (what start-up is doing, the start line, one line a
second with the newest scores, why frames are dropped, the summary with how the stream ended);
a source that failed for good is logged at ERROR and shows in
:attr:`StreamOutcome.exit_status`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from luvnet.streamer.compose import StreamSettings, compose_stream
from luvnet.streamer.pipeline import Sink
from luvnet.streamer.progress import StreamProgress
from luvnet.streamer.protocol import DEFAULT_ENDPOINT, ScoreMessage, StatusMessage
from luvnet.streamer.publisher import PublisherOptions, open_publisher
from luvnet.streamer.schema import printable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamOutcome:
    """How a stream ended."""

    published: int  # frames scored and published
    state: str  # the source's state in the last status message; "unknown" if none went out
    last_error: str | None = None
    ending: str = ""  # how it ended, for people: "source ended", "stopped by the user (Ctrl-C)"

    @property
    def failed(self) -> bool:
        """The source failed for good (a file that cannot be decoded)."""
        return self.state == "error"

    @property
    def exit_status(self) -> int:
        """0 when the source ended or the stream was stopped, 1 when the source failed."""
        return 1 if self.failed else 0


def run_stream(
    settings: StreamSettings,
    publishing: PublisherOptions,
    *,
    stop: threading.Event,
    sinks: Sequence[Sink] = (),
    wait_subscriber_s: float = 0.0,
    status_lines: bool = True,
    on_started: Callable[[], None] | None = None,
    stop_reason: Callable[[], str] | None = None,
    announce_startup: bool = True,
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
        status_lines: log one line a second with the newest scores and the rates.
        on_started: called once start-up (model load, compile, the wait) is over, just before
            the first frame.
        stop_reason: when ``stop`` ended the stream, says who stopped it, e.g. "stopped by
            the user (Ctrl-C)"; without it, "stopped".
        announce_startup: log what start-up is loading before it starts (for a person
            watching; a script reading stderr keeps a bad input's error as its one line).

    Raises:
        LuvnetError: a configuration error (address, keys, checkpoint, source, device).
    """
    with open_publisher(
        bind=publishing.bind,
        topic_prefix=publishing.topic_prefix,
        stream_id=settings.stream_id,
        allow_remote=publishing.allow_remote,
        curve_keys=publishing.curve_keys,
    ) as publisher:
        progress = StreamProgress(status_lines=status_lines)

        def publish(msg: ScoreMessage | StatusMessage) -> None:
            publisher.publish(msg)
            progress(msg)

        started = time.monotonic()
        if announce_startup:
            log.info("%s", startup_line(settings))
        pipeline = compose_stream(settings, publish, list(sinks))
        progress.nominal_fps = lambda: getattr(pipeline.grabber.source, "fps", None)
        if (took_s := time.monotonic() - started) > 2.0:
            log.info("model and backend ready in %.1f s", took_s)
        if wait_subscriber_s > 0:
            log.info("waiting up to %g s for a subscriber", wait_subscriber_s)
            if not publisher.wait_for_subscriber(wait_subscriber_s):
                log.info("no subscriber yet; starting anyway")
        identity = pipeline.identity
        listen_hint = (
            "; `luvnet listen` in a second terminal shows them"
            if publisher.endpoint == DEFAULT_ENDPOINT
            else ""
        )
        # The source's own name: credentials masked, non-printable characters escaped.
        log.info(
            "%s -> %s (model %s, %s on %s)%s",
            printable(pipeline.grabber.source.name),
            publisher.endpoint,
            identity.model_id,
            identity.backend,
            identity.device,
            listen_hint,
        )
        log.info("backend %s", identity.detail)
        if on_started is not None:
            on_started()
        published = pipeline.run(stop)
    final = progress.last_status
    state = final.state if final else "unknown"
    if state == "error":
        ending = "the source failed"
    elif stop.is_set():
        ending = stop_reason() if stop_reason is not None else "stopped"
    elif settings.max_frames is not None and published >= settings.max_frames:
        ending = f"stopped after {settings.max_frames} frames (--max-frames)"
    else:
        ending = "the source ended"
    outcome = StreamOutcome(
        published=published,
        state=state,
        last_error=final.last_error if final else None,
        ending=ending,
    )
    progress.finish(ending, published)
    if outcome.failed:
        log.error("%s", outcome.last_error)
    return outcome


def startup_line(settings: StreamSettings) -> str:
    """What start-up is about to do, said before it takes its seconds (or a compile's minutes)."""
    model = settings.checkpoint if settings.checkpoint is not None else "the demo model"
    slow = (
        "; a first compile can take minutes (cached for the next start)"
        if settings.backend in ("auto", "inductor", "tensorrt", "onnxruntime")
        else ""
    )
    return (
        f"loading {model} on device {settings.device} and preparing the {settings.backend} "
        f"backend{slow} ..."
    )
