"""The options every subscribing consumer command shares: where to subscribe."""

from __future__ import annotations

import argparse
from pathlib import Path

from luvnet.commands.options import client_name, topic_prefix, zmq_endpoint
from luvnet.plugins.consumers.common import SubscriberOptions
from luvnet.streamer.protocol import DEFAULT_ENDPOINT, DEFAULT_TOPIC_PREFIX
from luvnet.streamer.security import CLIENT_NAME


def add_subscriber_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--endpoint",
        default=DEFAULT_ENDPOINT,
        type=zmq_endpoint,
        help=f"publisher address, e.g. tcp://[::1]:5555 for IPv6 (default {DEFAULT_ENDPOINT})",
    )
    parser.add_argument(
        "--topic-prefix",
        default=DEFAULT_TOPIC_PREFIX,
        type=topic_prefix,
        help="receive the streams under this prefix, e.g. luvnet.bed1 for stream bed1 "
        "(default luvnet: all)",
    )
    parser.add_argument(
        "--curve-keys",
        type=Path,
        metavar="DIR",
        help="CURVE key directory with CLIENT.key_secret and server.key",
    )
    parser.add_argument(
        "--client",
        type=client_name,
        default=CLIENT_NAME,
        metavar="NAME",
        help=f"with --curve-keys: use the pair NAME.key_secret made by `luvnet keys DIR --client "
        f"NAME` (default {CLIENT_NAME})",
    )


def subscriber_options(args: argparse.Namespace) -> SubscriberOptions:
    return SubscriberOptions(
        endpoint=args.endpoint,
        topic_prefix=args.topic_prefix,
        curve_keys=args.curve_keys,
        curve_client=args.client,
    )
