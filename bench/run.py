"""``luvnet bench``: per-stage and end-to-end latency of the live pipeline, side by side.

One run measures, on the same frames and the same model: cached (one encoder call per new
frame) vs naive (re-encode the window), incremental head vs window rerun (and the temporal
branch alone), each requested backend, and optionally the paced live pipeline at given
frame rates. Warm-up iterations are skipped. Speed is reported, never asserted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from luvnet.bench.modes import run_backend_head, run_cached, run_heads, run_naive, run_paced
from luvnet.bench.plot import plot_cdfs
from luvnet.bench.replay import ReplaySource
from luvnet.bench.stats import machine_info, peak_memory, summarize
from luvnet.commands.stream import parse_size
from luvnet.engine.backends import create_backend
from luvnet.engine.errors import LuvnetError
from luvnet.engine.model.checkpoint import load_checkpoint, save_checkpoint
from luvnet.engine.model.config import ModelConfig, PreprocessConfig
from luvnet.engine.model.network import build_model
from luvnet.streamer.compose import StreamSettings, resolve_device
from luvnet.streamer.frame_source import SourceEnded, SourceOptions
from luvnet.streamer.sources import open_source
from luvnet.streamer.stages import HEAD_MODES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--backbone", default="densenet161", help="random-init LUV-Net trunk")
    model.add_argument("--checkpoint", type=Path, help="benchmark this checkpoint instead")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--source", default="phantom:0", help="frames to feed (URI)")
    parser.add_argument("--size", default="924x1232", help="phantom frame size HxW")
    parser.add_argument("--frames", type=int, default=60, help="measured frames per mode")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--naive-frames", type=int, default=5, help="measured naive frames")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "fp16"))
    parser.add_argument("--backends", default="eager", help="comma list: eager,inductor,...")
    parser.add_argument("--paced", default="", help="comma list of fps for paced runs, e.g. 30,60")
    parser.add_argument("--paced-seconds", type=float, default=10.0)
    parser.add_argument(
        "--paced-backends",
        default=None,
        help="comma list of loaded backends to run paced (default: all of --backends)",
    )
    parser.add_argument(
        "--paced-source",
        default="replay",
        choices=("replay", "live"),
        help="replay: --source's frames decoded beforehand and replayed from memory at the "
        "pace, as a capture card delivers them (default); live: the source itself, paced",
    )
    parser.add_argument(
        "--paced-head",
        default="incremental",
        choices=HEAD_MODES,
        help="head stage of the paced pipeline: incremental state, or the backend's compiled "
        "head rerun over the window",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", type=Path, dest="json_out", help="write every figure here")
    parser.add_argument("--plot", type=Path, help="latency CDFs per mode (PNG)")


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


def _checkpoint_path(args: argparse.Namespace, scratch: Path) -> Path:
    """The bench always goes through a real checkpoint, as the streamer does."""
    if args.checkpoint:
        return args.checkpoint
    config = ModelConfig(
        backbone=args.backbone, preprocess=PreprocessConfig(image_size=args.image_size)
    )
    torch.manual_seed(0)
    return save_checkpoint(build_model(config).eval(), scratch / f"bench-{args.backbone}")


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _ratio(slow: dict, fast: dict) -> float | None:
    if not slow.get("n") or not fast.get("n"):
        return None
    return slow["p50"] / fast["p50"]


def run(args: argparse.Namespace) -> int:
    import tempfile

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = torch.float16 if args.precision == "fp16" else torch.float32
    if dtype == torch.float16 and device.type != "cuda":
        raise LuvnetError("--precision fp16 needs a CUDA device")
    size = parse_size(args.size)
    with tempfile.TemporaryDirectory() as scratch:
        checkpoint_dir = _checkpoint_path(args, Path(scratch))
        checkpoint = load_checkpoint(checkpoint_dir)
        model = checkpoint.model.to(device=device).eval()
        length = model.config.clip_length
        needed = max(args.frames + args.warmup, length + args.naive_frames)
        frames = _read_frames(args.source, needed, size)
        report: dict[str, object] = {
            "machine": machine_info(device),
            "model": {
                "backbone": model.config.backbone,
                "variant": model.config.variant,
                "image_size": model.config.preprocess.image_size,
                "precision": args.precision,
                "model_id": checkpoint.model_id,
            },
            "source": args.source,
            "frame_size": list(frames[0].shape),
            "modes": {},
            "ratios": {},
        }
        modes: dict[str, dict[str, list[float]]] = {}
        names = _names(args.backends)
        paced_names = _names(args.paced_backends) if args.paced_backends is not None else names
        for name in paced_names:
            if name not in names:
                raise LuvnetError(f"--paced-backends: {name!r} is not among --backends {names}")
        # Backends copy the fp32 model; the head state then runs in the backend's dtype.
        loaded = [create_backend(n, model, device=device, precision=args.precision) for n in names]
        model = model.to(dtype)
        report["backends"] = {b.name: b.info.to_dict() for b in loaded}
        for backend in loaded:
            _log(f"cached/{backend.name}: {args.frames} frames after {args.warmup} warm-up")
            modes[f"cached_{backend.name}"] = run_cached(
                model,
                frames[: args.frames + args.warmup],
                backend.encode,
                device,
                dtype,
                "incremental",
                args.warmup,
            )

        @torch.inference_mode()
        def eager_encode(frames: torch.Tensor) -> torch.Tensor:
            return model.embed(frames)

        _log(f"naive: {args.naive_frames} frames, {length} encoder calls each")
        modes["naive_eager"] = run_naive(
            model, frames, eager_encode, device, dtype, args.naive_frames
        )
        _log("heads: incremental vs window rerun")
        heads = run_heads(model, device, dtype, args.frames, args.warmup)
        for backend in loaded:
            heads[f"head_window_{backend.name}"] = run_backend_head(
                backend, args.frames, args.warmup
            )
        report["modes"] = {m: {s: summarize(v) for s, v in st.items()} for m, st in modes.items()}
        report["heads"] = {name: summarize(v) for name, v in heads.items()}
        cached = report["modes"].get("cached_eager", {}).get("total", {})
        report["ratios"] = {
            "naive_over_cached_eager": _ratio(report["modes"]["naive_eager"]["total"], cached),
            "head_window_over_incremental": _ratio(
                report["heads"]["head_window"], report["heads"]["head_incremental"]
            ),
            "temporal_window_over_incremental": _ratio(
                report["heads"].get("temporal_window", {}),
                report["heads"].get("temporal_incremental", {}),
            ),
        }
        paced = {}
        by_name = dict(zip(names, loaded, strict=True))  # as asked: "auto" too
        for name in paced_names:
            for fps in [float(f) for f in _names(args.paced)]:
                label = f"{name}_{args.paced_head}_{fps:g}fps"
                _log(f"paced {label} for {args.paced_seconds:g} s")
                settings = StreamSettings(
                    source=args.source,
                    checkpoint=checkpoint_dir,
                    device=str(device),
                    precision=args.precision,
                    head_mode=args.paced_head,
                    realtime=True,
                    source_options={"fps": fps, "size": size},
                )
                source = (
                    ReplaySource(frames, fps, name=args.source)
                    if args.paced_source == "replay"
                    else None
                )
                result = run_paced(settings, args.paced_seconds, by_name[name], source)
                e2e = result.pop("e2e")[args.warmup :]
                stages = result.pop("stages")
                paced[label] = {
                    **result,
                    "backend": name,
                    "head": args.paced_head,
                    "fps": fps,
                    "source": args.paced_source,
                    "e2e": summarize(e2e),
                    "stages": {k: summarize(v[args.warmup :]) for k, v in stages.items()},
                }
                modes[f"paced_{label}_e2e"] = {"total": e2e}
        report["paced"] = paced
        report["memory"] = peak_memory(device)
        report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    _print_report(report)
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2) + "\n")
    if args.plot:
        series = {m: st["total"] for m, st in modes.items() if "total" in st}
        series.update(heads)
        plot_cdfs(series, args.plot, f"luvnet bench: {model.config.backbone} on {device}")
    return 0


def _log(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


def _print_report(report: dict) -> None:
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
