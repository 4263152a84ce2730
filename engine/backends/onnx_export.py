"""Encoder and head as two fixed-shape ONNX files, plus a JSON that says what to feed them.

Layout of an export directory::

    encoder.onnx      frames [1, 3, S, S] float32 -> embedding [1, D]
    head.onnx         embeddings [1, L, D] float32, mask [1, L] bool
                      -> logits [1, P], attention [1, P, L, N_a]
    luvnet-onnx.json  shapes, names, model id, preprocessing, patterns, file hashes

The JSON is written last, so its presence means the export is complete (the onnxruntime
backend relies on that for its cache). Both exporters need the ``onnx`` package. Two
exporters: ``torchscript`` (torch's legacy exporter, ``dynamo=False``; opsets 13-20;
deprecated upstream but working with torch 2.14) and ``dynamo`` (``torch.export`` based;
needs ``onnxscript``; opset 18 or newer, because it converts lower requests down from 18
and that conversion fails on the trunk's reductions).
"""

from __future__ import annotations

import copy
import hashlib
import warnings
from pathlib import Path
from typing import Any

import torch

from luvnet.engine.backends.modules import EncoderGraph, HeadGraph
from luvnet.engine.errors import LuvnetError
from luvnet.engine.files import atomic_path, read_versioned_json, write_json
from luvnet.engine.model.network import LUVNet

FORMAT = "luvnet-onnx"
FORMAT_VERSION = 1
META_FILE = "luvnet-onnx.json"
ENCODER_FILE = "encoder.onnx"
HEAD_FILE = "head.onnx"
EXPORTERS = ("torchscript", "dynamo")
DEFAULT_OPSET = 17
_OPSETS = {"torchscript": range(13, 21), "dynamo": range(18, 24)}


def _check_exporter(exporter: str, opset: int) -> None:
    if exporter not in EXPORTERS:
        raise LuvnetError(f"exporter: expected one of {', '.join(EXPORTERS)}, got {exporter!r}")
    allowed = _OPSETS[exporter]
    if opset not in allowed:
        hint = "; use --exporter torchscript for opsets below 18" if exporter == "dynamo" else ""
        raise LuvnetError(
            f"--opset: the {exporter} exporter writes opsets {allowed.start}-{allowed.stop - 1}, "
            f"got {opset}{hint}"
        )
    try:
        import onnx  # noqa: F401  (both exporters serialise through it)
    except ImportError as err:
        raise LuvnetError(
            "ONNX export needs the onnx package: pip install 'luvnet[onnx]' (or: pip install onnx)"
        ) from err
    if exporter == "dynamo":
        try:
            import onnxscript  # noqa: F401
        except ImportError as err:
            raise LuvnetError(
                "the dynamo ONNX exporter needs onnxscript: pip install onnxscript "
                "(or use --exporter torchscript)"
            ) from err


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _io(name: str, tensor: torch.Tensor, **extra: Any) -> dict[str, Any]:
    dtype = str(tensor.dtype).removeprefix("torch.")
    return {"name": name, "shape": list(tensor.shape), "dtype": dtype, **extra}


def _export_one(
    module: torch.nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    *,
    inputs: list[str],
    outputs: list[str],
    opset: int,
    exporter: str,
) -> None:
    # A temporary beside the file, unique per writer: concurrent exporters never collide.
    with atomic_path(path) as tmp, warnings.catch_warnings():
        # The legacy exporter announces its deprecation and traces with TracerWarnings.
        warnings.simplefilter("ignore")
        options: dict[str, Any] = {"dynamo": exporter == "dynamo"}
        if exporter == "dynamo":
            options.update(external_data=False, verbose=False)
        torch.onnx.export(
            module,
            args,
            str(tmp),
            input_names=inputs,
            output_names=outputs,
            opset_version=opset,
            **options,
        )


def export_onnx(
    model: LUVNet,
    out_dir: str | Path,
    *,
    image_size: int | None = None,
    window: int | None = None,
    opset: int = DEFAULT_OPSET,
    exporter: str = "torchscript",
    model_id: str | None = None,
) -> dict[str, Any]:
    """Write ``encoder.onnx``, ``head.onnx`` and ``luvnet-onnx.json``; returns the JSON."""
    _check_exporter(exporter, opset)
    config = model.config
    size = image_size or config.preprocess.image_size
    length = window or config.clip_length
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / META_FILE).unlink(missing_ok=True)  # incomplete until rewritten at the end
    cpu = copy.deepcopy(model).cpu().float().eval()
    frames = torch.zeros(1, 3, size, size)
    with torch.inference_mode():
        embedding = cpu.embed(frames)
    embeddings = torch.zeros(1, length, cpu.embed_dim)
    mask = torch.ones(1, length, dtype=torch.bool)
    with torch.inference_mode():
        logits, attention = cpu.head(embeddings, mask)
    common = {"opset": opset, "exporter": exporter}
    _export_one(
        EncoderGraph(cpu),
        (frames,),
        out / ENCODER_FILE,
        inputs=["frames"],
        outputs=["embedding"],
        opset=opset,
        exporter=exporter,
    )
    _export_one(
        HeadGraph(cpu),
        (embeddings, mask),
        out / HEAD_FILE,
        inputs=["embeddings", "mask"],
        outputs=["logits", "attention"],
        opset=opset,
        exporter=exporter,
    )
    pre = config.preprocess
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_id": model_id,
        "backbone": config.backbone,
        "variant": config.variant,
        "torch_version": torch.__version__,
        **common,
        "encoder": {
            "file": ENCODER_FILE,
            "sha256": _sha256(out / ENCODER_FILE),
            "inputs": [_io("frames", frames, layout="NCHW")],
            "outputs": [_io("embedding", embedding)],
        },
        "head": {
            "file": HEAD_FILE,
            "sha256": _sha256(out / HEAD_FILE),
            "inputs": [
                _io("embeddings", embeddings, meaning="encoder embeddings, oldest frame first"),
                _io("mask", mask, meaning="True = real frame, False = padding"),
            ],
            "outputs": [
                _io("logits", logits, meaning="scores = sigmoid(logits), one per pattern"),
                _io("attention", attention, meaning="[batch, pattern, frame, head] weights"),
            ],
        },
        "preprocessing": {
            "image_size": size,
            "steps": [
                "convert to one-channel grey uint8",
                "crop to the imaging sector (crop_box, or detected from moving pixels)",
                "resize keeping the aspect ratio, letterbox onto a black S x S canvas",
                "intensity 'sector': each frame's pixels >= 4 to mean 40, std 28 (grey levels), "
                "clamped to 0..255, the others 0 (luvnet.engine.data.preprocess."
                "sector_standardize); 'none': as is",
                "replicate grey into 3 channels",
                "x / 255, then (x - mean[c]) / std[c]",
            ],
            "intensity": pre.intensity,
            "mean": list(pre.mean),
            "std": list(pre.std),
            "crop_box": list(pre.crop_box) if pre.crop_box else None,
        },
        "window": length,
        "clip_step": config.clip_step,
        "patterns": list(config.pattern_names),
        "thresholds": list(config.thresholds),
    }
    write_json(out / META_FILE, meta)
    return meta


def read_onnx_meta(directory: str | Path) -> dict[str, Any]:
    """The validated ``luvnet-onnx.json`` of an export directory."""
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise LuvnetError(f"{path}: missing; expected the output of `luvnet export --format onnx`")
    meta = read_versioned_json(
        path,
        format=FORMAT,
        version=FORMAT_VERSION,
        expected=f'an ONNX export description ("format": "{FORMAT}")',
    )
    for part in ("encoder", "head"):
        onnx_file = Path(directory) / meta[part]["file"]
        if not onnx_file.is_file():
            raise LuvnetError(f"{onnx_file}: missing (listed in {path})")
    return meta
