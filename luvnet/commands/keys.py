"""``luvnet keys``: create CURVE keys for an authenticated score stream.

Usage: ``luvnet keys DIR`` (server pair + one authorised client pair), or
``luvnet keys DIR --client NAME`` to add and authorise another subscriber. The key layout:
luvnet.streamer.security.
"""

from __future__ import annotations

import argparse

from luvnet.commands.options import client_name
from luvnet.streamer.security import AUTHORIZED_DIR, add_client, generate_keys

HELP = "create CURVE keys for an authenticated score stream"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", metavar="DIR", help="key directory (created if missing)")
    parser.add_argument(
        "--client",
        type=client_name,
        metavar="NAME",
        help="add and authorise a client pair NAME in an existing DIR "
        "(subscribers use it with --curve-keys DIR --client NAME)",
    )


def run(args: argparse.Namespace) -> int:
    if args.client:
        public, secret = add_client(args.dir, args.client)
        print(f"client {args.client}: give {secret} to the subscriber; {public.name} authorised")
        print(f"subscribe with: luvnet listen --curve-keys {args.dir} --client {args.client}")
    else:
        path = generate_keys(args.dir)
        print(f"keys in {path}: publisher uses server.key_secret + {AUTHORIZED_DIR}/,")
        print("subscriber uses client.key_secret + server.key (pass --curve-keys DIR to both)")
    return 0
