"""``luvnet bench serve``: N paced streams through ``luvnet serve`` against N independent
``luvnet stream`` processes, side by side in one run.

Both sides get the same frames, decoded beforehand and replayed from memory at the same pace
(:class:`~luvnet.bench.replay.ReplaySource`, each stream its own copy of the frames), the
same checkpoint and the same pipeline code (``compose_stream``); each side runs in processes
of its own, started here, and is measured from outside by a subscriber per process:

- per-stream end-to-end latency (capture by the grabber -> message received), p50 and p99;
- frames scored per second over the measured seconds (after a warm-up), drops (frames the
  latest-wins slot replaced) and sequence gaps per stream;
- the resident memory of every process each side started (Ray's processes included: the
  tree under the serve driver), sampled twice a second, peak of the sum;
- serve only: the encoder's mean batch size; on CUDA the peak GPU memory of each process.

Independent processes each get ``max(1, cores // N)`` torch threads; the serve driver and its
replica one each. With ``repeats`` > 1 each side runs that many times per stream count, the
sides alternating which goes first (serve first, then independent first, ...), and each
side's median run is reported
(:func:`median_run`). ``fps_ratio`` and ``rss_ratio``: serve / independent, of those runs.
Reported, not asserted.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from luvnet.bench.replay import ReplaySource
from luvnet.bench.run import BenchResult, _read_frames
from luvnet.bench.serve_probes import Listener, RssSampler, free_port, peak_gpu_mib
from luvnet.bench.stats import machine_info, summarize
from luvnet.engine.runtime import resolve_device
from luvnet.streamer.compose import StreamSettings
from luvnet.streamer.publisher import PublisherOptions
from luvnet.streamer.serve.settings import EncoderSettings

STREAM_IDS = "s{:02d}"


@dataclass(frozen=True)
class ServeBenchSettings:
    """One ``luvnet bench serve`` run."""

    streams: tuple[int, ...] = (1, 2, 4, 8)
    checkpoint: Path | None = None  # None: the demo model
    source: str = "phantom:0"  # frames to replay
    size: tuple[int, int] = (480, 640)  # frame size (height, width) of a phantom source
    replay_frames: int = 30  # frames decoded once, cycled by every stream
    fps: float = 30.0
    seconds: float = 20.0  # measured seconds per side and stream count
    warmup_s: float = 5.0  # after start-up, before the measured seconds
    device: str = "auto"
    max_batch_size: int = EncoderSettings.max_batch_size
    batch_wait_ms: float = EncoderSettings.batch_wait_ms
    frames_in_flight: int = EncoderSettings.frames_in_flight
    requests_in_flight: int = EncoderSettings.requests_in_flight
    repeats: int = 1  # runs per side and stream count, alternating which side goes first


def _stream_settings(settings: ServeBenchSettings, stream_id: str, device: str) -> StreamSettings:
    return StreamSettings(
        source=settings.source,
        checkpoint=settings.checkpoint,
        device=device,
        head_mode="incremental",
        realtime=True,
        stream_id=stream_id,
        source_options={"fps": settings.fps},
    )


def _stop_when(event: Any, stop: threading.Event) -> None:
    """Set ``stop`` once the parent sets the multiprocessing ``event``."""

    def wait() -> None:
        event.wait()
        stop.set()

    threading.Thread(target=wait, daemon=True).start()


def _serve_child(
    settings: ServeBenchSettings,
    n: int,
    frames: list[np.ndarray],
    device: str,
    endpoint: str,
    queue: Any,
    stop_event: Any,
) -> None:
    """The serve side (a process of its own): ``run_serve`` over N replayed streams."""
    import logging

    from luvnet.streamer.serve.driver import run_serve
    from luvnet.streamer.serve.settings import RaySettings, ServeSettings

    logging.basicConfig(level=logging.WARNING)
    ids = [STREAM_IDS.format(i) for i in range(n)]
    serve_settings = ServeSettings(
        streams=tuple(_stream_settings(settings, sid, device) for sid in ids),
        publish=PublisherOptions(bind=endpoint),
        encoder=EncoderSettings(
            replicas=1,
            max_batch_size=settings.max_batch_size,
            batch_wait_ms=settings.batch_wait_ms,
            frames_in_flight=settings.frames_in_flight,
            requests_in_flight=settings.requests_in_flight,
            num_cpus=1,
            threads=1,
        ),
        ray=RaySettings(address="local", num_cpus=os.cpu_count() or 1),  # never a shared one
        checkpoint=settings.checkpoint,
        device=device,
        threads=1,
        app_name=f"luvnet-bench-{os.getpid()}",
    )
    stop = threading.Event()
    _stop_when(stop_event, stop)
    sources = {sid: ReplaySource([f.copy() for f in frames], settings.fps, name=sid) for sid in ids}
    outcome = run_serve(
        serve_settings,
        stop=stop,
        sources=sources,
        on_started=lambda cluster: queue.put({"started": True}),
    )
    gpu = [r["peak_gpu_mib"] for r in outcome.replicas if r.get("peak_gpu_mib") is not None]
    queue.put(
        {
            "mean_batch": outcome.mean_batch,
            "frames_encoded": outcome.frames_encoded,
            # The replicas' and the driver's own (the head's state, the window).
            "peak_gpu_mib": sum(gpu) + peak_gpu_mib(device) if gpu else None,
        }
    )


def _stream_child(
    settings: ServeBenchSettings,
    index: int,
    n: int,
    frames: list[np.ndarray],
    device: str,
    endpoint: str,
    queue: Any,
    stop_event: Any,
) -> None:
    """One independent ``luvnet stream`` (a process of its own) over one replayed stream."""
    from luvnet.engine.runtime import set_threads
    from luvnet.streamer.compose import compose_stream
    from luvnet.streamer.publisher import ScorePublisher

    set_threads(max(1, (os.cpu_count() or 1) // n))
    sid = STREAM_IDS.format(index)
    stop = threading.Event()
    _stop_when(stop_event, stop)
    with ScorePublisher(endpoint, stream_id=sid) as publisher:
        source = ReplaySource(list(frames), settings.fps, name=sid)
        pipeline = compose_stream(
            _stream_settings(settings, sid, device), publisher.publish, source=source
        )
        queue.put({"started": True})
        pipeline.run(stop)
    queue.put({"peak_gpu_mib": peak_gpu_mib(device) if device.startswith("cuda") else None})


def _side(
    label: str, settings: ServeBenchSettings, n: int, frames: list[np.ndarray], device: str
) -> dict[str, Any]:
    """Run one side for ``n`` streams; its figures."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    stop_event = ctx.Event()
    if label == "serve":
        endpoints = [f"tcp://127.0.0.1:{free_port()}"]
        args: list[tuple[Any, ...]] = [
            (settings, n, frames, device, endpoints[0], queue, stop_event)
        ]
        target: Any = _serve_child
    else:
        endpoints = [f"tcp://127.0.0.1:{free_port()}" for _ in range(n)]
        args = [(settings, i, n, frames, device, endpoints[i], queue, stop_event) for i in range(n)]
        target = _stream_child
    procs = [ctx.Process(target=target, args=a) for a in args]
    listeners = [Listener(endpoint) for endpoint in endpoints]
    for proc in procs:
        proc.start()
    sampler = RssSampler([p.pid for p in procs if p.pid is not None])
    replies: list[dict[str, Any]] = []
    try:
        started = 0
        while started < len(procs):
            reply = queue.get(timeout=300)
            started += 1 if reply.get("started") else 0
        time.sleep(settings.warmup_s)
        t0 = time.monotonic()
        time.sleep(settings.seconds)
        t1 = time.monotonic()
    finally:
        stop_event.set()
        peak_rss = sampler.close()
        for proc in procs:
            proc.join(120)
        while not queue.empty():
            replies.append(queue.get())
        for listener in listeners:
            listener.close()
    return _figures(listeners, t0, t1, n, peak_rss, replies)


def _figures(
    listeners: list[Listener],
    t0: float,
    t1: float,
    n: int,
    peak_rss: int,
    replies: list[dict[str, Any]],
) -> dict[str, Any]:
    per_stream: dict[str, Any] = {}
    scored = 0
    for index in range(n):
        sid = STREAM_IDS.format(index)
        listener = next((li for li in listeners if sid in li.scores), listeners[0])
        inside = [e2e for t, e2e in listener.scores.get(sid, []) if t0 <= t < t1]
        statuses = [s for t, s in listener.statuses.get(sid, []) if t0 <= t < t1]
        dropped = (
            statuses[-1].frames_dropped - statuses[0].frames_dropped if len(statuses) > 1 else 0
        )
        scored += len(inside)
        e2e = summarize(inside)
        per_stream[sid] = {
            "scored_fps": len(inside) / (t1 - t0),
            "e2e_p50_ms": e2e.get("p50"),
            "e2e_p99_ms": e2e.get("p99"),
            "dropped": dropped,
            "seq_gaps": listener.gaps.get(sid, 0),
        }
    batch = next((r["mean_batch"] for r in replies if "mean_batch" in r), None)
    gpu = [r["peak_gpu_mib"] for r in replies if r.get("peak_gpu_mib") is not None]
    all_e2e = [e2e for li in listeners for s in li.scores.values() for t, e2e in s if t0 <= t < t1]
    return {
        "scored_fps": scored / (t1 - t0),
        "e2e": summarize(all_e2e),
        "dropped": sum(s["dropped"] for s in per_stream.values()),
        "seq_gaps": sum(s["seq_gaps"] for s in per_stream.values()),
        "rss_mib": peak_rss / 2**20,
        "mean_batch": batch,
        "peak_gpu_mib": sum(gpu) if gpu else None,  # CUDA only: summed over the processes
        "streams": per_stream,
        "_series": all_e2e,
    }


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of one side with the median frames scored per second (the lower of the two
    middle ones for an even count), so its latency, drops and memory belong to that run;
    ``scored_fps_runs`` lists every run's, in the order they ran."""
    chosen = dict(sorted(runs, key=lambda f: f["scored_fps"])[(len(runs) - 1) // 2])
    chosen["scored_fps_runs"] = [f["scored_fps"] for f in runs]
    return chosen


def run_order(repeats: int) -> list[str]:
    """The sides in the order they run for one stream count: alternated from repeat to repeat
    (serve first, then independent first, ...), so a machine that drifts (load, clocks, a
    shared host) favours neither side."""
    pair = ["serve", "independent"]
    return [side for repeat in range(repeats) for side in (pair if repeat % 2 == 0 else pair[::-1])]


def run_serve_bench(settings: ServeBenchSettings) -> BenchResult:
    """Both sides for each stream count of ``settings``; see the module docstring."""
    device = resolve_device(settings.device)
    load_before = os.getloadavg()  # what else ran (the report's end adds the bench's own load)
    frames = _read_frames(settings.source, settings.replay_frames, settings.size)
    rows: dict[str, Any] = {}
    series: dict[str, list[float]] = {}
    for n in settings.streams:
        runs: dict[str, list[dict[str, Any]]] = {"serve": [], "independent": []}
        for label in run_order(settings.repeats):
            runs[label].append(_side(label, settings, n, frames, str(device)))
        row: dict[str, Any] = {}
        for label, figures in runs.items():
            row[label] = median_run(figures)
            series[f"{label}_{n}"] = row[label].pop("_series")
        serve, alone = row["serve"], row["independent"]
        row["fps_ratio"] = (
            serve["scored_fps"] / alone["scored_fps"] if alone["scored_fps"] else None
        )
        row["rss_ratio"] = serve["rss_mib"] / alone["rss_mib"] if alone["rss_mib"] else None
        rows[str(n)] = row
    last = rows[str(settings.streams[-1])]
    report = {
        "machine": machine_info(device),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "settings": {
            k: (str(v) if isinstance(v, Path) else v) for k, v in settings.__dict__.items()
        },
        "frame_size": list(frames[0].shape),
        "runs": rows,
        "fps_ratio": last["fps_ratio"],
        "rss_ratio": last["rss_ratio"],
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    return BenchResult(report, series, f"luvnet bench serve on {device}: e2e latency")


def print_serve_report(report: dict[str, Any]) -> None:
    """The figures of :func:`run_serve_bench` as a table on stdout."""
    machine = report["machine"]
    load = ", ".join(f"{v:.2f}" for v in report["load_average_before"])
    print(f"machine: {machine['cpu']} x{machine['cpu_count']}, load average before: {load}")
    print(
        f"{'N':>3s} {'side':12s} {'fps':>7s} {'p50 ms':>8s} {'p99 ms':>8s} {'drops':>6s} "
        f"{'gaps':>5s} {'RSS MiB':>8s} {'batch':>6s}"
    )
    for n, row in report["runs"].items():
        for label in ("serve", "independent"):
            f = row[label]
            e2e = f["e2e"]
            batch = f"{f['mean_batch']:.2f}" if f["mean_batch"] else "-"
            print(
                f"{n:>3s} {label:12s} {f['scored_fps']:7.1f} {e2e.get('p50', float('nan')):8.1f} "
                f"{e2e.get('p99', float('nan')):8.1f} {f['dropped']:6d} {f['seq_gaps']:5d} "
                f"{f['rss_mib']:8.0f} {batch:>6s}"
            )
        runs = ", ".join(
            f"{label} " + "/".join(f"{v:.0f}" for v in row[label]["scored_fps_runs"])
            for label in ("serve", "independent")
        )
        ratios = f"fps_ratio {row['fps_ratio']:.2f}, rss_ratio {row['rss_ratio']:.2f}"
        print(f"    {ratios}; frames/s of each run: {runs}")
