"""The live pipeline: wiring of the stages and the loop that drives them.

One loop on the main thread takes the newest frame from the grabber and runs
preprocess -> embed -> head -> postprocess -> publish, timing each stage (with
``frames_in_flight`` > 1, for a remote encoder, the loop starts a frame's encoder call and
takes the next frame while a thread of its own scores the frames in order:
:mod:`streamer.in_flight`). A frame that fails
in any stage is reported (status ``last_error``, a log line) and skipped: the stream never
dies on one bad frame. A status message goes out every second, also while the source is
reconnecting, so late subscribers learn the state; a change of source state goes out at once.
A change of frame size restarts the sector calibration and the window; a status message
says so at once in ``last_error`` (the wire format's one text field).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import NamedTuple

import torch

from luvnet.engine.data.timing import Decimator, Timing
from luvnet.engine.model.config import ModelConfig
from luvnet.streamer.grabber import FrameGrabber, GrabbedFrame
from luvnet.streamer.in_flight import InOrder
from luvnet.streamer.protocol import STATUS_INTERVAL_S, ScoreMessage, StatusMessage
from luvnet.streamer.schema import printable
from luvnet.streamer.stages import (
    Claim,
    EmbedStage,
    HeadStage,
    PostprocessStage,
    PreprocessStage,
)

log = logging.getLogger(__name__)

# A sink sees every frame with its published message, in process (frames never leave it).
Sink = Callable[[GrabbedFrame, ScoreMessage], None]
Publish = Callable[[ScoreMessage | StatusMessage], object]


@dataclass
class StreamIdentity:
    """What every message says about the engine that produced it."""

    model_id: str
    backend: str
    device: str
    stream_id: str = "default"
    detail: str = ""  # the backend's own summary (parity figures, why auto chose it)


@dataclass
class StreamCounters:
    published: int = 0
    decimated: int = 0  # frames left out to match the model's rate (never scored)
    failed_frames: int = 0
    last_error: str | None = None
    started_ns: int = field(default_factory=time.monotonic_ns)


class StreamPipeline:
    """Source -> preprocess -> embed -> head -> postprocess -> publish, one frame per step."""

    def __init__(
        self,
        *,
        grabber: FrameGrabber,
        preprocess: PreprocessStage,
        embed: EmbedStage,
        head: HeadStage,
        postprocess: PostprocessStage,
        publish: Publish,
        config: ModelConfig,
        identity: StreamIdentity,
        sinks: list[Sink] | None = None,
        max_frames: int | None = None,
        timing: Timing | None = None,
        frames_in_flight: int = 1,
    ) -> None:
        self.grabber = grabber
        self.preprocess = preprocess
        self.embed = embed
        self.head = head
        self.postprocess = postprocess
        self.publish = publish
        self.config = config
        self.identity = identity
        self.sinks = sinks or []
        self.max_frames = max_frames
        self.counters = StreamCounters()
        # Decimation to the model's rate (engine/data/timing.py), decided on the first frame,
        # when the source's rate is known.
        self.timing = timing or Timing()
        self.decimator: Decimator | None = None
        self._generation = 0
        self._window_key: tuple[int, int] | None = None
        self._resize_note: str | None = None  # a size change whose sector is not found yet
        self._resize_at = 0
        self._status_now = False  # something to say: publish a status before the next frame
        self._loop_over = False  # run() has left its loop: the next status is the final one
        self._rate_mark = (time.monotonic_ns(), 0, 0)  # (time, captured, published)
        # More than 1: frames overlap at the encoder (luvnet serve, whose encoder is remote):
        # this thread preprocesses and submits, an InOrder thread claims the embeddings in
        # order and runs head, postprocess and publish. 1: every frame whole, in turn.
        self.frames_in_flight = frames_in_flight
        self._in_flight: InOrder[_InFlight] | None = None

    # -- one frame
    def step(self, frame: GrabbedFrame) -> list[ScoreMessage]:
        """The messages this frame makes ready: none while the sector calibration holds
        frames or when the frame is decimated, else this frame's, or every held frame's in
        order once the sector locks (the held frames are scored, never lost)."""
        return [
            self._score(tag, version, partial(self.embed.encoded, tensor))
            for tag, tensor, version in self._ready(frame)
        ]

    def _ready(self, frame: GrabbedFrame) -> list[tuple[_Released, torch.Tensor, int]]:
        if self.decimator is None or frame.generation != self._generation:
            # The first frame, or a reconnect (a new clock, perhaps a new rate).
            self._generation = frame.generation
            self.decimator = Decimator.for_source(self.timing, frame.fps)
            if frame.generation == 0:
                log.info("timing: %s", self.timing.describe(frame.fps))
        pts = frame.pts_s if frame.pts_s is not None else frame.capture_ns / 1e9
        if not self.decimator.keep(pts):
            self.counters.decimated += 1
            return []
        released, t0 = time.monotonic_ns(), time.perf_counter_ns()
        ready = self.preprocess.push(frame.image, frame, frame.region)
        self._note_size_change(frame.index, self.preprocess.size_changed)
        return _released(ready, released, t0)

    def _score(self, tag: _Released, box_version: int, claim: Claim) -> ScoreMessage:
        """The frame's message; ``claim`` runs its encoder call, or waits for the one started
        when it went in flight, and returns its :class:`Encoded`."""
        frame = tag.frame
        sync = self.preprocess.device.type == "cuda"
        # queue: from capture to release (a held frame waited for the sector to lock).
        latency: dict[str, float] = {"queue": (tag.released_ns - frame.capture_ns) / 1e6}
        # A reconnect or a new sector crop starts a new window: never mix the two.
        key = (frame.generation, box_version)
        if key != self._window_key:
            self.head.reset()
            self._window_key = key
        t1 = _mark(sync)
        encoded = claim()
        t2 = _mark(sync)
        logits, attention, fill = self.head(encoded.embedding, encoded.taps)
        t3 = _mark(sync)
        scores = self.postprocess(logits, attention, fill)
        t4 = time.perf_counter_ns()
        latency.update(
            preprocess=tag.preprocess_ns / 1e6,  # its share of the push that released it
            embed=(t2 - t1) / 1e6,
            head=(t3 - t2) / 1e6,
            postprocess=(t4 - t3) / 1e6,
        )
        names = self.config.pattern_names
        return ScoreMessage(
            frame=frame.index,
            capture_ns=frame.capture_ns,
            fill=scores.fill,
            window=self.config.clip_length,
            patterns=names,
            scores={n: float(p) for n, p in zip(names, scores.probabilities, strict=True)},
            thresholds=dict(zip(names, self.config.thresholds, strict=True)),
            attention=scores.attention,
            latency_ms=latency,
            model_id=self.identity.model_id,
            backend=self.identity.backend,
            device=self.identity.device,
            stream_id=self.identity.stream_id,
        )

    def _note_size_change(
        self, index: int, change: tuple[tuple[int, int], tuple[int, int]] | None
    ) -> None:
        """Say why the window restarted when the frame size changed: in the status's
        ``last_error`` (published at once) and the log, at the change and when the sector
        is found again."""
        pre = self.preprocess.preprocessor
        if change is not None:
            (h0, w0), (h1, w1) = change
            self._resize_note = f"frame size changed from {w0}x{h0} to {w1}x{h1} at frame {index}"
            self._resize_at = index  # the held frames from here on start the new window
        if self._resize_note is None or (pre.calibrating and change is None):
            return
        if pre.calibrating:
            text = f"{self._resize_note}: window restarted, finding the imaging sector again"
        else:
            if pre.box is None:
                found = "no sector calibration, the full frame is used"
            else:
                x, y, w, h = pre.box
                why = f" ({pre.detection.reason})" if pre.detection is not None else ""
                found = f"sector found again at x={x} y={y} {w}x{h}{why}"
            text = f"{self._resize_note}: {found}, window restarted at frame {self._resize_at}"
            self._resize_note = None
        (log.warning if change is not None else log.info)("%s", text)
        self.counters.last_error = text
        self._status_now = True

    # -- status
    def status(self) -> StatusMessage:
        now = time.monotonic_ns()
        then, captured, published = self._rate_mark
        seconds = max((now - then) / 1e9, 1e-9)
        self._rate_mark = (now, self.grabber.captured, self.counters.published)
        return StatusMessage(
            source=printable(self.grabber.source.name),  # a user's file name, escaped
            state=self._state(),
            input_fps=(self.grabber.captured - captured) / seconds,
            output_fps=(self.counters.published - published) / seconds,
            frames_captured=self.grabber.captured,
            frames_dropped=self.grabber.dropped,
            frames_published=self.counters.published,
            backend=self.identity.backend,
            device=self.identity.device,
            model_id=self.identity.model_id,
            uptime_s=(now - self.counters.started_ns) / 1e9,
            last_error=self.counters.last_error or self.grabber.last_error,
            stream_id=self.identity.stream_id,
        )

    def _state(self) -> str:
        """The source's state, but final (ended, error) only once its last frame has been
        taken: a subscriber that stops at the final status must not miss the last scores."""
        state = self.grabber.state
        # Once the loop is over, a frame left in the slot (a stop, --max-frames) is never
        # taken: the final status is final anyway.
        held = self.preprocess.preprocessor.held > 0  # scored by the flush at the end
        waiting = (held or not self.grabber.finished) and not self._loop_over
        return "running" if state in ("ended", "error") and waiting else state

    # -- the loop
    def run(self, stop: threading.Event) -> int:
        """Process until the source ends or ``stop`` is set; returns the number published."""
        self.grabber.start()
        if self.frames_in_flight > 1:
            name = f"in-flight-{self.identity.stream_id}"
            self._in_flight = InOrder(self._finish, self.frames_in_flight, name)
        next_status = time.monotonic()
        last_state = None
        try:
            while not stop.is_set():
                # Every second, and at once when the source changes state (reconnected,
                # lost): a subscriber should not learn of a reconnect a second late.
                if (
                    time.monotonic() >= next_status
                    or self._state() != last_state
                    or self._status_now
                ):
                    last_state, self._status_now = self._state(), False
                    self.publish(self.status())
                    next_status = time.monotonic() + STATUS_INTERVAL_S
                frame = self.grabber.get(timeout_s=0.05)
                if frame is None:
                    if self.grabber.finished:
                        self.flush()  # a source shorter than the calibration: lock on it
                        break
                    continue
                self._process(frame)
                if self._max_reached():
                    break
        finally:
            self.grabber.stop()
            if self._in_flight is not None:  # every frame in flight scored before the last status
                self._in_flight.close()
                self._in_flight = None
            self._loop_over = True
            self.publish(self.status())  # the final state: ended, error or stopped
        return self.counters.published

    def _process(self, frame: GrabbedFrame) -> None:
        try:
            ready = self._ready(frame)
        except Exception as err:  # noqa: BLE001 - one bad frame must not end the stream
            self._failed(frame, err)
            return
        self._publish_ready(ready)

    def flush(self) -> None:
        """Score the frames still held for calibration, locked on what there is: a source
        shorter than the calibration (or stopped during it) still gets its scores."""
        try:
            released, t0 = time.monotonic_ns(), time.perf_counter_ns()
            ready = _released(self.preprocess.flush(), released, t0)
        except Exception as err:  # noqa: BLE001 - reported like a bad frame
            self.counters.last_error = f"flush: {type(err).__name__}: {err}"[:400]
            log.warning("%s", self.counters.last_error)
            return
        self._note_size_change(-1, None)  # the new size's sector, found from what there was
        self._publish_ready(ready)
        if self._status_now:
            self.publish(self.status())
            self._status_now = False

    def _publish_ready(self, ready: list[tuple[_Released, torch.Tensor, int]]) -> None:
        for tag, tensor, version in ready:
            if self._max_reached():
                return
            if self._in_flight is not None:
                try:
                    self._in_flight.start(partial(self._begin, tag, tensor, version))
                except Exception as err:  # noqa: BLE001 - one bad frame must not end the stream
                    self._failed(tag.frame, err)
                continue
            try:
                message = self._score(tag, version, partial(self.embed.encoded, tensor))
            except Exception as err:  # noqa: BLE001 - one bad frame must not end the stream
                self._failed(tag.frame, err)
                continue
            self._deliver(tag.frame, message)

    def _max_reached(self) -> bool:
        """``max_frames`` published, or in flight to be."""
        if self.max_frames is None:
            return False
        flight = self._in_flight
        taken = flight.started - flight.lost if flight else self.counters.published
        return taken >= self.max_frames

    def _begin(self, tag: _Released, tensor: torch.Tensor, version: int) -> _InFlight:
        """A frame's encoder call started (its embedding claimed later, by :meth:`_finish`)."""
        return _InFlight(tag, version, self.embed.submit(tensor))

    def _finish(self, item: _InFlight) -> bool:
        """A frame in flight, once its embedding is claimed: scored exactly as a frame scored
        whole (on the :class:`InOrder` thread, in submission order)."""
        try:
            message = self._score(item.tag, item.version, item.claim)
        except Exception as err:  # noqa: BLE001 - one bad frame must not end the stream
            self._failed(item.tag.frame, err)
            return False
        self._deliver(item.tag.frame, message)
        return True

    def _failed(self, frame: GrabbedFrame, err: Exception) -> None:
        self.counters.failed_frames += 1
        self.counters.last_error = f"frame {frame.index}: {type(err).__name__}: {err}"[:400]
        log.warning("skipped %s", self.counters.last_error)

    def _deliver(self, frame: GrabbedFrame, message: ScoreMessage) -> None:
        self.publish(message)
        self.counters.published += 1
        for sink in self.sinks:
            try:
                sink(frame, message)
            except Exception as err:  # noqa: BLE001 - a failing sink reports, never stops
                self.counters.last_error = f"sink: {type(err).__name__}: {err}"[:400]
                log.warning("%s", self.counters.last_error)


class _Released(NamedTuple):
    """A frame the preprocessing handed on: when (monotonic ns), and its share of the
    preprocessing time of the call that released it (perf-counter ns)."""

    frame: GrabbedFrame
    released_ns: int
    preprocess_ns: float


class _InFlight(NamedTuple):
    """A submitted frame waiting for its embedding, in the scorer's queue."""

    tag: _Released
    version: int
    claim: Claim


def _released(
    ready: list[tuple[GrabbedFrame, torch.Tensor, int]], released_ns: int, t0: int
) -> list[tuple[_Released, torch.Tensor, int]]:
    share = (time.perf_counter_ns() - t0) / max(len(ready), 1)
    return [(_Released(f, released_ns, share), x, v) for f, x, v in ready]


def _mark(sync: bool) -> int:
    if sync:
        torch.cuda.synchronize()
    return time.perf_counter_ns()
