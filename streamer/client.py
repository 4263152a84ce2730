"""Subscribe to a luvnet score stream: validated messages, malformed ones skipped, gaps reported.

::

    from luvnet.streamer.client import ScoreSubscriber

    with ScoreSubscriber("tcp://127.0.0.1:5555") as sub:
        for msg in sub:                      # ScoreMessage or StatusMessage, forever
            if msg.kind == "scores":
                print(msg.seq, msg.scores, msg.flags)

``recv(timeout_ms)`` returns one message or None when none arrived in time. A message that
fails validation (wrong version, malformed, oversized) is skipped and counted in
``malformed_count`` with ``last_malformed`` as its reason; the subscriber never raises on
network input. Seq numbers are tracked per (stream, kind, publisher session): a jump is a
:class:`Gap`, counted in ``gap_count``/``missed_count``, kept in ``gaps`` (the last 100) and
passed to ``on_gap``. A new session (publisher restart) resets tracking without a gap.
Messages before the first one this subscriber sees are not gaps: PUB/SUB has no history.

Backpressure: at most ``rcvhwm`` messages wait here; past that ZeroMQ drops new ones, which
shows up as gaps.

A frame over ``MAX_MESSAGE_BYTES`` makes ZeroMQ drop the connection as a protocol error, and
libzmq never reconnects after one; the subscriber notices (socket monitor) and reconnects
itself, counted in ``reconnect_count``; what was missed meanwhile shows up as a gap.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Self, cast

import zmq
from zmq.utils.monitor import recv_monitor_message

from luvnet.engine.errors import LuvnetError
from luvnet.streamer.protocol import (
    DEFAULT_ENDPOINT,
    DEFAULT_TOPIC_PREFIX,
    MAX_MESSAGE_BYTES,
    Message,
    ProtocolError,
    check_topic_prefix,
    decode,
)
from luvnet.streamer.publisher import is_ipv6_endpoint
from luvnet.streamer.security import CurveClientKeys, apply_client_curve

log = logging.getLogger(__name__)

DEFAULT_RCVHWM = 1000
_POLL_SLICE_MS = 100  # blocking waits wake this often so Ctrl-C is handled promptly
_MAX_TRACKED = 256  # streams x kinds remembered for gap detection
# libzmq announces its own reconnect right after a disconnect; silence this long means it gave up.
_ABANDONED_AFTER_S = 0.5


@dataclass(frozen=True)
class Gap:
    """Messages ``expected`` .. ``got - 1`` of one stream and kind never arrived."""

    stream_id: str
    kind: str
    expected: int
    got: int

    @property
    def missed(self) -> int:
        return self.got - self.expected


class ScoreSubscriber:
    """One SUB socket on its own context, connected to ``endpoint``; use it from one thread
    (ZeroMQ sockets are not thread-safe)."""

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        *,
        topic_prefix: str = DEFAULT_TOPIC_PREFIX,
        curve: CurveClientKeys | None = None,
        rcvhwm: int = DEFAULT_RCVHWM,
        on_gap: Callable[[Gap], None] | None = None,
    ) -> None:
        check_topic_prefix(topic_prefix)
        self.endpoint = endpoint
        self.on_gap = on_gap
        self.received_count = 0
        self.malformed_count = 0
        self.last_malformed: str | None = None
        self.gap_count = 0
        self.missed_count = 0
        self.restart_count = 0
        self.reconnect_count = 0  # connections ZeroMQ dropped for good and we re-established
        self._dropped_at: float | None = None
        self._monitor: zmq.Socket | None = None
        self.gaps: collections.deque[Gap] = collections.deque(maxlen=100)
        # (stream_id, kind) -> (session, last seq)
        self._last: collections.OrderedDict[tuple[str, str], tuple[int, int]] = (
            collections.OrderedDict()
        )
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.SUB)
        try:
            self._socket.linger = 0
            self._socket.rcvhwm = rcvhwm
            # A peer sending a bigger frame is disconnected before we buffer it.
            self._socket.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
            self._socket.ipv6 = is_ipv6_endpoint(endpoint)  # off, [::1] is never reached
            if curve is not None:
                apply_client_curve(self._socket, curve)
            # The trailing dot keeps "luvnet.cam1" from also matching "luvnet.cam10.*"; every
            # stream under the prefix matches (topics: protocol.stream_prefix).
            self._socket.setsockopt_string(zmq.SUBSCRIBE, f"{topic_prefix}.")
            self._monitor = self._socket.get_monitor_socket(
                zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED | zmq.EVENT_CONNECTED
            )
            try:
                self._socket.connect(endpoint)
            except zmq.ZMQError as err:
                # libzmq errors always carry an errno; the stub allows None for custom ones.
                errno = cast(int, err.errno)
                raise LuvnetError(
                    f"endpoint {endpoint!r}: {zmq.strerror(errno)}; expected an address "
                    f"such as {DEFAULT_ENDPOINT}"
                ) from None
        except BaseException:
            self.close()
            raise

    def recv(self, timeout_ms: int | None = None) -> Message | None:
        """The next valid message, or None if none arrived within ``timeout_ms`` (None: wait)."""
        deadline = None if timeout_ms is None else time.monotonic() + timeout_ms / 1000
        while True:
            if deadline is None:
                wait = _POLL_SLICE_MS
            else:
                wait = max(0, min(_POLL_SLICE_MS, round((deadline - time.monotonic()) * 1000)))
            self._keep_connected()
            if self._socket.poll(wait, zmq.POLLIN):
                msg = self._decode(self._socket.recv_multipart(zmq.NOBLOCK))
                if msg is not None:
                    return msg
            elif deadline is not None and time.monotonic() >= deadline:
                return None

    def _keep_connected(self) -> None:
        assert self._monitor is not None
        while self._monitor.poll(0):
            event = recv_monitor_message(self._monitor)["event"]
            self._dropped_at = time.monotonic() if event == zmq.EVENT_DISCONNECTED else None
        if (
            self._dropped_at is not None
            and time.monotonic() - self._dropped_at > _ABANDONED_AFTER_S
        ):
            self._dropped_at = None
            self.reconnect_count += 1
            log.warning(
                "%s: connection dropped (oversized or malformed data); reconnecting", self.endpoint
            )
            self._socket.disconnect(self.endpoint)
            self._socket.connect(self.endpoint)

    def _decode(self, frames: list[bytes]) -> Message | None:
        try:
            msg = decode(frames)
        except ProtocolError as err:
            self.malformed_count += 1
            self.last_malformed = str(err)
            log.debug("skipped a malformed message: %s", err)
            return None
        self.received_count += 1
        self._track(msg)
        return msg

    def _track(self, msg: Message) -> None:
        key = (msg.stream_id, msg.kind)
        previous = self._last.pop(key, None)
        if previous is not None:
            session, seq = previous
            if session != msg.session or msg.seq <= seq:
                self.restart_count += 1
            elif msg.seq != seq + 1:
                self._report(Gap(msg.stream_id, msg.kind, seq + 1, msg.seq))
        self._last[key] = (msg.session, msg.seq)
        if len(self._last) > _MAX_TRACKED:
            self._last.popitem(last=False)  # forget the stream heard from least recently

    def _report(self, gap: Gap) -> None:
        self.gap_count += 1
        self.missed_count += gap.missed
        self.gaps.append(gap)
        # Debug only: on_gap and the counters report gaps; each consumer shows them its own way.
        log.debug(
            "gap in %s %s: seq %d..%d missed", gap.stream_id, gap.kind, gap.expected, gap.got - 1
        )
        if self.on_gap is not None:
            self.on_gap(gap)

    def __iter__(self) -> Iterator[Message]:
        while True:
            msg = self.recv(None)
            if msg is not None:
                yield msg

    def close(self) -> None:
        """Close the socket and terminate the context at once (linger 0); safe to call twice."""
        if self._monitor is not None and not self._monitor.closed:
            self._socket.disable_monitor()
            self._monitor.close(linger=0)
        if not self._socket.closed:
            self._socket.close(linger=0)
        if not self._context.closed:
            self._context.term()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
