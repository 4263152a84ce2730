"""The topic rule of the score stream (docs/protocol.md, "Topics and subscriptions").

A topic is ``<stream prefix>.<kind>``, and the last word of the stream prefix is the stream id,
except that a one-word prefix (``luvnet``) is the stream "default". Publishing stream S under
topic prefix T gives the stream prefix T.S, or T itself when T already ends in S::

    luvnet       + default -> luvnet.scores
    luvnet       + bed1    -> luvnet.bed1.scores
    luvnet.ward3 + ward3   -> luvnet.ward3.scores
    luvnet.ward3 + bed1    -> luvnet.ward3.bed1.scores

So a subscriber to ``<T>.`` hears every stream under T, and the word before the kind always
names the message's stream.
"""

from __future__ import annotations

from luvnet.streamer.schema import check_stream_id, check_topic_prefix

DEFAULT_TOPIC_PREFIX = "luvnet"
DEFAULT_STREAM_ID = "default"


def stream_id_of(stream_prefix: str) -> str:
    """The stream id a stream prefix names: its last word, or "default" for a one-word prefix
    (``luvnet.ward3`` -> ``ward3``, ``luvnet`` -> ``default``). Raises ProtocolError for a
    malformed prefix."""
    head, dot, last = check_topic_prefix(stream_prefix).rpartition(".")
    return last if dot and head else DEFAULT_STREAM_ID


def stream_prefix(topic_prefix: str, stream_id: str) -> str:
    """The prefix of stream ``stream_id``'s topics under ``topic_prefix``: ``topic_prefix``
    when it already names that stream (see :func:`stream_id_of`), else
    ``topic_prefix.stream_id``. Raises ProtocolError for a malformed id or prefix, or one too
    long for a topic."""
    check_stream_id(stream_id)
    if stream_id_of(topic_prefix) == stream_id:
        return topic_prefix
    return check_topic_prefix(f"{topic_prefix}.{stream_id}")
