"""Typed settings of ``luvnet serve``: what the YAML file says, checked (luvnet.commands)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from luvnet.streamer.compose import StreamSettings
from luvnet.streamer.publisher import PublisherOptions


@dataclass(frozen=True)
class EncoderSettings:
    """The encoder deployment: how many replicas, how they batch, what each reserves."""

    replicas: int = 1
    max_batch_size: int = 12  # frames per encoder call, across streams
    batch_wait_ms: float = 2.0  # how long a replica waits to fill a batch
    frames_in_flight: int = 4  # per stream: frames at the encoder while the next is prepared
    requests_in_flight: int = 1  # per replica: the driver's requests sent and not answered
    num_cpus: float = 1.0  # Ray CPUs reserved per replica
    num_gpus: float = 0.0  # Ray GPUs per replica (fractions share one GPU)
    threads: int | None = None  # torch CPU threads per replica (None: num_cpus, at least 1)
    max_replicas_per_node: int | None = None  # None: Ray's placement decides
    resources: dict[str, float] = field(default_factory=dict)  # custom Ray resources


@dataclass(frozen=True)
class RaySettings:
    """Where the cluster is: ``auto`` joins a running one on this machine or starts a local one;
    ``local`` always starts a local one (a benchmark, a test); ``HOST:PORT`` joins that one."""

    address: str = "auto"
    num_cpus: int | None = None  # CPUs of a local cluster this command starts (None: all)
    namespace: str = "luvnet"


@dataclass(frozen=True)
class ServeSettings:
    """The whole ``luvnet serve`` pipeline.

    ``streams`` carry everything ``luvnet stream`` takes per stream (source, its options,
    checkpoint, device, backend, precision, head, max_frames); the checkpoint, device,
    backend and precision are the same for all streams and the encoder.
    """

    streams: tuple[StreamSettings, ...]
    publish: PublisherOptions = PublisherOptions()
    encoder: EncoderSettings = EncoderSettings()
    ray: RaySettings = RaySettings()
    checkpoint: Path | None = None  # None: the demo model
    device: str = "auto"
    backend: str = "eager"
    precision: str = "fp32"
    threads: int | None = None  # torch CPU threads of the driver (per-stream work)
    app_name: str = "luvnet"  # the Serve application (unique per command on a shared cluster)
    request_timeout_s: float = 10.0  # an encoder call that takes longer is a lost frame
