"""``luvnet export --format onnx``: files onnxruntime runs with eager's outputs, clear errors."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from luvnet.engine.backends.onnx_export import (
    ENCODER_FILE,
    HEAD_FILE,
    META_FILE,
    export_onnx,
    read_onnx_meta,
)
from luvnet.engine.errors import LuvnetError
from luvnet.engine.model.checkpoint import load_checkpoint, save_checkpoint
from luvnet.engine.model.config import MODEL_VARIANTS, PreprocessConfig
from luvnet.engine.model.network import VARIANT_BUILDERS, build_luvnet
from tests.engine.model.test_model import randomize_batchnorm

HAS_ONNX = importlib.util.find_spec("onnx") is not None
HAS_ORT = HAS_ONNX and importlib.util.find_spec("onnxruntime") is not None
HAS_ONNXSCRIPT = importlib.util.find_spec("onnxscript") is not None
needs_onnx = pytest.mark.skipif(
    not HAS_ONNX, reason="onnx not installed (pip install 'luvnet[onnx]')"
)
needs_ort = pytest.mark.skipif(
    not HAS_ORT, reason="onnx/onnxruntime not installed (pip install 'luvnet[onnx]')"
)
SIZE = 64


def run_export(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "luvnet.cli", "export", *args],
        capture_output=True,
        text=True,
    )


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = build_luvnet("resnet18", kernel_size=5, fusion_hidden=64).eval()
    randomize_batchnorm(model)
    config = model.config.replace(preprocess=PreprocessConfig(image_size=SIZE))
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "small", config=config)


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "export"
    result = run_export("--format", "onnx", "--checkpoint", str(checkpoint), "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out, result.stdout


def run_onnx(directory, frames: np.ndarray, window: np.ndarray, mask: np.ndarray):
    import onnxruntime as ort

    meta = read_onnx_meta(directory)
    encoder = ort.InferenceSession(
        str(directory / meta["encoder"]["file"]), providers=["CPUExecutionProvider"]
    )
    head = ort.InferenceSession(
        str(directory / meta["head"]["file"]), providers=["CPUExecutionProvider"]
    )
    (embedding,) = encoder.run(["embedding"], {"frames": frames})
    logits, attention = head.run(["logits", "attention"], {"embeddings": window, "mask": mask})
    return embedding, logits, attention


@needs_onnx
def test_cli_writes_both_graphs_and_a_description(exported, checkpoint):
    out, stdout = exported
    for name in (ENCODER_FILE, HEAD_FILE, META_FILE):
        assert (out / name).is_file(), f"missing {name}"
    meta = json.loads((out / META_FILE).read_text())
    loaded = load_checkpoint(checkpoint)
    assert meta["model_id"] == loaded.model_id
    assert meta["opset"] == 17 and meta["exporter"] == "torchscript"
    frames = meta["encoder"]["inputs"][0]
    assert (frames["name"], frames["shape"], frames["dtype"]) == (
        "frames",
        [1, 3, SIZE, SIZE],
        "float32",
    )
    embedding = {"name": "embedding", "shape": [1, 512], "dtype": "float32"}
    assert meta["encoder"]["outputs"][0] == embedding
    names = [io["name"] for io in meta["head"]["inputs"]]
    assert names == ["embeddings", "mask"]
    assert [io["shape"] for io in meta["head"]["inputs"]] == [[1, 30, 512], [1, 30]]
    assert meta["head"]["inputs"][1]["dtype"] == "bool"
    outputs = {io["name"]: io["shape"] for io in meta["head"]["outputs"]}
    assert outputs == {"logits": [1, 4], "attention": [1, 4, 30, 8]}
    pre = meta["preprocessing"]
    assert pre["image_size"] == SIZE and pre["mean"] == [0.485, 0.456, 0.406]
    assert meta["patterns"] == list(loaded.config.pattern_names)
    if HAS_ORT:
        assert "onnxruntime parity vs eager fp32: logits" in stdout
    else:
        assert "parity check skipped" in stdout


@needs_ort
def test_onnxruntime_runs_the_export_like_eager(exported, checkpoint):
    out, _ = exported
    model = load_checkpoint(checkpoint).model
    gen = torch.Generator().manual_seed(3)
    frames = torch.randn(1, 3, SIZE, SIZE, generator=gen)
    window = torch.rand(1, 30, 512, generator=gen) * 3
    mask = torch.ones(1, 30, dtype=torch.bool)
    mask[:, 17:] = False
    embedding, logits, attention = run_onnx(out, frames.numpy(), window.numpy(), mask.numpy())
    with torch.inference_mode():
        want_embedding = model.embed(frames).numpy()
        want_logits, want_attention = (t.numpy() for t in model.head(window, mask))
    assert np.abs(embedding - want_embedding).max() <= 1e-4 * np.abs(want_embedding).max()
    assert np.abs(logits - want_logits).max() <= 1e-4
    assert np.abs(attention - want_attention).max() <= 1e-5
    assert (attention[0, :, 17:] == 0).all(), "padded frames got attention"


@needs_ort
@pytest.mark.parametrize("variant", [v for v in MODEL_VARIANTS if v != "luvnet"])
def test_every_variant_exports(variant, tmp_path):
    torch.manual_seed(0)
    model = VARIANT_BUILDERS[variant]("resnet18").eval()
    meta = export_onnx(model, tmp_path, image_size=SIZE, window=10)
    gen = torch.Generator().manual_seed(4)
    frames = torch.randn(1, 3, SIZE, SIZE, generator=gen)
    window = torch.rand(1, 10, 512, generator=gen)
    mask = torch.ones(1, 10, dtype=torch.bool)
    _, logits, attention = run_onnx(tmp_path, frames.numpy(), window.numpy(), mask.numpy())
    with torch.inference_mode():
        want_logits, want_attention = model.head(window, mask)
    assert meta["variant"] == variant
    assert list(attention.shape) == meta["head"]["outputs"][1]["shape"]
    assert np.abs(logits - want_logits.numpy()).max() <= 1e-4


@pytest.mark.skipif(not (HAS_ORT and HAS_ONNXSCRIPT), reason="needs onnxscript and onnxruntime")
@pytest.mark.slow
def test_dynamo_exporter_at_opset_18(checkpoint, tmp_path):
    model = load_checkpoint(checkpoint).model
    meta = export_onnx(model, tmp_path, opset=18, exporter="dynamo")
    assert meta["exporter"] == "dynamo" and meta["opset"] == 18
    frames = torch.zeros(1, 3, SIZE, SIZE)
    window = torch.ones(1, 30, 512)
    mask = torch.ones(1, 30, dtype=torch.bool)
    _, logits, _ = run_onnx(tmp_path, frames.numpy(), window.numpy(), mask.numpy())
    with torch.inference_mode():
        assert np.abs(logits - model.head(window, mask)[0].numpy()).max() <= 1e-4


def test_dynamo_exporter_refuses_opset_17_in_one_line(checkpoint, tmp_path):
    result = run_export(
        "--format", "onnx", "--checkpoint", str(checkpoint), "--out", str(tmp_path),
        "--exporter", "dynamo",
    )  # fmt: skip
    assert result.returncode == 2
    assert "the dynamo exporter writes opsets 18-23, got 17" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_missing_checkpoint_is_one_line(tmp_path):
    result = run_export(
        "--format", "onnx", "--checkpoint", str(tmp_path / "nope"), "--out", str(tmp_path)
    )
    assert result.returncode == 2
    assert "no such directory" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.skipif(HAS_ONNX, reason="onnx is installed here")
def test_export_without_onnx_gives_the_install_hint(checkpoint, tmp_path):
    result = run_export("--format", "onnx", "--checkpoint", str(checkpoint), "--out", str(tmp_path))
    assert result.returncode == 2
    assert "pip install 'luvnet[onnx]'" in result.stderr


def test_reading_a_directory_without_an_export(tmp_path):
    with pytest.raises(LuvnetError, match=f"{META_FILE}: missing"):
        read_onnx_meta(tmp_path)
