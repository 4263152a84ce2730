"""Soak test: the real live stream for a long time, watched for leaks, losses and miscounts.

Usage (the command line is :mod:`luvnet.commands.soak`)::

    python -m luvnet.commands.soak --minutes 30 --source phantom --backbone mobilenet_v3_small
    python -m luvnet.commands.soak --minutes 10 --source file:scan.mp4 --loop --checkpoint DIR

Runs ``compose_stream`` with a real :class:`~streamer.publisher.ScorePublisher` on loopback and
a real :class:`~streamer.client.ScoreSubscriber` that keeps up, on its own thread. Every
``--sample-s`` seconds it samples the process's resident memory (``/proc/self/statm``) and its
anonymous part (``RssAnon`` in ``/proc/self/status``), GPU memory (when on CUDA), threads and
open file descriptors. At the end it reports and checks:

- **memory growth** after the first ``--warmup-s`` seconds (caches, allocator pools and the
  phantom's scene textures settle in that time): last sample over the first sample taken after
  the warm-up, and the largest sample after it; target under ``--max-growth`` (2%). Checked on
  the anonymous RSS, where a leak shows: the total also counts mapped library pages, which the
  kernel evicts and reloads under memory pressure from other processes (it is reported too);
- **seq gaps** seen by the subscriber (target zero) and whether it received every score the
  publisher sent;
- **drop accounting**: frames_captured - frames_published in the final status message equals
  frames_dropped plus the frames that failed in the pipeline plus the (at most one) frame still
  waiting in the grabber's slot when the stream was stopped.

The command's exit status is 0 when every check passed, 1 when one failed, 2 for a usage
error. The report is printed; ``--json`` also writes it with every sample.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from luvnet.bench.stats import machine_info
from luvnet.engine.errors import LuvnetError
from luvnet.engine.files import atomic_open
from luvnet.engine.model.checkpoint import save_checkpoint
from luvnet.engine.model.config import ModelConfig, PreprocessConfig
from luvnet.engine.model.network import build_model
from luvnet.engine.runtime import resolve_device, set_threads
from luvnet.streamer.client import ScoreSubscriber
from luvnet.streamer.compose import StreamSettings, compose_stream
from luvnet.streamer.protocol import ScoreMessage, StatusMessage
from luvnet.streamer.publisher import ScorePublisher

log = logging.getLogger(__name__)

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class SoakSettings:
    """One soak run: what streams, for how long, and the limits its checks apply."""

    minutes: float
    source: str = "phantom"
    checkpoint: Path | None = None
    backbone: str = "mobilenet_v3_small"  # random-init LUV-Net, when no checkpoint is given
    image_size: int = 256  # with ``backbone``
    size: tuple[int, int] | None = None  # phantom/capture frame size (height, width)
    fps: float | None = None  # phantom/capture frame rate
    loop: bool = False  # replay a file source forever
    realtime: bool = True  # False: block policy, every frame scored
    device: str = "auto"
    backend: str = "eager"
    head_mode: str = "auto"
    threads: int | None = None  # torch CPU threads (None: torch's default)
    sample_s: float = 5.0  # seconds between samples
    warmup_s: float = 60.0  # growth is measured after this
    max_growth: float = 0.02  # allowed RSS growth after the warm-up


@dataclass
class Sample:
    t_s: float  # seconds since the stream started
    rss_mib: float
    rss_anon_mib: float | None  # heap and other private memory: where leaks show
    gpu_allocated_mib: float | None
    gpu_reserved_mib: float | None
    threads: int
    open_fds: int
    captured: int
    published: int
    dropped: int
    received: int  # score messages the subscriber has taken


def rss_mib() -> float:
    """Resident set size now (not the peak): field 2 of /proc/self/statm, in pages."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * PAGE_BYTES / 2**20
    except OSError:  # not Linux: the peak is the best the resource module offers
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_anon_mib() -> float | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _count(path: str) -> int:
    try:
        return len(os.listdir(path))
    except OSError:
        return -1


class KeepingUpSubscriber:
    """A ScoreSubscriber on its own thread that takes every message as it arrives."""

    def __init__(self, endpoint: str) -> None:
        self.sub = ScoreSubscriber(endpoint)  # created here, then used only by the thread
        self.scores = 0
        self.last_status: StatusMessage | None = None
        self.first_score_seq: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-subscriber", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self.sub.recv(100)
            if isinstance(msg, ScoreMessage):
                if self.first_score_seq is None:
                    self.first_score_seq = msg.seq
                self.scores += 1
            elif isinstance(msg, StatusMessage):
                self.last_status = msg

    def drain_until_final(self, published: int, timeout_s: float = 10.0) -> None:
        """Wait until the final status (frames_published == published) has arrived."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = self.last_status
            if (
                status is not None
                and status.state in ("ended", "error")
                and status.frames_published == published
                and self.scores >= published
            ):
                break
            time.sleep(0.05)
        self._stop.set()
        self._thread.join(5)
        self.sub.close()


def _checkpoint(settings: SoakSettings, scratch: Path) -> Path:
    if settings.checkpoint:
        return settings.checkpoint
    config = ModelConfig(
        backbone=settings.backbone, preprocess=PreprocessConfig(image_size=settings.image_size)
    )
    torch.manual_seed(0)  # random init: the soak measures the plumbing, not the scores
    return save_checkpoint(build_model(config).eval(), scratch / f"soak-{settings.backbone}")


def growth(samples: list[Sample], warmup_s: float, key: str) -> dict[str, float] | None:
    """Last and peak value after the warm-up, relative to the first sample after it."""
    after = [s for s in samples if s.t_s >= warmup_s and getattr(s, key) is not None]
    if len(after) < 2:
        return None
    base, last = getattr(after[0], key), getattr(after[-1], key)
    peak = max(getattr(s, key) for s in after)
    if base <= 0:
        return {"base": base, "last": last, "peak": peak, "growth": 0.0, "peak_growth": 0.0}
    return {
        "base": base,
        "last": last,
        "peak": peak,
        "growth": (last - base) / base,
        "peak_growth": (peak - base) / base,
    }


def run_soak(
    settings: SoakSettings, stop: threading.Event | None = None, *, command: str = ""
) -> dict[str, Any]:
    """Stream for ``settings.minutes`` (or until ``stop`` is set) and check the run.

    Args:
        stop: set from outside (a signal) to end the run early; it still reports.
        command: the command line, recorded in the report.

    Returns:
        The report: figures, every sample and ``checks`` (name -> (passed, detail)).

    Raises:
        LuvnetError: a bad setting, device, checkpoint or source, or a subscriber that never
            connected.
    """
    if settings.minutes <= 0 or settings.sample_s <= 0:
        raise LuvnetError("--minutes and --sample-s: expected positive numbers")
    set_threads(settings.threads)
    device = resolve_device(settings.device)
    stop = stop if stop is not None else threading.Event()
    samples: list[Sample] = []
    with tempfile.TemporaryDirectory() as scratch, ScorePublisher("tcp://127.0.0.1:*") as pub:
        checkpoint = _checkpoint(settings, Path(scratch))
        options = {"size": settings.size, "fps": settings.fps}
        stream = StreamSettings(
            source=settings.source,
            checkpoint=checkpoint,
            device=str(device),
            backend=settings.backend,
            head_mode=settings.head_mode,
            realtime=settings.realtime,
            loop=settings.loop,
            source_options={k: v for k, v in options.items() if v is not None},
        )
        pipeline = compose_stream(stream, pub.publish)
        subscriber = KeepingUpSubscriber(pub.endpoint)
        subscriber.start()
        if not pub.wait_for_subscriber(30):
            raise LuvnetError(f"the soak subscriber did not connect to {pub.endpoint}")
        started = time.monotonic()

        def sample() -> None:
            cuda = device.type == "cuda"
            samples.append(
                Sample(
                    t_s=time.monotonic() - started,
                    rss_mib=rss_mib(),
                    rss_anon_mib=rss_anon_mib(),
                    gpu_allocated_mib=torch.cuda.memory_allocated(device) / 2**20 if cuda else None,
                    gpu_reserved_mib=torch.cuda.memory_reserved(device) / 2**20 if cuda else None,
                    threads=threading.active_count(),
                    open_fds=_count("/proc/self/fd"),
                    captured=pipeline.grabber.captured,
                    published=pipeline.counters.published,
                    dropped=pipeline.grabber.dropped,
                    received=subscriber.scores,
                )
            )
            last = samples[-1]
            log.info(
                "%7.0f s  rss %8.1f MiB (anon %8.1f)  captured %d  published %d  dropped %d  "
                "received %d",
                last.t_s,
                last.rss_mib,
                last.rss_anon_mib or 0,
                last.captured,
                last.published,
                last.dropped,
                last.received,
            )

        def sampler() -> None:
            deadline = started + settings.minutes * 60
            while not stop.is_set():
                sample()
                if stop.wait(min(settings.sample_s, max(0.0, deadline - time.monotonic()))):
                    break
                if time.monotonic() >= deadline:
                    stop.set()

        watcher = threading.Thread(target=sampler, name="soak-sampler", daemon=True)
        watcher.start()
        published = pipeline.run(stop)
        stop.set()
        watcher.join(5)
        sample()
        # A frame the grabber took but the loop had not when it stopped: not lost, not dropped.
        left_in_slot = 1 if pipeline.grabber.get(timeout_s=0) is not None else 0
        subscriber.drain_until_final(published)
        seconds = time.monotonic() - started
        final = subscriber.last_status

    failed = pipeline.counters.failed_frames
    report: dict[str, object] = {
        "command": command,
        "machine": machine_info(device),
        "source": settings.source,
        "model_id": pipeline.identity.model_id,
        "backend": pipeline.identity.backend,
        "seconds": seconds,
        "published": published,
        "failed_frames": failed,
        "left_in_slot": left_in_slot,
        "last_error": pipeline.counters.last_error or pipeline.grabber.last_error,
        "reconnects": pipeline.grabber.reconnects,
        "subscriber": {
            "scores": subscriber.scores,
            "first_seq": subscriber.first_score_seq,
            "gaps": subscriber.sub.gap_count,
            "missed": subscriber.sub.missed_count,
            "malformed": subscriber.sub.malformed_count,
            "restarts": subscriber.sub.restart_count,
        },
        "publisher": {"sent_scores": pub.sent_scores, "dropped": pub.dropped},
        "final_status": final.to_dict() if final is not None else None,
        "rss": growth(samples, settings.warmup_s, "rss_mib"),
        "rss_anon": growth(samples, settings.warmup_s, "rss_anon_mib"),
        "gpu_allocated": growth(samples, settings.warmup_s, "gpu_allocated_mib"),
        "gpu_reserved": growth(samples, settings.warmup_s, "gpu_reserved_mib"),
        "threads": [min(s.threads for s in samples), max(s.threads for s in samples)],
        "open_fds": [min(s.open_fds for s in samples), max(s.open_fds for s in samples)],
        "samples": [asdict(s) for s in samples],
    }
    report["checks"] = _checks(report, settings.max_growth)
    return report


def passed(report: dict[str, Any]) -> bool:
    """Whether every check of a :func:`run_soak` report passed."""
    return all(ok for ok, _ in report["checks"].values())


def write_report(path: Path, report: dict[str, Any]) -> None:
    """The report with every sample as JSON, written atomically."""
    with atomic_open(path) as handle:
        handle.write(json.dumps(report, indent=2) + "\n")


def _checks(report: dict, max_growth: float) -> dict[str, tuple[bool, str]]:
    sub, final = report["subscriber"], report["final_status"]
    checks: dict[str, tuple[bool, str]] = {}
    anon, total = report["rss_anon"] or report["rss"], report["rss"]
    if anon is None or total is None:
        checks["rss growth"] = (False, "too short: fewer than two samples after the warm-up")
    else:
        ok = anon["growth"] < max_growth and anon["peak_growth"] < max_growth
        checks["rss growth"] = (
            ok,
            f"anonymous {anon['base']:.1f} -> {anon['last']:.1f} MiB ({anon['growth']:+.2%}), "
            f"peak {anon['peak']:.1f} MiB ({anon['peak_growth']:+.2%}); limit {max_growth:.0%}; "
            f"total {total['base']:.1f} -> {total['last']:.1f} MiB ({total['growth']:+.2%})",
        )
    gpu = report["gpu_reserved"]
    if gpu is not None:
        checks["gpu growth"] = (
            gpu["growth"] < max_growth,
            f"reserved {gpu['base']:.1f} -> {gpu['last']:.1f} MiB ({gpu['growth']:+.2%})",
        )
    checks["seq gaps"] = (
        sub["gaps"] == 0 and sub["malformed"] == 0,
        f"{sub['gaps']} gaps ({sub['missed']} missed), {sub['malformed']} malformed",
    )
    delivered = sub["scores"] == report["published"] and sub["first_seq"] in (0, None)
    checks["delivered"] = (
        delivered,
        f"subscriber received {sub['scores']} of {report['published']} scores published "
        f"(first seq {sub['first_seq']})",
    )
    if final is None:
        checks["drop accounting"] = (False, "no final status message received")
    else:
        lost = final["frames_captured"] - final["frames_published"]
        counted = final["frames_dropped"] + report["failed_frames"] + report["left_in_slot"]
        checks["drop accounting"] = (
            lost == counted and final["frames_published"] == report["published"],
            f"captured {final['frames_captured']} - published {final['frames_published']} = "
            f"{lost}; dropped {final['frames_dropped']} + failed {report['failed_frames']} + "
            f"left in slot {report['left_in_slot']} = {counted}",
        )
    return checks


def print_report(report: dict[str, Any]) -> None:
    """The report of :func:`run_soak`, without the samples, on stdout."""
    machine = report["machine"]
    print(f"command: {report['command']}")
    print(
        f"machine: {machine['cpu']} x{machine['cpu_count']} (torch threads "
        f"{machine['torch_threads']}), {machine.get('gpu', 'no GPU')}, torch {machine['torch']}"
    )
    rate = report["published"] / max(report["seconds"], 1e-9)
    print(
        f"ran {report['seconds'] / 60:.1f} min on {report['source']} ({report['backend']}): "
        f"{report['published']} scores ({rate:.1f}/s), reconnects {report['reconnects']}, "
        f"threads {report['threads']}, open fds {report['open_fds']}"
    )
    for name, (ok, detail) in report["checks"].items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")
