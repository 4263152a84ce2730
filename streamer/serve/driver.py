"""The driver of ``luvnet serve``: one thread per stream, one socket, one encoder deployment.

Each stream is the pipeline ``luvnet stream`` runs (:func:`luvnet.streamer.compose.compose_stream`:
grabber, preprocess, embedding window, head, postprocess), with the encoder call going to the
Ray Serve deployment, which batches frames across streams. All streams publish on one ZeroMQ
socket, each under its own topic ``<prefix>.<stream_id>.`` with its own sequence numbers. A
stream whose source fails ends alone; the others go on. A frame whose encoder call fails (a
replica died) is skipped and its stream's window restarts, so no score mixes a hole in.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from luvnet.engine.runtime import resolve_device, set_threads
from luvnet.streamer.compose import check_publishable, compose_stream, load_stream_checkpoint
from luvnet.streamer.frame_source import FrameSource
from luvnet.streamer.pipeline import StreamPipeline
from luvnet.streamer.protocol import ScoreMessage, StatusMessage
from luvnet.streamer.publisher import ScorePublisher, open_publisher
from luvnet.streamer.schema import printable
from luvnet.streamer.serve.cluster import ServeCluster
from luvnet.streamer.serve.encoder import (
    BatchTally,
    FrameCoalescer,
    batch_outputs,
    remote_backend,
)
from luvnet.streamer.serve.settings import ServeSettings

log = logging.getLogger(__name__)

SUMMARY_INTERVAL_S = 5.0  # one log line for all streams this often


@dataclass
class StreamResult:
    """How one stream of the serve ended."""

    stream_id: str
    published: int = 0
    dropped: int = 0
    failed_frames: int = 0
    state: str = "unknown"  # the source's state in its last status message
    last_error: str | None = None


@dataclass
class ServeOutcome:
    """How ``luvnet serve`` ended: per stream, and the encoder's batching as the driver saw it."""

    streams: list[StreamResult] = field(default_factory=list)
    frames_encoded: int = 0
    mean_batch: float = 0.0
    replica_nodes: int = 0  # distinct Ray nodes whose replicas answered
    replicas: list[dict[str, Any]] = field(default_factory=list)  # stats of those that answered

    @property
    def exit_status(self) -> int:
        """0 when every source ended or was stopped, 1 when one failed for good."""
        return 1 if any(s.state == "error" for s in self.streams) else 0


def run_serve(
    settings: ServeSettings,
    *,
    stop: threading.Event,
    sources: Mapping[str, FrameSource] | None = None,
    on_started: Callable[[ServeCluster], None] | None = None,
    wait_subscriber_s: float = 0.0,
) -> ServeOutcome:
    """Serve every stream of ``settings`` until each ends, or ``stop`` is set.

    Args:
        settings: the pipeline (checked by ``luvnet.commands.serve_config``).
        stop: set it (a signal, another thread) to end every stream within a frame.
        sources: stream id -> a source to use instead of the stream's URI (frames replayed
            from memory by ``luvnet bench serve``).
        on_started: called with the cluster once the encoder is deployed and the streams are
            wired, just before they start.
        wait_subscriber_s: before the first frame, wait up to this long for a subscriber.

    Raises:
        LuvnetError: a configuration error (address, checkpoint, source, device, cluster).
    """
    set_threads(settings.threads)
    device = resolve_device(settings.device)
    checkpoint = load_stream_checkpoint(settings.checkpoint)
    check_publishable(checkpoint)
    publishing = settings.publish
    with (
        open_publisher(
            bind=publishing.bind,
            topic_prefix=publishing.topic_prefix,
            allow_remote=publishing.allow_remote,
            curve_keys=publishing.curve_keys,
        ) as publisher,
        ServeCluster(settings) as cluster,
    ):
        tally = BatchTally()
        encoder = settings.encoder
        coalescer = FrameCoalescer(
            cluster.handle,
            max_batch=encoder.max_batch_size,
            wait_s=encoder.batch_wait_ms / 1000,
            timeout_s=settings.request_timeout_s,
            # Requests in flight per replica: while they are, the next batch fills (on this
            # CPU a request costs milliseconds of Ray's own work, so fewer, fuller ones).
            senders=encoder.replicas * encoder.requests_in_flight,
            tally=tally,
            outputs=batch_outputs(checkpoint.model, taps=False),  # until the heads exist
        )
        pipelines: list[StreamPipeline] = []
        last_status: dict[str, StatusMessage] = {}
        for stream in settings.streams:
            remote = remote_backend(
                coalescer,
                checkpoint,
                device=device,
                precision=settings.precision,
                backend_name=settings.backend,
            )
            source = sources.get(stream.stream_id) if sources else None
            pipeline = compose_stream(
                stream,
                _publisher_for(publisher, last_status),
                source=source,
                backend=remote.backend,
                checkpoint=checkpoint,
                submit=remote.submit,
                frames_in_flight=encoder.frames_in_flight,
                encoder_normalizes=True,  # the replicas normalise: S*S bytes per frame
            )
            remote.set_on_lost(pipeline.head.reset)
            pipelines.append(pipeline)
        # The incremental heads' tap products: one product per request for every stream
        # (the model is the heads' own, in their device and dtype once composed).
        coalescer.outputs = batch_outputs(
            checkpoint.model, taps=any(p.head.mode == "incremental" for p in pipelines)
        )
        if wait_subscriber_s > 0 and not publisher.wait_for_subscriber(wait_subscriber_s):
            log.info("no subscriber yet; starting anyway")
        for pipeline in pipelines:
            log.info(
                "stream %s: %s -> %s",
                pipeline.identity.stream_id,
                printable(pipeline.grabber.source.name),
                publisher.endpoint,
            )
        if on_started is not None:
            on_started(cluster)
        try:
            _run_all(pipelines, stop, last_status)
        finally:
            coalescer.close()
        try:
            replicas = cluster.replica_stats()
        except Exception as err:  # noqa: BLE001 - figures only; a lost replica must not fail the end
            log.warning("replica stats: %s: %s", type(err).__name__, str(err).splitlines()[0])
            replicas = []
    results = [_result(p, last_status.get(p.identity.stream_id)) for p in pipelines]
    for result in results:
        log.info(
            "stream %s: %d frames scored, %d dropped, %s%s",
            result.stream_id,
            result.published,
            result.dropped,
            result.state,
            f" ({result.last_error})" if result.state == "error" and result.last_error else "",
        )
    return ServeOutcome(
        streams=results,
        frames_encoded=tally.frames,
        mean_batch=tally.mean_batch,
        replica_nodes=len(tally.nodes),
        replicas=replicas,
    )


def _publisher_for(
    publisher: ScorePublisher, last_status: dict[str, StatusMessage]
) -> Callable[[ScoreMessage | StatusMessage], None]:
    def publish(msg: ScoreMessage | StatusMessage) -> None:
        publisher.publish(msg)
        if isinstance(msg, StatusMessage):
            last_status[msg.stream_id] = msg

    return publish


def _run_all(
    pipelines: list[StreamPipeline], stop: threading.Event, last_status: dict[str, StatusMessage]
) -> None:
    """Each pipeline's loop on its own thread; a summary line every few seconds."""

    def run(pipeline: StreamPipeline) -> None:
        try:
            pipeline.run(stop)
        except Exception as err:  # noqa: BLE001 - one stream's failure must not end the others
            log.error(
                "stream %s stopped: %s: %s", pipeline.identity.stream_id, type(err).__name__, err
            )

    threads = [
        threading.Thread(target=run, args=(p,), name=f"serve-{p.identity.stream_id}", daemon=True)
        for p in pipelines
    ]
    for thread in threads:
        thread.start()
    next_summary = time.monotonic() + SUMMARY_INTERVAL_S
    while any(t.is_alive() for t in threads):
        for thread in threads:
            thread.join(timeout=0.1)
            if time.monotonic() >= next_summary:
                next_summary += SUMMARY_INTERVAL_S
                log.info("%s", _summary(last_status))
    log.info("%s", _summary(last_status))


def _summary(last_status: Mapping[str, StatusMessage]) -> str:
    rates = ", ".join(
        f"{sid} {s.output_fps:.1f} fps ({s.frames_dropped} dropped)"
        for sid, s in sorted(last_status.items())
    )
    return f"scored: {rates}" if rates else "no stream has started yet"


def _result(pipeline: StreamPipeline, status: StatusMessage | None) -> StreamResult:
    return StreamResult(
        stream_id=pipeline.identity.stream_id,
        published=pipeline.counters.published,
        dropped=pipeline.grabber.dropped,
        failed_frames=pipeline.counters.failed_frames,
        state=status.state if status else "unknown",
        last_error=status.last_error if status else None,
    )
