"""ONNX Runtime: the exported encoder and head, run by onnxruntime.

CPUExecutionProvider on the CPU; CUDAExecutionProvider (onnxruntime-gpu) when the device is
CUDA and the provider exists. fp32 only (the export is fp32). The ONNX files are exported
once per model into ``<cache>/onnx/<key>/`` and reused on the next start.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import ModuleType

import torch

from luvnet.engine.backends.base import Backend, BackendInfo, BackendSpec
from luvnet.engine.backends.cache import cache_key, model_fingerprint, write_facts
from luvnet.engine.backends.onnx_export import DEFAULT_OPSET, META_FILE, export_onnx, read_onnx_meta
from luvnet.engine.errors import LuvnetError
from luvnet.engine.model.network import LUVNet

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'luvnet[onnx]' (or: pip install onnx onnxruntime)"


def import_onnxruntime() -> ModuleType:
    try:
        import onnxruntime
    except ImportError as err:
        raise LuvnetError(f"the onnxruntime backend needs onnxruntime: {INSTALL_HINT}") from err
    return onnxruntime


def _providers(ort: ModuleType, device: torch.device) -> list[str]:
    if device.type == "cpu":
        return ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise LuvnetError(
        f"onnxruntime backend: no execution provider for device {device} "
        f"(available: {', '.join(ort.get_available_providers())}); for CUDA: "
        "pip install onnxruntime-gpu"
    )


def open_exported(directory: str | Path, spec: BackendSpec) -> Backend:
    """A backend over an export directory (no parity check here: the caller does that)."""
    ort = import_onnxruntime()
    if spec.precision != "fp32":
        raise LuvnetError(f"onnxruntime backend runs fp32 only, got {spec.precision}")
    directory = Path(directory)
    meta = read_onnx_meta(directory)
    frames_io = meta["encoder"]["inputs"][0]
    window_io = meta["head"]["inputs"][0]
    want_frames = list(spec.frame_shape)
    if frames_io["shape"] != want_frames or window_io["shape"][1] != spec.window:
        raise LuvnetError(
            f"{directory / META_FILE}: exported for frames {frames_io['shape']} and window "
            f"{window_io['shape'][1]}, expected frames {want_frames} and window {spec.window}"
        )
    providers = _providers(ort, spec.device)
    options = ort.SessionOptions()
    # Same thread budget as torch, so auto's timings compare like with like.
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    encoder = ort.InferenceSession(
        str(directory / meta["encoder"]["file"]), options, providers=providers
    )
    head_session = ort.InferenceSession(
        str(directory / meta["head"]["file"]), options, providers=providers
    )
    device = spec.device

    def encode(frames: torch.Tensor) -> torch.Tensor:
        feed = {"frames": frames.detach().cpu().contiguous().numpy()}
        return torch.from_numpy(encoder.run(["embedding"], feed)[0]).to(device)

    def head(window: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feed = {
            "embeddings": window.detach().cpu().contiguous().numpy(),
            "mask": mask.detach().cpu().contiguous().numpy(),
        }
        logits, attention = head_session.run(["logits", "attention"], feed)
        return torch.from_numpy(logits).to(device), torch.from_numpy(attention).to(device)

    info = BackendInfo(
        name="onnxruntime",
        device=str(spec.device),
        precision=spec.precision,
        image_size=spec.image_size,
        window=spec.window,
        embed_dim=window_io["shape"][2],
        details={
            "providers": encoder.get_providers(),
            "onnxruntime_version": ort.__version__,
            "onnx_dir": str(directory),
            "opset": meta["opset"],
            "exporter": meta["exporter"],
        },
    )
    return Backend(info, encode, head, device=spec.device, dtype=torch.float32)


def load(model: LUVNet, spec: BackendSpec) -> Backend:
    import_onnxruntime()  # fail before spending time on an export
    if spec.precision != "fp32":
        raise LuvnetError(f"onnxruntime backend runs fp32 only, got {spec.precision}")
    facts = {
        "model": model_fingerprint(model),
        "image_size": spec.image_size,
        "window": spec.window,
        "opset": DEFAULT_OPSET,
        "exporter": "torchscript",
        "torch": torch.__version__,
    }
    directory = spec.cache_dir / "onnx" / cache_key(facts)
    cached = (directory / META_FILE).is_file()
    if not cached:
        log.info("onnxruntime: exporting the model to %s", directory)
        write_facts(directory, facts)
        export_onnx(model, directory, image_size=spec.image_size, window=spec.window)
    backend = open_exported(directory, spec)
    details = {**backend.info.details, "cache_hit": cached}
    return backend.with_info(details=details)
