"""What the subscribing consumers share: where to subscribe, and how often to look for a stop."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from luvnet.streamer.client import Gap, ScoreSubscriber
from luvnet.streamer.protocol import DEFAULT_ENDPOINT, DEFAULT_TOPIC_PREFIX
from luvnet.streamer.security import CLIENT_NAME, load_client_keys

POLL_MS = 200  # how often a consumer loop checks its stop flag
# A status message in one of these source states is a stream's last (protocol.SOURCE_STATES):
# the source ended (end of file, --max-frames, a stop) or failed for good.
FINAL_STATES = ("ended", "error")


@dataclass(frozen=True)
class SubscriberOptions:
    """Where a consumer subscribes."""

    endpoint: str = DEFAULT_ENDPOINT
    topic_prefix: str = DEFAULT_TOPIC_PREFIX  # receive topics under this prefix
    curve_keys: Path | None = None  # a directory with <curve_client>.key_secret and server.key
    curve_client: str = CLIENT_NAME  # whose key pair: `luvnet keys DIR --client NAME`


def open_subscriber(
    options: SubscriberOptions, on_gap: Callable[[Gap], None] | None = None
) -> ScoreSubscriber:
    """A connected subscriber; raises LuvnetError for a bad key directory or topic prefix."""
    curve = (
        load_client_keys(options.curve_keys, client=options.curve_client)
        if options.curve_keys is not None
        else None
    )
    return ScoreSubscriber(
        options.endpoint, topic_prefix=options.topic_prefix, curve=curve, on_gap=on_gap
    )
