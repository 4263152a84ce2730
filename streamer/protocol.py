"""Wire format of what the streamer publishes: schema version 1 (full reference: docs/protocol.md).

A message is two ZeroMQ frames, in the style of pyzmq ``examples/serialization``::

    [topic, body]
    topic = b"<prefix>.scores" or b"<prefix>.status"   (prefix: streamer.topics, the one rule)
    body  = one msgpack map; the attention array travels inside it as raw bytes (bin) with an
            explicit dtype ("<f2") and shape [P, L]

Producers build a :class:`ScoreMessage` or :class:`StatusMessage` (construction validates every
field and raises :class:`ProtocolError`), hand it to ``streamer.publisher.ScorePublisher``, which
stamps ``seq``, ``session`` and ``publish_ns`` and calls :meth:`encode`. Consumers call
:func:`decode`, which accepts only well-formed version-1 messages: bounded msgpack limits, a
dtype/shape whitelist for the one array, no pickle and no msgpack-numpy (both execute or build
arbitrary objects from network bytes). Anything else raises :class:`ProtocolError` with a
one-line reason naming the field. The limits and the field checks live in
:mod:`luvnet.streamer.schema`; the names others use are re-exported here.

Sequence numbers count per publisher *and per kind*, contiguous from 0: a subscriber that
filters one kind still sees contiguous numbers, so any jump is a lost message. ``session`` is a
random number per publisher instance; a new session means the publisher restarted (seq starts
again at 0), not a gap. Timestamps are ``time.monotonic_ns()`` (CLOCK_MONOTONIC) of the
publishing host: differences between them are meaningful, comparisons with another host's clock
are not.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import msgpack
import numpy as np

from luvnet.streamer.schema import (
    ATTENTION_DTYPE,
    MAX_ERROR_CHARS,
    MAX_MESSAGE_BYTES,
    MAX_SESSION,
    MAX_TEXT_CHARS,
    MAX_WINDOW,
    ProtocolError,
    attention_from_wire,
    check_attention,
    check_float,
    check_int,
    check_patterns,
    check_per_pattern,
    check_stages,
    check_stream_id,
    check_text,
    check_topic_prefix,
    describe,
)
from luvnet.streamer.topics import (
    DEFAULT_STREAM_ID,
    DEFAULT_TOPIC_PREFIX,
    stream_id_of,
    stream_prefix,
)

__all__ = [
    "ATTENTION_DTYPE",
    "DEFAULT_ENDPOINT",
    "DEFAULT_STREAM_ID",
    "DEFAULT_TOPIC_PREFIX",
    "KINDS",
    "MAX_ERROR_CHARS",
    "MAX_MESSAGE_BYTES",
    "MAX_SESSION",
    "MAX_TEXT_CHARS",
    "MAX_WINDOW",
    "SCHEMA_VERSION",
    "SCORES",
    "SOURCE_STATES",
    "STATUS",
    "STATUS_INTERVAL_S",
    "Message",
    "ProtocolError",
    "ScoreMessage",
    "StatusMessage",
    "UnsupportedVersion",
    "check_topic_prefix",
    "decode",
    "stream_id_of",
    "stream_prefix",
]

SCHEMA_VERSION = 1
DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"  # loopback: see streamer.publisher on remote binds
SCORES = "scores"
STATUS = "status"
KINDS: tuple[str, ...] = (SCORES, STATUS)
SOURCE_STATES: tuple[str, ...] = ("starting", "running", "reconnecting", "ended", "error")
STATUS_INTERVAL_S = 1.0  # producers send one status message per second

# Bounds for msgpack itself, so a hostile body cannot make the decoder allocate much.
_UNPACK_LIMITS: dict[str, int] = {
    "max_bin_len": MAX_MESSAGE_BYTES,
    "max_str_len": 4 * 1024,
    "max_array_len": 64,
    "max_map_len": 64,
    "max_ext_len": 0,
}


class UnsupportedVersion(ProtocolError):
    """A well-formed map whose schema version this decoder does not read."""


# --------------------------------------------------------------------------- messages


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)  # frozen dataclass: normalise in __post_init__


def _check_envelope(msg: ScoreMessage | StatusMessage) -> None:
    _set(msg, "stream_id", check_stream_id(msg.stream_id))
    _set(msg, "seq", check_int("seq", msg.seq))
    _set(msg, "session", check_int("session", msg.session, 0, MAX_SESSION))
    _set(msg, "publish_ns", check_int("publish_ns", msg.publish_ns))


def _pack(kind: str, topic_prefix: str, stream_id: str, body: dict[str, Any]) -> list[bytes]:
    topic = f"{stream_prefix(topic_prefix, stream_id)}.{kind}".encode("ascii")
    payload = msgpack.packb(body, use_bin_type=True)
    if len(topic) + len(payload) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message: {len(payload)} bytes exceeds {MAX_MESSAGE_BYTES}")
    return [topic, payload]


@dataclass(frozen=True, eq=False)
class ScoreMessage:
    """The scores of one frame: probabilities, flags, attention over the window, latencies.

    The producer fills everything except ``seq``, ``session`` and ``publish_ns``, which
    ``ScorePublisher.publish`` stamps. ``attention`` is alpha_t^p = sum over heads of the
    attention weights (docs/model.md, "Attention curves"), shape [P, L] (any float array; stored as
    float16, read-only), column 0 the oldest frame of the window and column ``fill - 1`` this frame;
    columns from ``fill`` on are padding (0 when the model masks padding). Flags are derived:
    ``scores[p] >= thresholds[p]``.
    """

    frame: int  # source frame number
    capture_ns: int  # time.monotonic_ns() when the grabber got the frame
    fill: int  # frames in the window, 1..window
    window: int  # L
    patterns: tuple[str, ...]  # order of the attention rows
    scores: Mapping[str, float]  # pattern -> probability in [0, 1]
    thresholds: Mapping[str, float]  # pattern -> checkpoint threshold in [0, 1]
    attention: np.ndarray  # [P, L] float16
    latency_ms: Mapping[str, float]  # stage -> milliseconds, in pipeline order
    model_id: str  # checkpoint hash
    backend: str  # e.g. "torch", "tensorrt", "onnxruntime"
    device: str  # e.g. "cuda:0", "cpu"
    stream_id: str = DEFAULT_STREAM_ID
    seq: int = 0
    session: int = 0
    publish_ns: int = 0

    kind: ClassVar[str] = SCORES

    def __post_init__(self) -> None:
        _check_envelope(self)
        _set(self, "frame", check_int("frame", self.frame))
        _set(self, "capture_ns", check_int("capture_ns", self.capture_ns))
        _set(self, "window", check_int("window", self.window, 1, MAX_WINDOW))
        _set(self, "fill", check_int("fill", self.fill, 1, self.window))
        patterns = check_patterns(self.patterns)
        _set(self, "patterns", patterns)
        _set(self, "scores", check_per_pattern("scores", self.scores, patterns))
        _set(self, "thresholds", check_per_pattern("thresholds", self.thresholds, patterns))
        _set(self, "attention", check_attention(self.attention, (len(patterns), self.window)))
        _set(self, "latency_ms", check_stages(self.latency_ms))
        for name in ("model_id", "backend", "device"):
            _set(self, name, check_text(name, getattr(self, name)))

    @property
    def flags(self) -> dict[str, bool]:
        return {p: self.scores[p] >= self.thresholds[p] for p in self.patterns}

    @property
    def latency_e2e_ms(self) -> float:
        """Capture to publish, on the publishing host's monotonic clock."""
        return (self.publish_ns - self.capture_ns) / 1e6

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ScoreMessage):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]  # mutable-looking fields; equality is by value

    def _fields(self) -> dict[str, Any]:
        return {
            "v": SCHEMA_VERSION,
            "kind": self.kind,
            "stream_id": self.stream_id,
            "session": self.session,
            "seq": self.seq,
            "frame": self.frame,
            "capture_ns": self.capture_ns,
            "publish_ns": self.publish_ns,
            "fill": self.fill,
            "window": self.window,
            "patterns": list(self.patterns),
            "scores": dict(self.scores),
            "thresholds": dict(self.thresholds),
            "flags": self.flags,
            "latency_ms": dict(self.latency_ms),
            "model_id": self.model_id,
            "backend": self.backend,
            "device": self.device,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (attention as nested lists of floats), e.g. for recording."""
        return {**self._fields(), "attention": self.attention.astype(float).tolist()}

    def encode(self, topic_prefix: str = DEFAULT_TOPIC_PREFIX) -> list[bytes]:
        attention = {
            "dtype": ATTENTION_DTYPE,
            "shape": list(self.attention.shape),
            "data": self.attention.tobytes(),
        }
        return _pack(
            self.kind, topic_prefix, self.stream_id, {**self._fields(), "attention": attention}
        )


@dataclass(frozen=True)
class StatusMessage:
    """Health of the pipeline, sent every second so late subscribers learn the state.

    ``frames_dropped`` counts frames the grabber's latest-wins slot replaced before they were
    processed. ``last_error`` is cut to 500 characters with control characters replaced by
    spaces, so an exception text can be passed as is.
    """

    source: str  # source name (never a URL with credentials)
    state: str  # one of SOURCE_STATES
    input_fps: float  # frames captured per second, last interval
    output_fps: float  # score messages published per second, last interval
    frames_captured: int
    frames_dropped: int
    frames_published: int
    backend: str
    device: str
    model_id: str
    uptime_s: float
    last_error: str | None = None
    stream_id: str = DEFAULT_STREAM_ID
    seq: int = 0
    session: int = 0
    publish_ns: int = 0

    kind: ClassVar[str] = STATUS

    def __post_init__(self) -> None:
        _check_envelope(self)
        _set(self, "source", check_text("source", self.source))
        if self.state not in SOURCE_STATES:
            raise ProtocolError(
                f"state: expected one of {SOURCE_STATES}, got {describe(self.state)}"
            )
        for name in ("input_fps", "output_fps", "uptime_s"):
            _set(self, name, check_float(name, getattr(self, name)))
        for name in ("frames_captured", "frames_dropped", "frames_published"):
            _set(self, name, check_int(name, getattr(self, name)))
        for name in ("backend", "device", "model_id"):
            _set(self, name, check_text(name, getattr(self, name)))
        if self.last_error is not None:
            if not isinstance(self.last_error, str):
                raise ProtocolError(
                    f"last_error: expected a string or nil, got {describe(self.last_error)}"
                )
            text = "".join(c if c.isprintable() else " " for c in self.last_error)
            _set(self, "last_error", text[:MAX_ERROR_CHARS])

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": SCHEMA_VERSION,
            "kind": self.kind,
            "stream_id": self.stream_id,
            "session": self.session,
            "seq": self.seq,
            "publish_ns": self.publish_ns,
            "source": self.source,
            "state": self.state,
            "input_fps": self.input_fps,
            "output_fps": self.output_fps,
            "frames_captured": self.frames_captured,
            "frames_dropped": self.frames_dropped,
            "frames_published": self.frames_published,
            "backend": self.backend,
            "device": self.device,
            "model_id": self.model_id,
            "uptime_s": self.uptime_s,
            "last_error": self.last_error,
        }

    def encode(self, topic_prefix: str = DEFAULT_TOPIC_PREFIX) -> list[bytes]:
        return _pack(self.kind, topic_prefix, self.stream_id, self.to_dict())


Message = ScoreMessage | StatusMessage

# --------------------------------------------------------------------------- decoding

_ENVELOPE = ("stream_id", "session", "seq", "publish_ns")
_SCORE_KEYS = (
    *_ENVELOPE,
    *("frame", "capture_ns", "fill", "window", "patterns", "scores", "thresholds", "flags"),
    *("attention", "latency_ms", "model_id", "backend", "device"),
)
_STATUS_KEYS = tuple(field.name for field in dataclasses.fields(StatusMessage))


def _take(body: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    # Unknown keys are ignored: version 1 may gain optional keys (see the versioning policy).
    missing = [key for key in keys if key not in body]
    if missing:
        raise ProtocolError(f"{missing[0]}: missing")
    return {key: body[key] for key in keys}


def _decode_scores(body: Mapping[str, Any]) -> ScoreMessage:
    fields = _take(body, _SCORE_KEYS)
    patterns = check_patterns(fields["patterns"])
    window = check_int("window", fields["window"], 1, MAX_WINDOW)
    fields["attention"] = attention_from_wire(fields["attention"], (len(patterns), window))
    wire_flags = fields.pop("flags")
    msg = ScoreMessage(**fields)
    if wire_flags != msg.flags or not all(type(f) is bool for f in wire_flags.values()):
        raise ProtocolError(
            f"flags: expected {msg.flags} (score >= threshold), got {describe(wire_flags)}"
        )
    return msg


def _decode_status(body: Mapping[str, Any]) -> StatusMessage:
    return StatusMessage(**_take(body, _STATUS_KEYS))


def _as_bytes(name: str, frame: object) -> bytes:
    if isinstance(frame, bytes):
        return frame
    if isinstance(frame, bytearray | memoryview):
        size = frame.nbytes if isinstance(frame, memoryview) else len(frame)
        if size > MAX_MESSAGE_BYTES:
            raise ProtocolError(f"message: {name} frame exceeds {MAX_MESSAGE_BYTES} bytes")
        return bytes(frame)
    raise ProtocolError(f"message: {name} frame: expected bytes, got {type(frame).__name__}")


def decode(frames: Sequence[bytes]) -> ScoreMessage | StatusMessage:
    """Decode and validate one multipart message; raise ProtocolError on anything malformed."""
    if not isinstance(frames, list | tuple) or len(frames) != 2:
        got = len(frames) if isinstance(frames, list | tuple) else type(frames).__name__
        raise ProtocolError(f"message: expected 2 frames [topic, body], got {got}")
    topic_bytes, body_bytes = _as_bytes("topic", frames[0]), _as_bytes("body", frames[1])
    size = len(topic_bytes) + len(body_bytes)
    if size > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message: {size} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")

    try:
        topic = topic_bytes.decode("ascii")
        prefix, _, topic_kind = topic.rpartition(".")
        check_topic_prefix(prefix)
    except (UnicodeDecodeError, ProtocolError):
        raise ProtocolError(f"topic: expected '<prefix>.<kind>', got {topic_bytes!r:.60}") from None
    if topic_kind not in KINDS:
        raise ProtocolError(f"topic: unknown kind {topic_kind!r}; expected one of {KINDS}")

    try:
        body = msgpack.unpackb(body_bytes, raw=False, strict_map_key=True, **_UNPACK_LIMITS)
    except Exception as err:  # noqa: BLE001 - msgpack raises several types; all mean "bad body"
        reason = str(err).splitlines()[0][:80] if str(err) else ""
        raise ProtocolError(f"body: not valid msgpack ({type(err).__name__} {reason})") from None
    if not isinstance(body, dict):
        raise ProtocolError(f"body: expected a msgpack map, got {describe(body)}")
    if any(not isinstance(key, str) for key in body):
        raise ProtocolError("body: expected string keys")

    version = body.get("v")
    if type(version) is not int or version != SCHEMA_VERSION:
        raise UnsupportedVersion(
            f"v: unknown schema version {describe(version)}; this decoder reads {SCHEMA_VERSION}"
        )
    kind = body.get("kind")
    if kind != topic_kind:
        raise ProtocolError(f"kind: expected {topic_kind!r} as in the topic, got {describe(kind)}")
    return _decode_scores(body) if kind == SCORES else _decode_status(body)
