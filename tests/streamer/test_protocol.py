"""The wire schema: round trips, field validation, and a decoder that only raises ProtocolError."""

from __future__ import annotations

import math
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from luvnet.streamer.protocol import (
    MAX_ERROR_CHARS,
    MAX_MESSAGE_BYTES,
    ProtocolError,
    ScoreMessage,
    StatusMessage,
    UnsupportedVersion,
    decode,
    stream_id_of,
    stream_prefix,
)
from tests.streamer.message_factory import PATTERNS, make_score, make_status

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def body_of(frames: list[bytes]) -> dict[str, Any]:
    return msgpack.unpackb(frames[1], raw=False)


def pack(body: Any, topic: bytes = b"luvnet.scores") -> list[bytes]:
    return [topic, msgpack.packb(body, use_bin_type=True)]


def assert_one_line_error(err: pytest.ExceptionInfo[ProtocolError], field: str) -> None:
    text = str(err.value)
    assert "\n" not in text, f"expected one line, got {text!r}"
    assert text.startswith(field), f"expected the message to start with {field!r}, got {text!r}"


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize(
    "msg, prefix",
    [
        (make_score(seq=3, session=12, publish_ns=5), "luvnet"),
        (make_score(window=1, fill=1, stream_id="ward3-bed2"), "luvnet.ward3-bed2"),
        (make_score(window=1024, fill=1024, latency_ms={}), "luvnet"),
        (make_status(seq=9), "luvnet"),
        (make_status(state="error", last_error="source: timed out", stream_id="icu"), "luvnet.icu"),
        (make_status(state="starting", model_id="", input_fps=0), "luvnet"),
    ],
)
def test_round_trip(msg: ScoreMessage | StatusMessage, prefix: str) -> None:
    frames = msg.encode(prefix)
    assert frames[0] == f"{prefix}.{msg.kind}".encode()
    decoded = decode(frames)
    assert type(decoded) is type(msg)
    assert decoded == msg, f"expected {msg.to_dict()}, got {decoded.to_dict()}"


@pytest.mark.parametrize(
    ("topic_prefix", "stream_id", "topic"),
    [
        ("luvnet", "default", b"luvnet.scores"),  # one stream: the short topic
        ("luvnet", "bed1", b"luvnet.bed1.scores"),  # --stream-id bed1
        ("luvnet.ward3", "ward3", b"luvnet.ward3.scores"),  # --topic-prefix luvnet.ward3
        ("luvnet.ward3", "bed1", b"luvnet.ward3.bed1.scores"),  # both
        ("luvnet.ward3", "default", b"luvnet.ward3.default.scores"),  # never silently "ward3"
        ("site", "default", b"site.scores"),
    ],
)
def test_one_topic_rule_the_word_before_the_kind_is_the_stream_id(
    topic_prefix: str, stream_id: str, topic: bytes
) -> None:
    frames = make_score(stream_id=stream_id).encode(topic_prefix)
    assert frames[0] == topic
    prefix = topic.decode().rpartition(".")[0]
    assert stream_id_of(prefix) == stream_id == decode(frames).stream_id
    assert stream_prefix(topic_prefix, stream_id) == prefix
    # A subscriber to "<topic_prefix>." hears every stream under it (ZeroMQ prefix match).
    assert topic.startswith(f"{topic_prefix}.".encode())


def test_score_wire_layout_and_derived_fields() -> None:
    msg = make_score()
    body = body_of(msg.encode())
    assert body["v"] == 1 and body["kind"] == "scores"
    assert body["patterns"] == list(PATTERNS)
    assert body["flags"] == {
        "a_lines": True,  # 0.9 >= 0.5
        "b_lines": False,  # 0.2 < 0.4
        "consolidation": True,  # equal to the threshold counts as positive
        "pleural_effusion": False,
    }
    att = body["attention"]
    assert att["dtype"] == "<f2" and att["shape"] == [4, 30]
    expected = msg.attention.astype("<f2").tobytes()
    assert att["data"] == expected, "attention: expected raw little-endian float16, row-major"
    assert msg.to_dict()["attention"] == msg.attention.astype(float).tolist()


def test_attention_is_copied_and_read_only() -> None:
    source = np.ones((4, 30), dtype=np.float16)
    msg = make_score(attention=source)
    assert source.flags.writeable, "the caller's array must stay writeable"
    assert not msg.attention.flags.writeable
    source[0, 0] = 5
    assert msg.attention[0, 0] == 1


def test_last_error_is_cut_and_made_printable() -> None:
    msg = make_status(last_error="line one\nline two" + "x" * 1000)
    assert msg.last_error is not None and len(msg.last_error) == MAX_ERROR_CHARS
    assert msg.last_error.startswith("line one line two")


def test_unknown_keys_are_ignored_for_forward_compatibility() -> None:
    body = body_of(make_score().encode()) | {"added_in_a_later_v1": [1, 2]}
    assert decode(pack(body)) == make_score()


# --------------------------------------------------------------------------- producer-side checks

BAD_SCORE_FIELDS = [
    ("scores", dict(zip(PATTERNS, (math.nan, 0, 0, 0), strict=True)), "scores.a_lines"),
    ("scores", dict(zip(PATTERNS, (1.5, 0, 0, 0), strict=True)), "scores.a_lines"),
    ("scores", {"a_lines": 0.5}, "scores"),
    ("thresholds", dict(zip(PATTERNS, (0.5, -0.1, 0.5, 0.5), strict=True)), "thresholds.b_lines"),
    ("fill", 0, "fill"),
    ("fill", 31, "fill"),
    ("window", 0, "window"),
    ("frame", -1, "frame"),
    ("frame", True, "frame"),
    ("frame", 1.0, "frame"),
    ("seq", 2**64, "seq"),
    ("session", 2**32, "session"),
    ("patterns", ("a_lines", "a_lines", "c", "d"), "patterns"),
    ("patterns", ("A-lines", "b", "c", "d"), "patterns[0]"),
    ("attention", np.ones((4, 29)), "attention"),
    ("attention", np.full((4, 30), np.inf), "attention"),
    ("attention", np.full((4, 30), 1e6), "attention"),  # overflows float16
    ("attention", -np.ones((4, 30)), "attention"),
    ("attention", [[0.0] * 30] * 4, "attention"),
    ("latency_ms", {"embed": -1.0}, "latency_ms.embed"),
    ("latency_ms", {"Embed Stage": 1.0}, "latency_ms key"),
    ("model_id", "abc\x1b[2J", "model_id"),
    ("device", "x" * 300, "device"),
    ("stream_id", "ward.3", "stream_id"),
    ("stream_id", "", "stream_id"),
]


@pytest.mark.parametrize("field, value, named", BAD_SCORE_FIELDS)
def test_score_construction_rejects(field: str, value: Any, named: str) -> None:
    with pytest.raises(ProtocolError) as err:
        make_score(**{field: value})
    assert_one_line_error(err, named)


@pytest.mark.parametrize(
    "field, value",
    [
        ("state", "paused"),
        ("input_fps", -1.0),
        ("output_fps", math.inf),
        ("frames_dropped", -3),
        ("uptime_s", "10"),
        ("last_error", 42),
        ("source", "cam\n0"),
    ],
)
def test_status_construction_rejects(field: str, value: Any) -> None:
    with pytest.raises(ProtocolError) as err:
        make_status(**{field: value})
    assert_one_line_error(err, field)


# --------------------------------------------------------------------------- decoder: table


def mutated(change: dict[str, Any], drop: str | None = None) -> list[bytes]:
    body = body_of(make_score().encode()) | change
    if drop is not None:
        del body[drop]
    return pack(body)


def with_attention(**change: Any) -> list[bytes]:
    attention = body_of(make_score().encode())["attention"] | change
    return mutated({"attention": attention})


MALFORMED = [
    ("v missing", mutated({}, drop="v"), "v:"),
    ("v true", mutated({"v": True}), "v:"),
    ("v 2", mutated({"v": 2}), "v:"),
    ("kind unknown", mutated({"kind": "alerts"}), "kind:"),
    ("kind/topic mismatch", mutated({"kind": "status"}), "kind:"),
    ("seq missing", mutated({}, drop="seq"), "seq:"),
    ("seq negative", mutated({"seq": -1}), "seq:"),
    ("seq float", mutated({"seq": 1.0}), "seq:"),
    ("score NaN", mutated({"scores": dict.fromkeys(PATTERNS, math.nan)}), "scores.a_lines"),
    ("flags inconsistent", mutated({"flags": dict.fromkeys(PATTERNS, True)}), "flags:"),
    (
        "flags as ints",
        mutated({"flags": {"a_lines": 1, "b_lines": 0, "consolidation": 1, "pleural_effusion": 0}}),
        "flags:",
    ),  # noqa: E501
    ("dtype f4", with_attention(dtype="<f4"), "attention.dtype"),
    ("dtype object", with_attention(dtype="|O"), "attention.dtype"),
    ("shape transposed", with_attention(shape=[30, 4]), "attention.shape"),
    ("shape floats", with_attention(shape=[4.0, 30.0]), "attention.shape"),
    ("data short", with_attention(data=b"\x00" * 239), "attention.data"),
    ("data as list", with_attention(data=[0] * 10), "attention.data"),
    ("array over the msgpack limit", with_attention(data=[0] * 120), "body:"),
    ("data NaN", with_attention(data=np.full(120, np.nan, "<f2").tobytes()), "attention"),
    ("attention not a map", mutated({"attention": b"\x00" * 240}), "attention"),
    ("fill > window", mutated({"fill": 31}), "fill"),
    ("patterns not a list", mutated({"patterns": "a_lines"}), "patterns"),
    ("body is a list", pack([1, "scores"]), "body:"),
    ("body not msgpack", [b"luvnet.scores", b"\xc1"], "body:"),
    ("body trailing bytes", [b"luvnet.scores", make_score().encode()[1] + b"\x00"], "body:"),
    ("int map keys", [b"luvnet.scores", msgpack.packb({1: 2})], "body:"),
    ("topic unknown kind", [b"luvnet.alerts", make_score().encode()[1]], "topic:"),
    ("topic no prefix", [b"scores", make_score().encode()[1]], "topic:"),
    ("topic not ascii", [b"luvnet\xff.scores", make_score().encode()[1]], "topic:"),
    ("one frame", [make_score().encode()[1]], "message:"),
    ("three frames", [*make_score().encode(), b""], "message:"),
    ("frame not bytes", [b"luvnet.scores", 7], "message:"),
    ("oversized", mutated({"pad": b"\x00" * MAX_MESSAGE_BYTES}), "message:"),
]


@pytest.mark.parametrize("frames, named", [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_decode_rejects(frames: list[bytes], named: str) -> None:
    with pytest.raises(ProtocolError) as err:
        decode(frames)
    assert_one_line_error(err, named)


def test_unknown_version_has_its_own_type() -> None:
    with pytest.raises(UnsupportedVersion):
        decode(mutated({"v": 2}))


@pytest.mark.parametrize("msg", [make_score(), make_status()], ids=["scores", "status"])
def test_every_truncation_is_rejected(msg: ScoreMessage | StatusMessage) -> None:
    topic, body = msg.encode()
    for cut in range(len(body)):
        with pytest.raises(ProtocolError):
            decode([topic, body[:cut]])
    for cut in range(len(topic)):
        with pytest.raises(ProtocolError):
            decode([topic[:cut], body])


# --------------------------------------------------------------------------- decoder: fuzzing

msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.binary(max_size=64),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=30,
)


def decodes_or_refuses(frames: list[Any]) -> None:
    try:
        msg = decode(frames)
    except ProtocolError as err:
        assert "\n" not in str(err)
        return
    assert isinstance(msg, ScoreMessage | StatusMessage)


@FUZZ
@given(st.lists(st.binary(max_size=300), max_size=4))
def test_fuzz_arbitrary_bytes(frames: list[bytes]) -> None:
    decodes_or_refuses(frames)


@FUZZ
@given(st.sampled_from([b"luvnet.scores", b"luvnet.status"]), msgpack_values)
def test_fuzz_arbitrary_msgpack(topic: bytes, value: Any) -> None:
    decodes_or_refuses(pack(value, topic))


SCORE_BODY = body_of(make_score().encode())
STATUS_BODY = body_of(make_status().encode())


@FUZZ
@given(
    st.sampled_from([(b"luvnet.scores", SCORE_BODY), (b"luvnet.status", STATUS_BODY)]),
    st.data(),
)
def test_fuzz_mutated_fields(case: tuple[bytes, dict[str, Any]], data: st.DataObject) -> None:
    topic, body = case
    body = dict(body)
    for key in data.draw(st.lists(st.sampled_from(sorted(body)), min_size=1, max_size=3)):
        if data.draw(st.booleans()):
            body[key] = data.draw(msgpack_values)
        else:
            body.pop(key, None)
    decodes_or_refuses(pack(body, topic))


@FUZZ
@given(st.data())
def test_fuzz_byte_flips(data: st.DataObject) -> None:
    topic, body = make_score().encode()
    raw = bytearray(body)
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    decodes_or_refuses([topic, bytes(raw)])
