"""Per-stage and end-to-end latency of the live pipeline, side by side (``luvnet bench``).

One run measures, on the same frames and the same model: cached (one encoder call per new
frame) vs naive (re-encode the window), incremental head vs window rerun (and the temporal
branch alone), each requested backend, and optionally the paced live pipeline at given
frame rates. Warm-up iterations are skipped. Speed is reported, never asserted.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from luvnet.bench.modes import run_backend_head, run_cached, run_heads, run_naive, run_paced
from luvnet.bench.plot import plot_cdfs
from luvnet.bench.replay import ReplaySource
from luvnet.bench.stats import machine_info, peak_memory, summarize
from luvnet.engine.backends import create_backend
from luvnet.engine.errors import LuvnetError
from luvnet.engine.files import atomic_open
from luvnet.engine.model.checkpoint import load_checkpoint, save_checkpoint
from luvnet.engine.model.config import ModelConfig, PreprocessConfig
from luvnet.engine.model.network import build_model
from luvnet.engine.runtime import resolve_device, set_threads
from luvnet.streamer.compose import StreamSettings
from luvnet.streamer.frame_source import SourceEnded, SourceOptions
from luvnet.streamer.sources import open_source

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchSettings:
    """One bench run: the model, the frames, what is measured and for how long."""

    backbone: str = "densenet161"  # random-init LUV-Net trunk, when no checkpoint is given
    checkpoint: Path | None = None
    image_size: int = 256  # with ``backbone``
    source: str = "phantom:0"  # frames to feed (URI)
    size: tuple[int, int] = (924, 1232)  # phantom frame size (height, width)
    frames: int = 60  # measured frames per mode
    warmup: int = 10  # skipped iterations before each measurement
    naive_frames: int = 5  # measured frames of the naive mode
    device: str = "auto"
    precision: str = "fp32"  # fp32 | fp16
    backends: tuple[str, ...] = ("eager",)
    paced_fps: tuple[float, ...] = ()  # one paced run per frame rate (and paced backend)
    paced_seconds: float = 10.0
    paced_backends: tuple[str, ...] | None = None  # None: every one of ``backends``
    paced_source: str = "replay"  # replay (decoded beforehand, from memory) | live
    paced_head: str = "incremental"  # head stage of the paced pipeline
    threads: int | None = None  # torch CPU threads (None: torch's default)


@dataclass
class BenchResult:
    """The report (every figure, JSON-ready) and the raw samples behind the CDF plot."""

    report: dict[str, Any]
    series: dict[str, list[float]] = field(default_factory=dict)  # ms per frame, per mode
    title: str = ""

    def write_json(self, path: Path) -> None:
        """The report as JSON, written atomically."""
        with atomic_open(path) as handle:
            handle.write(json.dumps(self.report, indent=2) + "\n")

    def plot(self, path: Path) -> None:
        """Latency CDFs per mode (PNG)."""
        plot_cdfs(self.series, path, self.title)


def _read_frames(uri: str, count: int, size: tuple[int, int]) -> list:
    source = open_source(uri, SourceOptions(realtime=False, size=size))
    source.open()
    frames = []
    try:
        for _ in range(count):
            try:
                frames.append(source.read().image)
            except SourceEnded:
                break
    finally:
        source.close()
    if not frames:
        raise LuvnetError(f"--source {uri}: produced no frames")
    return frames


def _checkpoint_path(settings: BenchSettings, scratch: Path) -> Path:
    """The bench always goes through a real checkpoint, as the streamer does."""
    if settings.checkpoint:
        return settings.checkpoint
    config = ModelConfig(
        backbone=settings.backbone, preprocess=PreprocessConfig(image_size=settings.image_size)
    )
    torch.manual_seed(0)
    return save_checkpoint(build_model(config).eval(), scratch / f"bench-{settings.backbone}")


def _ratio(slow: dict, fast: dict) -> float | None:
    if not slow.get("n") or not fast.get("n"):
        return None
    return slow["p50"] / fast["p50"]


def run_bench(settings: BenchSettings) -> BenchResult:
    """Measure every mode of ``settings`` (module docstring); progress goes to the log.

    Raises:
        LuvnetError: a paced backend not among ``backends``, fp16 without CUDA, a bad device,
            checkpoint or source, or a backend that fails to load.
    """
    names = list(settings.backends)
    paced_names = list(settings.paced_backends) if settings.paced_backends is not None else names
    for name in paced_names:
        if name not in names:
            raise LuvnetError(f"--paced-backends: {name!r} is not among --backends {names}")
    set_threads(settings.threads)
    device = resolve_device(settings.device)
    dtype = torch.float16 if settings.precision == "fp16" else torch.float32
    if dtype == torch.float16 and device.type != "cuda":
        raise LuvnetError("--precision fp16 needs a CUDA device")
    size = settings.size
    with tempfile.TemporaryDirectory() as scratch:
        checkpoint_dir = _checkpoint_path(settings, Path(scratch))
        checkpoint = load_checkpoint(checkpoint_dir)
        model = checkpoint.model.to(device=device).eval()
        length = model.config.clip_length
        needed = max(settings.frames + settings.warmup, length + settings.naive_frames)
        frames = _read_frames(settings.source, needed, size)
        report: dict[str, object] = {
            "machine": machine_info(device),
            "model": {
                "backbone": model.config.backbone,
                "variant": model.config.variant,
                "image_size": model.config.preprocess.image_size,
                "precision": settings.precision,
                "model_id": checkpoint.model_id,
            },
            "source": settings.source,
            "frame_size": list(frames[0].shape),
            "modes": {},
            "ratios": {},
        }
        modes: dict[str, dict[str, list[float]]] = {}
        # Backends copy the fp32 model; the head state then runs in the backend's dtype.
        loaded = [
            create_backend(n, model, device=device, precision=settings.precision) for n in names
        ]
        model = model.to(dtype)
        report["backends"] = {b.name: b.info.to_dict() for b in loaded}
        for backend in loaded:
            log.info(
                "cached/%s: %d frames after %d warm-up",
                backend.name,
                settings.frames,
                settings.warmup,
            )
            modes[f"cached_{backend.name}"] = run_cached(
                model,
                frames[: settings.frames + settings.warmup],
                backend.encode,
                device,
                dtype,
                "incremental",
                settings.warmup,
            )

        @torch.inference_mode()
        def eager_encode(frames: torch.Tensor) -> torch.Tensor:
            return model.embed(frames)

        log.info("naive: %d frames, %d encoder calls each", settings.naive_frames, length)
        modes["naive_eager"] = run_naive(
            model, frames, eager_encode, device, dtype, settings.naive_frames
        )
        log.info("heads: incremental vs window rerun")
        heads = run_heads(model, device, dtype, settings.frames, settings.warmup)
        for backend in loaded:
            heads[f"head_window_{backend.name}"] = run_backend_head(
                backend, settings.frames, settings.warmup
            )
        mode_stats = {m: {s: summarize(v) for s, v in st.items()} for m, st in modes.items()}
        head_stats = {name: summarize(v) for name, v in heads.items()}
        report["modes"] = mode_stats
        report["heads"] = head_stats
        cached = mode_stats.get("cached_eager", {}).get("total", {})
        report["ratios"] = {
            "naive_over_cached_eager": _ratio(mode_stats["naive_eager"]["total"], cached),
            "head_window_over_incremental": _ratio(
                head_stats["head_window"], head_stats["head_incremental"]
            ),
            "temporal_window_over_incremental": _ratio(
                head_stats.get("temporal_window", {}),
                head_stats.get("temporal_incremental", {}),
            ),
        }
        paced = {}
        by_name = dict(zip(names, loaded, strict=True))  # as asked: "auto" too
        for name in paced_names:
            for fps in settings.paced_fps:
                label = f"{name}_{settings.paced_head}_{fps:g}fps"
                log.info("paced %s for %g s", label, settings.paced_seconds)
                stream = StreamSettings(
                    source=settings.source,
                    checkpoint=checkpoint_dir,
                    device=str(device),
                    precision=settings.precision,
                    head_mode=settings.paced_head,
                    realtime=True,
                    source_options={"fps": fps, "size": size},
                )
                source = (
                    ReplaySource(frames, fps, name=settings.source)
                    if settings.paced_source == "replay"
                    else None
                )
                result = run_paced(stream, settings.paced_seconds, by_name[name], source)
                e2e = result["e2e"][settings.warmup :]
                stages = result["stages"]
                counts = {k: v for k, v in result.items() if k not in ("e2e", "stages")}
                paced[label] = {
                    **counts,
                    "backend": name,
                    "head": settings.paced_head,
                    "fps": fps,
                    "source": settings.paced_source,
                    "e2e": summarize(e2e),
                    "stages": {k: summarize(v[settings.warmup :]) for k, v in stages.items()},
                }
                modes[f"paced_{label}_e2e"] = {"total": e2e}
        report["paced"] = paced
        report["memory"] = peak_memory(device)
        report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    series = {m: st["total"] for m, st in modes.items() if "total" in st}
    series.update(heads)
    return BenchResult(report, series, f"luvnet bench: {model.config.backbone} on {device}")


def print_report(report: dict[str, Any]) -> None:
    """The figures of :func:`run_bench` as a table on stdout."""
    machine = report["machine"]
    print(
        f"machine: {machine['cpu']} x{machine['cpu_count']} (torch threads "
        f"{machine['torch_threads']}), {machine.get('gpu', 'no GPU')}, torch {machine['torch']}"
    )
    print(f"model: {report['model']}")
    header = (
        f"{'mode/stage':34s} {'n':>5s} {'mean':>9s} {'p50':>9s} {'p90':>9s} {'p99':>9s} "
        f"{'p99.9':>9s} {'max':>9s}  (ms)"
    )
    print(header)
    rows = [(f"{m}/{s}", st) for m, stages in report["modes"].items() for s, st in stages.items()]
    rows += [(f"heads/{name}", st) for name, st in report["heads"].items()]
    for key, result in report["paced"].items():
        rows.append((f"paced_{key}/e2e", result["e2e"]))
    for name, st in rows:
        if st.get("n"):
            print(
                f"{name:34s} {st['n']:5d} {st['mean']:9.3f} {st['p50']:9.3f} {st['p90']:9.3f} "
                f"{st['p99']:9.3f} {st['p99.9']:9.3f} {st['max']:9.3f}"
            )
    for key, result in report["paced"].items():
        print(
            f"paced {key}: sustained {result['sustained_fps']:.1f} fps, captured "
            f"{result['captured']}, published {result['published']}, dropped {result['dropped']}"
        )
    for name, value in report["ratios"].items():
        print(f"ratio {name}: {value:.1f}x (p50)" if value else f"ratio {name}: n/a")
    print(f"memory: {report['memory']}")
