"""Publish score and status messages on one ZeroMQ PUB socket, never blocking the caller.

Use from the pipeline::

    from luvnet.streamer.publisher import ScorePublisher
    from luvnet.streamer.protocol import ScoreMessage, StatusMessage

    with ScorePublisher("tcp://127.0.0.1:5555") as pub:      # or open_publisher(bind=...)
        pub.publish(ScoreMessage(frame=..., capture_ns=..., ...))  # per processed frame
        pub.publish(StatusMessage(..., frames_published=pub.sent_scores))  # once a second

``publish`` stamps ``seq`` (per stream and kind, contiguous from 0), ``session`` (random per
publisher) and ``publish_ns`` (time.monotonic_ns() just before sending), then sends without
waiting.
It is safe to call from several threads (one lock around the socket, held for microseconds).

Backpressure (a deliberate choice, style item 8): PUB keeps at most ``sndhwm`` messages per
subscriber and silently drops newer ones for a subscriber that is slow or gone; it never
blocks. A send the socket refuses locally (``zmq.Again``) is counted in ``dropped`` and its
seq is consumed, so subscribers see every loss as a seq gap. Messages sent before a subscriber
has connected are lost too; the once-a-second status message lets late joiners catch up, and a
run that must not lose its first messages (a test, recording a file from frame 0) can call
``wait_for_subscriber(timeout_s)`` first: the socket is an XPUB, which sees subscriptions.

The bind address must be loopback (``tcp://127.0.0.1:PORT``, ``tcp://[::1]:PORT``,
``tcp://localhost:PORT``), ``ipc://`` or ``inproc://`` unless ``allow_remote=True``: the stream
carries patient-derived data and is unencrypted without ``curve_keys`` (streamer.security).
An IPv6 address turns on the socket's IPv6 option (ZeroMQ sockets are IPv4-only without it).

Topics follow the one rule of docs/protocol.md (``protocol.stream_prefix``): a message of
stream S goes out on ``<topic_prefix>.S.<kind>``, or ``<topic_prefix>.<kind>`` when the prefix
already names S (``luvnet`` for the stream "default", ``luvnet.ward3`` for "ward3").
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Self, cast

import zmq
from zmq.auth.thread import ThreadAuthenticator

from luvnet.engine.errors import LuvnetError
from luvnet.streamer.protocol import (
    DEFAULT_ENDPOINT,
    DEFAULT_TOPIC_PREFIX,
    KINDS,
    MAX_SESSION,
    SCORES,
    Message,
    ScoreMessage,
    StatusMessage,
    check_topic_prefix,
    stream_prefix,
)
from luvnet.streamer.security import apply_server_curve, load_server_keys, start_authenticator

log = logging.getLogger(__name__)

DEFAULT_SNDHWM = 100  # about 3 s of scores at 30 fps per subscriber, then drop
MAX_INBOUND_BYTES = 4096  # the largest message a subscriber may send us (see __init__)


def is_local_endpoint(endpoint: str) -> bool:
    """Whether only this host can reach ``endpoint`` (loopback TCP, ipc://, inproc://)."""
    transport, sep, address = endpoint.partition("://")
    if not sep or not address:
        raise LuvnetError(
            f"bind: expected TRANSPORT://ADDRESS such as {DEFAULT_ENDPOINT}, got {endpoint!r}"
        )
    if transport in ("ipc", "inproc"):
        return True
    if transport != "tcp":
        return False
    host, _, port = address.rpartition(":")
    if port != "*" and not (port.isdigit() and 0 < int(port) < 65536):
        raise LuvnetError(f"bind: expected a port 1..65535 or '*' in {endpoint!r}")
    host = host.strip("[]")
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # '*', an interface name, a host name: all may be public
        return False


def is_ipv6_endpoint(endpoint: str) -> bool:
    """Whether ``endpoint`` is TCP to an IPv6 address (``tcp://[::1]:5555``), which needs the
    socket's IPv6 option on both ends; host names keep ZeroMQ's IPv4 default."""
    transport, _, address = endpoint.partition("://")
    host = address.rpartition(":")[0].removeprefix("[").removesuffix("]")
    if transport != "tcp" or ":" not in host:
        return False
    try:
        ipaddress.IPv6Address(host.partition("%")[0])  # a scope such as fe80::1%eth0 is fine
    except ValueError:
        return False
    return True


def check_bind_endpoint(endpoint: str, allow_remote: bool = False) -> bool:
    """Refuse an address other hosts can reach unless ``allow_remote``; return whether local."""
    local = is_local_endpoint(endpoint)
    if not local and not allow_remote:
        raise LuvnetError(
            f"bind: {endpoint} can be reached from other hosts; expected a loopback address such "
            f"as {DEFAULT_ENDPOINT}, or allow it with --allow-remote (and use --curve-keys)"
        )
    return local


class ScorePublisher:
    """One PUB (XPUB) socket on its own ZeroMQ context; see the module docstring."""

    def __init__(
        self,
        bind: str = DEFAULT_ENDPOINT,
        *,
        topic_prefix: str = DEFAULT_TOPIC_PREFIX,
        stream_id: str | None = None,
        allow_remote: bool = False,
        curve_keys: str | os.PathLike[str] | None = None,
        sndhwm: int = DEFAULT_SNDHWM,
    ) -> None:
        """``stream_id``: the stream this publisher carries, so that ``wait_for_subscriber``
        knows its exact topics; None (a publisher of several streams) counts any subscription
        under ``topic_prefix``."""
        # Check everything that can be wrong before any resource exists.
        local = check_bind_endpoint(bind, allow_remote)
        self.topic_prefix = check_topic_prefix(topic_prefix)
        self.stream_id = stream_id
        # The topics of this stream must fit the topic limit (a long prefix plus a long id).
        self._stream_prefix = stream_prefix(topic_prefix, stream_id) if stream_id else None
        if sndhwm < 1:
            raise LuvnetError(f"sndhwm: expected a positive message count, got {sndhwm}")
        keys = load_server_keys(curve_keys) if curve_keys is not None else None
        if not local and keys is None:
            log.warning("publishing unencrypted on %s: anyone on that network can read it", bind)

        self.session = secrets.randbelow(MAX_SESSION + 1)
        self.sent_scores = 0  # score messages handed to ZeroMQ
        self.sent_status = 0
        self.dropped = 0  # refused locally with zmq.Again
        # Per (stream, kind): a publisher of several streams (``luvnet serve``) gives each
        # stream's subscriber contiguous numbers, as a publisher of one stream does.
        self._seq: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._context = zmq.Context()
        self._auth: ThreadAuthenticator | None = None
        # XPUB sends exactly like PUB and also reports subscriptions (wait_for_subscriber).
        self._socket = self._context.socket(zmq.XPUB)
        try:
            self._socket.linger = 0  # close() must not wait for unsent messages
            self._socket.sndhwm = sndhwm
            self._socket.xpub_verbose = 1  # report every subscriber, not only new topics
            # Subscribers send only subscriptions (1 byte + a topic prefix) and handshake
            # commands (CURVE INITIATE: some 300 bytes). libzmq keeps one trie node per byte
            # of a subscription (about 50 bytes per byte): three 200 MiB subscriptions from any
            # local process took the stream to 23 GiB; a peer sending more is disconnected.
            self._socket.setsockopt(zmq.MAXMSGSIZE, MAX_INBOUND_BYTES)
            self._socket.ipv6 = is_ipv6_endpoint(bind)  # off: binding [::1] says "No such device"
            if keys is not None:
                self._auth = start_authenticator(self._context, keys)
                apply_server_curve(self._socket, keys)
            try:
                self._socket.bind(bind)
            except zmq.ZMQError as err:
                # libzmq errors always carry an errno; the stub allows None for custom ones.
                errno = cast(int, err.errno)
                raise LuvnetError(f"bind {bind}: {zmq.strerror(errno)}") from None
            self.endpoint: str = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        except BaseException:
            self.close()
            raise

    @property
    def closed(self) -> bool:
        return self._closed

    def publish(self, msg: Message) -> bool:
        """Stamp and send ``msg``; True if ZeroMQ took it, False if it was dropped here."""
        if not isinstance(msg, ScoreMessage | StatusMessage):
            raise TypeError(f"publish: expected ScoreMessage or StatusMessage, got {type(msg)}")
        with self._lock:
            if self.closed:
                raise LuvnetError("publish: the publisher is closed")
            key = (msg.stream_id, msg.kind)
            seq = self._seq.get(key, 0)
            self._seq[key] = seq + 1
            stamped = dataclasses.replace(
                msg, seq=seq, session=self.session, publish_ns=time.monotonic_ns()
            )
            try:
                self._socket.send_multipart(stamped.encode(self.topic_prefix), zmq.NOBLOCK)
            except zmq.Again:
                self.dropped += 1
                return False
            if msg.kind == SCORES:
                self.sent_scores += 1
            else:
                self.sent_status += 1
            return True

    def wait_for_subscriber(self, timeout_s: float) -> bool:
        """Wait until a subscriber (an authorised one, with CURVE) has subscribed to one of our
        topics, at most ``timeout_s``; True if one has. Messages published afterwards reach it."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:  # short slices, so publish() from other threads keeps going
                if self.closed:
                    raise LuvnetError("wait_for_subscriber: the publisher is closed")
                while self._socket.poll(0, zmq.POLLIN):
                    event = self._socket.recv(zmq.NOBLOCK)
                    # b"\x01" + topic prefix subscribes, b"\x00" + prefix unsubscribes.
                    if event[:1] == b"\x01" and self._matches(event[1:]):
                        return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(0.01, remaining))

    def _matches(self, subscription: bytes) -> bool:
        if self._stream_prefix is None:  # any stream under our prefix: match "<prefix>." on
            ours = f"{self.topic_prefix}.".encode()
            return ours.startswith(subscription) or subscription.startswith(ours)
        topics = [f"{self._stream_prefix}.{kind}".encode() for kind in KINDS]
        return any(topic.startswith(subscription) for topic in topics)

    def close(self) -> None:
        """Close the socket and context at once (linger 0); safe to call twice."""
        with self._lock:
            self._closed = True
            if self._auth is not None:
                self._auth.stop()
                self._auth = None
            if not self._socket.closed:
                self._socket.close(linger=0)
            if not self._context.closed:
                self._context.term()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@dataclass(frozen=True)
class PublisherOptions:
    """Where and how a producer publishes (``luvnet stream``'s publishing options)."""

    bind: str = DEFAULT_ENDPOINT
    topic_prefix: str = DEFAULT_TOPIC_PREFIX  # topics: see protocol.stream_prefix
    allow_remote: bool = False
    curve_keys: Path | None = None  # a key directory (streamer.security); None: unencrypted


def open_publisher(
    *,
    bind: str = DEFAULT_ENDPOINT,
    topic_prefix: str = DEFAULT_TOPIC_PREFIX,
    stream_id: str | None = None,
    allow_remote: bool = False,
    curve_keys: str | os.PathLike[str] | None = None,
    sndhwm: int = DEFAULT_SNDHWM,
) -> ScorePublisher:
    """A bound :class:`ScorePublisher`; raises LuvnetError for a bad address or key directory."""
    return ScorePublisher(
        bind,
        topic_prefix=topic_prefix,
        stream_id=stream_id,
        allow_remote=allow_remote,
        curve_keys=curve_keys,
        sndhwm=sndhwm,
    )
