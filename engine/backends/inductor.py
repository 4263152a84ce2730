"""torch.compile (inductor) on the fixed shapes, compiled and warmed up at start-up.

Encoder on [1, 3, S, S]; head on [1, L, D] plus the mask as an input of fixed shape [1, L]
(the streamer sends a padded window with a mask until the window fills, then a full one:
both are values of one static graph, so neither recompiles). On CUDA the default mode is
``reduce-overhead`` (CUDA graphs; the launch-bound trunk gains the most, docs/model.md, "Reference
figures"); on CPU plain inductor. Inductor's own on-disk caches (``TORCHINDUCTOR_CACHE_DIR``) make
the second start-up much faster than the first.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from luvnet.engine.backends.base import Backend, BackendInfo, BackendSpec
from luvnet.engine.backends.modules import EncoderGraph, HeadGraph, model_copy
from luvnet.engine.errors import LuvnetError
from luvnet.engine.model.network import LUVNet

MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
_CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")
WARMUP_CALLS = 3


def resolve_mode(spec: BackendSpec) -> str:
    on_cuda = spec.device.type == "cuda"
    mode = spec.inductor_mode or ("reduce-overhead" if on_cuda else "default")
    if mode not in MODES:
        raise LuvnetError(f"inductor mode: expected one of {', '.join(MODES)}, got {mode!r}")
    if mode in _CUDA_GRAPH_MODES and not on_cuda:
        raise LuvnetError(f"inductor mode {mode!r} uses CUDA graphs and needs a CUDA device")
    return mode


def _timed(device: torch.device, calls: Callable[[], object]) -> float:
    start = time.perf_counter()
    calls()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def load(model: LUVNet, spec: BackendSpec) -> Backend:
    mode = resolve_mode(spec)
    cuda_graphs = mode in _CUDA_GRAPH_MODES
    # channels_last trunk: ~3x faster compiled convolutions on this CPU (resnet18, 64 px).
    runner = model_copy(model, spec.dtype, channels_last=True)
    compiled_encoder = torch.compile(EncoderGraph(runner), mode=mode, fullgraph=True, dynamic=False)
    compiled_head = torch.compile(HeadGraph(runner), mode=mode, fullgraph=True, dynamic=False)

    # CUDA-graph outputs live in static buffers that the next replay overwrites, and each
    # call must start a new step; a clone of [1, D] or [1, P] costs microseconds.
    @torch.inference_mode()
    def encode(frames: torch.Tensor) -> torch.Tensor:
        # Always the same strides: a layout change would fail the guards and recompile.
        frames = frames.contiguous(memory_format=torch.channels_last)
        if cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
            return compiled_encoder(frames).clone()
        return compiled_encoder(frames)

    @torch.inference_mode()
    def head(window: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
            logits, attention = compiled_head(window, mask)
            return logits.clone(), attention.clone()
        return compiled_head(window, mask)

    frames = torch.zeros(spec.frame_shape, device=spec.device, dtype=spec.dtype)
    window = torch.zeros(1, spec.window, model.embed_dim, device=spec.device, dtype=spec.dtype)
    full = torch.ones(1, spec.window, dtype=torch.bool, device=spec.device)
    padded = full.clone()
    padded[:, max(1, spec.window // 2) :] = False
    try:
        # The first call compiles; the rest warm up (CUDA graphs record on the second/third).
        encode_s = _timed(spec.device, lambda: [encode(frames) for _ in range(WARMUP_CALLS)])
        head_s = _timed(
            spec.device,
            lambda: [head(window, m) for _ in range(WARMUP_CALLS) for m in (padded, full)],
        )
    except Exception as err:  # compiler failures come in many types; report one line
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise LuvnetError(
            f"inductor backend: torch.compile failed on {spec.device} "
            f"({type(err).__name__}: {first[:300]}); use the eager backend"
        ) from err
    info = BackendInfo(
        name="inductor",
        device=str(spec.device),
        precision=spec.precision,
        image_size=spec.image_size,
        window=spec.window,
        embed_dim=model.embed_dim,
        details={
            "mode": mode,
            "cuda_graphs": cuda_graphs,
            "compile_encoder_s": round(encode_s, 3),
            "compile_head_s": round(head_s, 3),
        },
    )
    return Backend(info, encode, head, device=spec.device, dtype=spec.dtype)
