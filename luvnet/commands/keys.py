"""Create CURVE keys for an authenticated score stream (see streamer.security for the layout).

Usage: ``python -m luvnet.commands.keys DIR`` (server pair + one authorised client pair), or
``python -m luvnet.commands.keys DIR --client NAME`` to add and authorise another subscriber.
"""

from __future__ import annotations

import argparse
import sys

from luvnet.engine.errors import LuvnetError
from luvnet.streamer.security import AUTHORIZED_DIR, add_client, generate_keys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", metavar="DIR", help="key directory (created if missing)")
    parser.add_argument(
        "--client", metavar="NAME", help="add and authorise a client pair NAME in an existing DIR"
    )


def run(args: argparse.Namespace) -> int:
    if args.client:
        public, secret = add_client(args.dir, args.client)
        print(f"client {args.client}: give {secret} to the subscriber; {public.name} authorised")
    else:
        path = generate_keys(args.dir)
        print(f"keys in {path}: publisher uses server.key_secret + {AUTHORIZED_DIR}/,")
        print("subscriber uses client.key_secret + server.key (pass --curve-keys DIR to both)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m luvnet.commands.keys", description=__doc__)
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except LuvnetError as err:
        print(f"keys: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
