"""luvnet: per-frame lung-ultrasound pattern scores from a live video stream (LUV-Net, MIDL 2025).

The one import namespace of the project. Its rooms are the repository's top-level folders,
mapped here by ``pyproject.toml``:

- ``luvnet.engine`` (``engine/``): the model, data, training, evaluation and backends;
- ``luvnet.streamer`` (``streamer/``): the live pipeline, wire protocol, publisher and client;
- ``luvnet.plugins`` (``plugins/``): frame sources and score consumers, found by entry points;
- ``luvnet.bench`` (``bench/``): latency and throughput benchmarks;
- ``luvnet.commands`` and ``luvnet.cli``: the command line, the only layer that parses arguments.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("luvnet")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0.0.0"
