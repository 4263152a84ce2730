"""``create_backend``: validate the request, load the named backend, check its parity."""

from __future__ import annotations

import copy
import importlib
import logging
import time
from pathlib import Path

import torch

from luvnet.engine.backends.auto import select as select_auto
from luvnet.engine.backends.base import PRECISIONS, Backend, BackendSpec
from luvnet.engine.backends.cache import default_cache_dir
from luvnet.engine.backends.parity import (
    TOLERANCES,
    Reference,
    Tolerance,
    reference_outputs,
    verify,
)
from luvnet.engine.errors import LuvnetError
from luvnet.engine.model.network import LUVNet
from luvnet.engine.runtime import resolve_device

log = logging.getLogger(__name__)

# name -> module with ``load(model, spec) -> Backend``; imported only when chosen, so a
# missing optional dependency breaks only its own backend (style item 6).
LOADERS: dict[str, str] = {
    "eager": "luvnet.engine.backends.eager",
    "inductor": "luvnet.engine.backends.inductor",
    "tensorrt": "luvnet.engine.backends.tensorrt",
    "onnxruntime": "luvnet.engine.backends.ort",
}
BACKEND_NAMES: tuple[str, ...] = ("auto", *LOADERS)


def make_spec(
    name: str,
    model: LUVNet,
    *,
    device: str | torch.device,
    precision: str,
    image_size: int | None,
    window: int | None,
    cache_dir: str | Path | None,
    inductor_mode: str | None,
) -> BackendSpec:
    if name not in BACKEND_NAMES:
        raise LuvnetError(f"backend: expected one of {', '.join(BACKEND_NAMES)}, got {name!r}")
    if precision not in PRECISIONS:
        raise LuvnetError(f"precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    resolved = resolve_device(device, option="device")
    if precision == "fp16" and resolved.type == "cpu":
        raise LuvnetError("precision fp16 needs a CUDA device; on the CPU use fp32")
    size = image_size or model.config.preprocess.image_size
    length = window or model.config.clip_length
    if size < 32:
        raise LuvnetError(f"image size: expected at least 32, got {size}")
    if length < 1:
        raise LuvnetError(f"window: expected at least 1 frame, got {length}")
    return BackendSpec(
        device=resolved,
        precision=precision,
        image_size=size,
        window=length,
        cache_dir=Path(cache_dir) if cache_dir is not None else default_cache_dir(),
        inductor_mode=inductor_mode,
    )


def _reference_model(model: LUVNet, device: torch.device) -> LUVNet:
    """The caller's model if it is already eval fp32 on ``device``, else such a copy."""
    param = next(model.parameters())
    if not model.training and param.device == device and param.dtype == torch.float32:
        return model
    return copy.deepcopy(model).eval().to(device=device, dtype=torch.float32)


def load_verified(
    name: str, model: LUVNet, spec: BackendSpec, reference: Reference, tolerance: Tolerance
) -> Backend:
    """Load one named backend, time it, and attach its parity figures (or raise)."""
    loader = importlib.import_module(LOADERS[name])
    start = time.perf_counter()
    backend = loader.load(model, spec)
    backend = backend.with_info(load_s=round(time.perf_counter() - start, 3))
    return verify(backend, reference, tolerance)


def create_backend(
    name: str,
    model: LUVNet,
    *,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    image_size: int | None = None,
    window: int | None = None,
    cache_dir: str | Path | None = None,
    tolerance: Tolerance | None = None,
    inductor_mode: str | None = None,
) -> Backend:
    """A verified backend for ``model`` on fixed shapes.

    ``name``: auto | eager | inductor | tensorrt | onnxruntime. ``image_size`` and
    ``window`` default to the model config's. ``cache_dir`` is the luvnet cache root
    (default ``$XDG_CACHE_HOME/luvnet`` or ``~/.cache/luvnet``). ``tolerance`` overrides the
    per-precision parity tolerance. ``inductor_mode`` is a torch.compile mode (default:
    ``reduce-overhead`` on CUDA, plain inductor on the CPU). The caller's model is never
    modified. Every failure a user can cause or fix is a one-line LuvnetError.
    """
    spec = make_spec(
        name,
        model,
        device=device,
        precision=precision,
        image_size=image_size,
        window=window,
        cache_dir=cache_dir,
        inductor_mode=inductor_mode,
    )
    base = _reference_model(model, spec.device)
    reference = reference_outputs(base, spec.image_size, spec.window)
    tolerance = tolerance or TOLERANCES[spec.precision]
    if name == "auto":
        backend = select_auto(
            spec, reference, lambda chosen: load_verified(chosen, base, spec, reference, tolerance)
        )
    else:
        backend = load_verified(name, base, spec, reference, tolerance)
    log.info("backend: %s", backend.info.summary())
    return backend
