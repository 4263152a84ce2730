"""``luvnet serve``: many streams, one encoder batched across them on Ray Serve.

Reads a YAML file (docs/serve.md): the checkpoint, backend, device and precision; ``publish``,
one ZeroMQ address for all streams (topic ``<prefix>.<stream_id>.``, the schema-v1 messages of
``luvnet stream``); ``streams``, each ``{id, source}`` with ``luvnet stream``'s options;
``encoder`` (replicas, batching, resources per replica); ``ray.address`` (``auto`` joins a
cluster running here or starts a local one, removed again at the end). Ctrl-C or SIGTERM stops
every stream, removes the deployment and whatever Ray processes the command started. Exit codes:
0 when the streams ended or were stopped, 1 when a source failed for good, 2 for a
configuration error.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from luvnet.commands.logs import ROOT
from luvnet.commands.options import nonnegative_float, positive_int
from luvnet.commands.serve_config import load_serve_settings
from luvnet.commands.signals import StopOnSignal, StopRequested
from luvnet.commands.stream import stopped_by

HELP = "serve many streams with one encoder batched across them (Ray Serve)"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        required=True,
        metavar="FILE.yaml",
        help="the pipeline: checkpoint, publish, streams, encoder, ray (docs/serve.md)",
    )
    parser.add_argument(
        "--max-frames", type=positive_int, help="stop each stream after N frames scored"
    )
    parser.add_argument(
        "--wait-subscriber",
        type=nonnegative_float,
        default=0.0,
        metavar="S",
        help="before the first frame, wait up to S seconds for a subscriber (PUB keeps no history)",
    )


def run(args: argparse.Namespace) -> int:
    settings = load_serve_settings(args.config, max_frames=args.max_frames)
    # Ray is imported only now: a bad file is reported without its seconds of import.
    from luvnet.streamer.serve import driver

    logging.getLogger(ROOT).setLevel(logging.WARNING)
    for name in (__name__, driver.__name__):
        logging.getLogger(name).setLevel(logging.INFO)
    log.info(
        "starting %d streams on Ray (address %s), %d encoder replica(s) ...",
        len(settings.streams),
        settings.ray.address,
        settings.encoder.replicas,
    )
    try:
        with StopOnSignal(interrupt_until_started=True) as signals:
            outcome = driver.run_serve(
                settings,
                stop=signals.stop,
                on_started=lambda cluster: signals.started(),
                wait_subscriber_s=args.wait_subscriber,
            )
    except StopRequested as stop:
        log.info("stopped during start-up, %s", stopped_by(stop.signum))
        return 0
    if signals.stopped:
        log.info("stopped %s", stopped_by(signals.signum))
    log.info(
        "encoder: %d frames in batches of %.2f on average, replicas on %d node(s)",
        outcome.frames_encoded,
        outcome.mean_batch,
        outcome.replica_nodes,
    )
    return outcome.exit_status
