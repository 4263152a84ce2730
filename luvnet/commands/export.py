"""``luvnet export``: a checkpoint's encoder and head as fixed-shape ONNX files.

usage: luvnet export --format onnx --checkpoint DIR --out DIR [--opset 17]
       [--exporter torchscript|dynamo] [--no-check]

Writes encoder.onnx, head.onnx and luvnet-onnx.json (shapes, names, model id,
preprocessing) into --out. When onnxruntime is installed, the files are then run on the
fixed parity input and compared with eager PyTorch; a difference past 1e-3 is an error.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from luvnet.engine.backends.onnx_export import DEFAULT_OPSET, EXPORTERS

HELP = "export encoder and head to ONNX"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", required=True, choices=("onnx",), help="output format")
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory")
    parser.add_argument("--out", required=True, help="output directory (created if missing)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset")
    parser.add_argument(
        "--exporter",
        default="torchscript",
        choices=EXPORTERS,
        help="torchscript: torch's legacy exporter; dynamo: the new one (needs onnxscript)",
    )
    parser.add_argument("--no-check", action="store_true", help="skip the onnxruntime parity check")


def run(args: argparse.Namespace) -> int:
    from luvnet.engine.backends.base import BackendSpec
    from luvnet.engine.backends.onnx_export import export_onnx
    from luvnet.engine.backends.parity import TOLERANCES, reference_outputs, verify
    from luvnet.engine.errors import LuvnetError
    from luvnet.engine.model.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(args.checkpoint)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise LuvnetError(f"--out {out}: exists and is not a directory")
    meta = export_onnx(
        checkpoint.model,
        out,
        opset=args.opset,
        exporter=args.exporter,
        model_id=checkpoint.model_id,
    )
    for part in ("encoder", "head"):
        path = out / meta[part]["file"]
        shapes = ", ".join(f"{io['name']} {io['shape']}" for io in meta[part]["inputs"])
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB; inputs {shapes})")
    print(f"wrote {out / 'luvnet-onnx.json'} (model {checkpoint.model_id}, opset {meta['opset']})")
    if args.no_check:
        return 0
    try:
        from luvnet.engine.backends.ort import import_onnxruntime, open_exported

        import_onnxruntime()
    except LuvnetError as err:
        print(f"parity check skipped: {err}")
        return 0
    spec = BackendSpec(
        device=next(checkpoint.model.parameters()).device,
        precision="fp32",
        image_size=meta["preprocessing"]["image_size"],
        window=meta["window"],
        cache_dir=out,
    )
    reference = reference_outputs(checkpoint.model, spec.image_size, spec.window)
    backend = verify(open_exported(out, spec), reference, TOLERANCES["fp32"])
    parity = backend.info.parity
    assert parity is not None  # verify() attaches it
    print(f"onnxruntime {parity.summary()}")
    return 0
