"""Checkpoints: tensors in safetensors plus a JSON config; nothing is ever unpickled.

Layout: a directory holding ``model.safetensors`` and ``config.json``::

    {"format": "luvnet-checkpoint", "format_version": 1,
     "model": {ModelConfig as JSON}, "provenance": {...}, "metrics": {...}}

``provenance`` records the data manifest hash, the command, the date and versions. The
model id published by the streamer is the first 12 hex digits of the SHA-256 of
``model.safetensors``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from luvnet.engine.errors import LuvnetError
from luvnet.engine.files import atomic_open, atomic_path, read_versioned_json
from luvnet.engine.model.config import ModelConfig
from luvnet.engine.model.network import LUVNet, build_model

FORMAT = "luvnet-checkpoint"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
# A safetensors file starts with a little-endian u64 header length, then a JSON header.
_MAX_HEADER_BYTES = 100 * 1024 * 1024


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model (eval mode) and what travelled with it."""

    model: LUVNet
    config: ModelConfig
    model_id: str
    path: Path
    provenance: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_provenance(manifest: Path | None = None) -> dict[str, Any]:
    return {
        "manifest_sha256": file_sha256(manifest) if manifest else None,
        "command": " ".join(sys.argv),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
    }


def save_checkpoint(
    model: LUVNet,
    directory: str | Path,
    *,
    config: ModelConfig | None = None,
    provenance: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Write ``directory/model.safetensors`` and ``directory/config.json``; returns the dir."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(directory / WEIGHTS_FILE) as weights_tmp:  # never half a file
        save_file(state, str(weights_tmp), metadata={"format": FORMAT})
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": (config or model.config).to_dict(),
        "provenance": provenance if provenance is not None else default_provenance(),
        "metrics": metrics or {},
    }
    # Not write_json: a diverged run's NaN loss in ``metrics`` must not stop its checkpoint.
    with atomic_open(directory / CONFIG_FILE) as handle:
        handle.write(json.dumps(document, indent=2) + "\n")
    return directory


def _checkpoint_dir(path: str | Path) -> Path:
    path = Path(path)
    if path.is_file() and path.name in (WEIGHTS_FILE, CONFIG_FILE):
        path = path.parent
    if path.is_file():
        raise LuvnetError(
            f"checkpoint {path}: expected a directory with {WEIGHTS_FILE} and {CONFIG_FILE}, "
            "got a single file (luvnet never loads pickled .pt/.pth checkpoints)"
        )
    if not path.is_dir():
        raise LuvnetError(f"checkpoint {path}: no such directory")
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        if not (path / name).is_file():
            raise LuvnetError(f"checkpoint {path}: missing {name}")
    return path


def read_config(path: str | Path) -> tuple[ModelConfig, dict[str, Any]]:
    """Validate and parse ``config.json``; returns (ModelConfig, whole document)."""
    config_path = _checkpoint_dir(path) / CONFIG_FILE
    document = read_versioned_json(
        config_path,
        format=FORMAT,
        version=FORMAT_VERSION,
        expected=f'a checkpoint config ("format": "{FORMAT}")',
    )
    try:
        config = ModelConfig.from_dict(document.get("model") or {})
    except (TypeError, ValueError) as err:
        raise LuvnetError(f"{config_path}: {err}") from err
    return config, document


def _check_safetensors_header(path: Path) -> None:
    """Refuse anything that is not a safetensors file before any parser touches it."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(9)
    if len(head) < 9:
        raise LuvnetError(f"{path}: not a safetensors file ({size} bytes)")
    (header_len,) = struct.unpack("<Q", head[:8])
    if header_len > min(size - 8, _MAX_HEADER_BYTES) or head[8:9] != b"{":
        kind = "a pickle" if head[:1] == b"\x80" else "not a safetensors file"
        raise LuvnetError(f"{path}: {kind}; refusing to load it (luvnet never unpickles)")


def load_checkpoint(
    path: str | Path,
    *,
    expect_backbone: str | None = None,
    map_location: str | torch.device = "cpu",
) -> Checkpoint:
    """Load and validate a checkpoint; every mismatch is a LuvnetError naming the key."""
    directory = _checkpoint_dir(path)
    config, document = read_config(directory)
    if expect_backbone is not None and config.backbone != expect_backbone:
        raise LuvnetError(
            f"checkpoint {directory}: backbone is {config.backbone!r}, expected {expect_backbone!r}"
        )
    weights_path = directory / WEIGHTS_FILE
    _check_safetensors_header(weights_path)
    try:
        state = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise LuvnetError(f"{weights_path}: unreadable safetensors file ({err})") from err
    try:
        model = build_model(config)
    except ValueError as err:  # e.g. num_heads that does not divide the trunk's width
        raise LuvnetError(f"{directory / CONFIG_FILE}: {err}") from err
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing:
        raise LuvnetError(f"{weights_path}: missing key {missing[0]!r} ({len(missing)} missing)")
    if unexpected:
        raise LuvnetError(
            f"{weights_path}: unexpected key {unexpected[0]!r} ({len(unexpected)} unexpected)"
        )
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise LuvnetError(
                f"{weights_path}: key {key!r} has shape {tuple(state[key].shape)}, "
                f"expected {tuple(tensor.shape)} for {config.backbone}/{config.variant}"
            )
    model.load_state_dict(state, strict=True)
    model.eval().to(map_location)
    return Checkpoint(
        model=model,
        config=config,
        model_id=file_sha256(weights_path)[:12],
        path=directory,
        provenance=document.get("provenance") or {},
        metrics=document.get("metrics") or {},
    )
