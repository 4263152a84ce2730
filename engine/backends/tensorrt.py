"""TensorRT through torch-tensorrt's dynamo path: static shapes, engines cached on disk.

NOT RUN in this repository's CI or on the machine it was written on (no GPU, and TensorRT
cannot be installed there); see docs/backends.md for how to verify it on a GPU machine.

Per graph (encoder [1, 3, S, S]; head [1, L, D] + bool mask [1, L]): ``torch.export``,
then ``torch_tensorrt.dynamo.compile(..., min_block_size=1)`` (small graphs otherwise fall
back to PyTorch in pieces, docs/model.md, "Known pitfalls"), then ``torch_tensorrt.save(...,
output_format="exported_program")`` into ``<cache>/trt/<key>/`` and
``torch_tensorrt.load(...).module()`` on the next start. The key covers the model
fingerprint, GPU name and compute capability, TensorRT / torch-tensorrt / torch versions,
precision and shapes. The TensorRT timing cache sits next to it, per GPU and TensorRT
version (torch-tensorrt's default is under /tmp).

fp16 across torch-tensorrt versions (docs/model.md, "Known pitfalls"): the module and its float
inputs are cast to half in every version, so with explicit typing (the default from 2.10, the only
mode from 2.13, where ``enabled_precisions`` is no longer a parameter and is ignored) the engine is
fp16 by construction; up to 2.9 (weak typing) ``enabled_precisions={torch.half}`` is also passed,
because without it TensorRT may not pick fp16 kernels. Keyword arguments the installed ``compile``
does not declare are dropped (and logged), never passed blindly.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from luvnet.engine.backends.base import Backend, BackendInfo, BackendSpec
from luvnet.engine.backends.cache import cache_key, model_fingerprint, write_facts
from luvnet.engine.backends.modules import EncoderGraph, HeadGraph, model_copy
from luvnet.engine.errors import LuvnetError
from luvnet.engine.model.network import LUVNet

log = logging.getLogger(__name__)

WARMUP_CALLS = 3
# First torch-tensorrt minor whose default is explicit typing (enabled_precisions rejected).
EXPLICIT_TYPING_FROM = (2, 10)


def _minor(version: str) -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", version)
    if not match:
        raise LuvnetError(f"cannot parse version {version!r}")
    return int(match.group(1)), int(match.group(2))


def install_hint() -> str:
    major, minor = _minor(torch.__version__)
    return (
        f"TensorRT backend needs torch-tensorrt matching torch {major}.{minor}: "
        f"pip install 'luvnet[tensorrt]' 'torch-tensorrt=={major}.{minor}.*' "
        "(pip fetches TensorRT's own wheels from NVIDIA's package index)"
    )


def import_torch_tensorrt() -> ModuleType:
    try:
        import torch_tensorrt
    except ImportError as err:
        raise LuvnetError(install_hint()) from err
    except OSError as err:  # installed, but its shared libraries do not load
        raise LuvnetError(f"torch-tensorrt does not load ({err}); {install_hint()}") from err
    if _minor(torch_tensorrt.__version__) != _minor(torch.__version__):
        raise LuvnetError(
            f"torch-tensorrt {torch_tensorrt.__version__} does not match torch "
            f"{torch.__version__}; {install_hint()}"
        )
    return torch_tensorrt


def accepted_parameters(function: Callable[..., Any]) -> set[str]:
    """Names ``function`` declares (not what a ``**kwargs`` would swallow)."""
    parameters = inspect.signature(function).parameters.values()
    return {p.name for p in parameters if p.kind is not inspect.Parameter.VAR_KEYWORD}


def precision_options(
    version: tuple[int, int], accepted: set[str], precision: str
) -> dict[str, Any]:
    """Compile options for ``precision``; the caller also casts the module and inputs."""
    if precision == "fp32":
        return {}
    if version < EXPLICIT_TYPING_FROM:
        return {"enabled_precisions": {torch.half}}
    # Explicit typing: the half module decides; enabled_precisions is rejected (2.10-2.12)
    # or ignored (2.13+), so it is never passed.
    return {"use_explicit_typing": True} if "use_explicit_typing" in accepted else {}


def compile_options(
    version: tuple[int, int],
    accepted: set[str],
    *,
    precision: str,
    device: torch.device,
    timing_cache: Path,
) -> dict[str, Any]:
    """Every option we want, filtered to those the installed compile declares."""
    wanted: dict[str, Any] = {
        "device": device,
        "min_block_size": 1,
        "timing_cache_path": str(timing_cache),
        **precision_options(version, accepted, precision),
    }
    dropped = sorted(set(wanted) - accepted)
    if dropped:
        log.info("tensorrt: this torch-tensorrt has no option(s) %s; not passing them", dropped)
    return {k: v for k, v in wanted.items() if k in accepted}


def _gpu_facts(device: torch.device) -> dict[str, str]:
    props = torch.cuda.get_device_properties(device)
    try:
        import tensorrt

        trt_version = tensorrt.__version__
    except ImportError:
        trt_version = "unknown"
    return {
        "gpu": props.name,
        "compute_capability": f"{props.major}.{props.minor}",
        "tensorrt": trt_version,
    }


def _load_saved(trt: ModuleType, path: Path) -> Callable[..., Any]:
    loader = getattr(trt, "load", None) or torch.export.load
    program = loader(str(path))
    return program.module() if hasattr(program, "module") else program


def _build(
    trt: ModuleType,
    module: torch.nn.Module,
    args: tuple[torch.Tensor, ...],
    options: dict[str, Any],
) -> Callable[..., Any]:
    program = torch.export.export(module, args)
    return trt.dynamo.compile(program, list(args), **options)


def _save(
    trt: ModuleType, compiled: Callable[..., Any], args: tuple[torch.Tensor, ...], path: Path
) -> None:
    """Cache a built program; a failure costs a rebuild next start, never this one."""
    # Save beside, then rename: a crash never leaves a half-written engine under the key.
    partial = path.parent / f".partial-{os.getpid()}"
    try:
        partial.mkdir(parents=True, exist_ok=True)
        trt.save(
            compiled, str(partial / path.name), output_format="exported_program", inputs=list(args)
        )
        (partial / path.name).replace(path)
    except Exception as err:  # noqa: BLE001 - e.g. no C++ runtime: saving needs it
        log.warning("tensorrt: cannot cache %s (%s); it is rebuilt on the next start", path, err)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _first(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


def load(model: LUVNet, spec: BackendSpec) -> Backend:
    trt = import_torch_tensorrt()
    if spec.device.type != "cuda":
        raise LuvnetError(f"tensorrt backend needs a CUDA device, got {spec.device}")
    version = _minor(trt.__version__)
    facts = {
        "model": model_fingerprint(model),
        **_gpu_facts(spec.device),
        "torch_tensorrt": trt.__version__,
        "torch": torch.__version__,
        "precision": spec.precision,
        "image_size": spec.image_size,
        "window": spec.window,
    }
    root = spec.cache_dir / "trt"
    directory = root / cache_key(facts)
    write_facts(directory, facts)
    # TensorRT timing caches are valid per GPU and TensorRT version (its builder docs).
    label = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{facts['gpu']}-trt{facts['tensorrt']}")
    timing = root / "timing" / f"{label}.bin"
    timing.parent.mkdir(parents=True, exist_ok=True)
    options = compile_options(
        version,
        accepted_parameters(trt.dynamo.compile),
        precision=spec.precision,
        device=spec.device,
        timing_cache=timing,
    )
    frames = torch.zeros(spec.frame_shape, device=spec.device, dtype=spec.dtype)
    window = torch.zeros(1, spec.window, model.embed_dim, device=spec.device, dtype=spec.dtype)
    mask = torch.ones(1, spec.window, dtype=torch.bool, device=spec.device)
    example_args = {"encoder": (frames,), "head": (window, mask)}
    graphs: dict[str, torch.nn.Module] = {}

    def graph(name: str) -> torch.nn.Module:
        # The half copy of the model is only needed to build, not to load a cached engine.
        if not graphs:
            runner = model_copy(model, spec.dtype)
            graphs.update(encoder=EncoderGraph(runner), head=HeadGraph(runner))
        return graphs[name]

    engines: dict[str, Callable[..., Any]] = {}
    details: dict[str, Any] = {"cache_dir": str(directory), "options": sorted(options)}
    for name, args in example_args.items():
        path = directory / f"{name}.pt2"  # torch.export archives: .pt2
        start = time.perf_counter()
        engine, hit = None, False
        if path.is_file():
            try:
                engine, hit = _load_saved(trt, path), True
            except Exception as err:  # noqa: BLE001 - stale or corrupt: rebuild, never fail
                log.warning("tensorrt: cannot load %s (%s); rebuilding", path, err)
        if engine is None:
            try:
                engine = _build(trt, graph(name), args, options)
            except Exception as err:
                first = (str(err).strip().splitlines() or [""])[0][:300]
                raise LuvnetError(
                    f"tensorrt backend: building the {name} engine failed "
                    f"({type(err).__name__}: {first}); use the inductor or eager backend"
                ) from err
            _save(trt, engine, args, path)
        with torch.inference_mode():
            for _ in range(WARMUP_CALLS):
                engine(*args)
        torch.cuda.synchronize(spec.device)
        engines[name] = engine
        details[f"{name}_cache_hit"] = hit
        details[f"{name}_s"] = round(time.perf_counter() - start, 3)

    @torch.inference_mode()
    def encode(frames: torch.Tensor) -> torch.Tensor:
        return _first(engines["encoder"](frames))

    @torch.inference_mode()
    def head(window: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, attention = engines["head"](window, mask)
        return logits, attention

    info = BackendInfo(
        name="tensorrt",
        device=str(spec.device),
        precision=spec.precision,
        image_size=spec.image_size,
        window=spec.window,
        embed_dim=model.embed_dim,
        details={**details, "torch_tensorrt": trt.__version__, "tensorrt": facts["tensorrt"]},
    )
    return Backend(info, encode, head, device=spec.device, dtype=spec.dtype)
