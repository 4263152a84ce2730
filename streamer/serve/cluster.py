"""Join or start the Ray cluster, deploy the encoder on Ray Serve, and remove only that.

``address: auto`` joins a cluster already running on this machine (``ray start --head``) or,
when none runs, starts a local one just for this command (``local`` always starts one), kept
small: no dashboard, no HTTP proxy (the streams call the deployment through a handle), no
access log. On exit the command deletes its Serve application; it stops Serve only if it
started Serve, and the local cluster only if it started that (``ray.shutdown`` ends every
process of it).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import ray
from ray import serve

from luvnet.engine.errors import LuvnetError
from luvnet.streamer.serve.encoder import EncoderReplica
from luvnet.streamer.serve.settings import ServeSettings

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
SERVE_NAMESPACE = "serve"  # where Ray Serve keeps its controller
SERVE_CONTROLLER = "SERVE_CONTROLLER_ACTOR"
# Serve's logs at WARNING and no access log: a line per encoder call costs CPU at 240 calls/s.
SERVE_LOGGING = {"log_level": "WARNING", "enable_access_log": False}


@dataclass
class ServeCluster:
    """The Ray side of ``luvnet serve`` as a context manager; :attr:`handle` calls the encoder.

    Raises LuvnetError when the cluster cannot be reached or the deployment fails to start.
    """

    settings: ServeSettings
    handle: Any = None
    started_ray: bool = False  # this command started a local cluster
    started_serve: bool = False  # this command started Serve's controller
    deployed: bool = False
    info: dict[str, Any] = field(default_factory=dict)

    def __enter__(self) -> Self:
        try:
            self._connect()
            self._start_serve()
            self._deploy()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _connect(self) -> None:
        # ray.init installs its own SIGTERM/SIGINT handlers (which abort the process): the
        # command's stop-on-signal handlers come back once it has returned.
        previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
        try:
            self._init_ray()
        finally:
            if threading.current_thread() is threading.main_thread():
                for sig, handler in previous.items():
                    if handler is not None:
                        signal.signal(sig, handler)
        logging.getLogger("ray").setLevel(logging.WARNING)
        logging.getLogger("ray.serve").setLevel(logging.WARNING)

    def _init_ray(self) -> None:
        ray_settings = self.settings.ray
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        common: dict[str, Any] = {
            "namespace": ray_settings.namespace,
            "configure_logging": False,
            "log_to_driver": False,
        }
        if ray_settings.address in ("auto", "local"):
            if ray_settings.address == "auto":
                try:
                    ray.init(address="auto", **common)
                    return
                except ConnectionError:
                    pass  # none runs here: start one for this command
            ray.init(
                address="local",  # a new cluster, never one that runs already
                num_cpus=ray_settings.num_cpus or os.cpu_count() or 1,
                include_dashboard=False,
                _system_config={"enable_worker_prestart": False},
                **common,
            )
            self.started_ray = True
            return
        try:
            ray.init(address=ray_settings.address, **common)
        except (ConnectionError, ValueError, RuntimeError) as err:
            raise LuvnetError(
                f"ray.address: cannot join the Ray cluster at {ray_settings.address!r} ({err}); "
                "start it with `ray start --head` or use address: auto"
            ) from None

    def _start_serve(self) -> None:
        try:
            ray.get_actor(SERVE_CONTROLLER, namespace=SERVE_NAMESPACE)
        except ValueError:
            self.started_serve = True  # not running yet: ours to stop at the end
        serve.start(proxy_location="Disabled", logging_config=SERVE_LOGGING)

    def _check_resources(self) -> None:
        """Refuse replicas the cluster cannot place (Serve would wait for them forever)."""
        enc = self.settings.encoder
        per_replica = {"CPU": enc.num_cpus, "GPU": enc.num_gpus, **enc.resources}
        available = ray.cluster_resources()
        for name, amount in per_replica.items():
            need = amount * enc.replicas
            have = available.get(name, 0.0)
            if need > 0 and have < need:
                raise LuvnetError(
                    f"encoder: {enc.replicas} replica(s) need {need:g} {name} in all, the Ray "
                    f"cluster has {have:g}; lower encoder.replicas or the resources per replica "
                    "(num_cpus, num_gpus, resources), or add a node"
                )

    def _deploy(self) -> None:
        self._check_resources()
        s, enc = self.settings, self.settings.encoder
        threads = enc.threads or max(1, int(enc.num_cpus))
        actor_options: dict[str, Any] = {"num_cpus": enc.num_cpus, "num_gpus": enc.num_gpus}
        if enc.resources:
            actor_options["resources"] = dict(enc.resources)
        options: dict[str, Any] = {
            "name": "encoder",
            "num_replicas": enc.replicas,
            "ray_actor_options": actor_options,
            # A replica must take a whole batch at once, and the streams' next frames meanwhile.
            "max_ongoing_requests": max(2 * enc.max_batch_size, len(s.streams)),
            "logging_config": SERVE_LOGGING,
        }
        if enc.max_replicas_per_node is not None:
            options["max_replicas_per_node"] = enc.max_replicas_per_node
        deployment: Any = serve.deployment(EncoderReplica)
        deployment = deployment.options(**options)
        app = deployment.bind(
            str(s.checkpoint) if s.checkpoint is not None else None,
            s.backend,
            s.device,
            s.precision,
            threads,
            enc.max_batch_size,
            enc.batch_wait_ms,
        )
        try:
            self.handle = serve.run(
                app, name=s.app_name, route_prefix=None, logging_config=SERVE_LOGGING
            )
        except RuntimeError as err:
            raise LuvnetError(
                f"encoder deployment failed to start ({str(err).splitlines()[0][:300]}); "
                "check encoder.num_cpus/num_gpus/resources against the cluster's resources"
            ) from None
        self.deployed = True

    def replica_stats(self, calls: int = 8) -> list[dict[str, Any]]:
        """Stats of the replicas that answered ``calls`` stats requests (routing spreads them)."""
        seen: dict[int, dict[str, Any]] = {}
        for _ in range(calls):
            stats = self.handle.stats.remote().result(timeout_s=10)
            seen[stats["pid"]] = stats
        return list(seen.values())

    def close(self) -> None:
        """Delete the application; stop Serve and the local cluster if this command started
        them. Safe to call twice."""
        if not ray.is_initialized():
            return
        try:
            if self.deployed:
                serve.delete(self.settings.app_name)
                self.deployed = False
            if self.started_serve:
                serve.shutdown()
                self.started_serve = False
        except Exception as err:  # noqa: BLE001 - shutting down: report, then leave Ray anyway
            log.warning("serve shutdown: %s: %s", type(err).__name__, err)
        finally:
            ray.shutdown()
