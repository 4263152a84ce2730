"""The options every subscribing consumer command shares: where to subscribe."""

from __future__ import annotations

import argparse
from pathlib import Path

from luvnet.plugins.consumers.common import SubscriberOptions
from luvnet.streamer.protocol import DEFAULT_ENDPOINT, DEFAULT_TOPIC_PREFIX


def add_subscriber_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--endpoint",
        default=DEFAULT_ENDPOINT,
        help=f"publisher address (default {DEFAULT_ENDPOINT})",
    )
    parser.add_argument(
        "--topic-prefix",
        default=DEFAULT_TOPIC_PREFIX,
        help="receive topics under this prefix, e.g. luvnet.ward3 (default luvnet: all)",
    )
    parser.add_argument(
        "--curve-keys",
        type=Path,
        metavar="DIR",
        help="CURVE key directory with client.key_secret and server.key",
    )


def subscriber_options(args: argparse.Namespace) -> SubscriberOptions:
    return SubscriberOptions(
        endpoint=args.endpoint, topic_prefix=args.topic_prefix, curve_keys=args.curve_keys
    )
