"""Checkpoints: tensors in safetensors plus a JSON config; nothing is ever unpickled.

Layout: a directory holding ``model.safetensors`` and ``config.json``::

    {"format": "luvnet-checkpoint", "format_version": 1,
     "model": {ModelConfig as JSON}, "provenance": {...}, "metrics": {...}}

``provenance`` records the data manifest hash, the command, the date and versions, and from
``luvnet train`` the patient split as counts and salted digests, never patient ids
(:mod:`luvnet.engine.data.split_record`). The model id published by the streamer is the first
12 hex digits of the SHA-256 of ``model.safetensors``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import struct
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
from luvnet.engine.runtime import command_line

FORMAT = "luvnet-checkpoint"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
# A safetensors file starts with a little-endian u64 header length, then a JSON header.
_MAX_HEADER_BYTES = 100 * 1024 * 1024
_LFS_POINTER = b"version https://git-lfs.github.com/spec/"


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


def default_provenance(manifest: Path | None = None, command: str | None = None) -> dict[str, Any]:
    """What a checkpoint records of how it was made; ``command`` defaults to
    :func:`~luvnet.engine.runtime.command_line`."""
    return {
        "manifest_sha256": file_sha256(manifest) if manifest else None,
        "command": command_line() if command is None else command,
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
        if (path / name).is_symlink() and not (path / name).exists():
            raise LuvnetError(
                f"checkpoint {path}: {name} links to {os.readlink(path / name)}, which is not "
                "there; in a git-annex clone, run `git annex get` for it"
            )
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
    """Refuse anything that is not a whole safetensors file before any parser touches it.

    Names the likely cause: a git-lfs pointer or a saved web page where the weights belong, a
    pickle, or a copy shorter or longer than its header says (an interrupted or padded copy).
    """
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(512)
        placeholder = _placeholder(head)
        if placeholder:
            raise LuvnetError(f"{path}: {placeholder}")
        if len(head) < 9:
            raise LuvnetError(f"{path}: not a safetensors file ({size} bytes)")
        (header_len,) = struct.unpack("<Q", head[:8])
        if header_len > _MAX_HEADER_BYTES or head[8:9] != b"{":
            kind = "a pickle" if head[:1] == b"\x80" else "not a safetensors file"
            raise LuvnetError(f"{path}: {kind}; refusing to load it (luvnet never unpickles)")
        if header_len > size - 8:
            raise LuvnetError(
                f"{path}: truncated inside its header ({size} bytes, the header alone needs "
                f"{8 + header_len}); the copy looks incomplete: copy or download it again"
            )
        handle.seek(8)
        end = _data_end(handle.read(header_len))
    if end is None:
        return  # a malformed header: the safetensors parser names what is wrong
    expected = 8 + header_len + end
    if size < expected:
        raise LuvnetError(
            f"{path}: truncated: {size} bytes, but its header says the tensors end at byte "
            f"{expected} ({expected - size} missing); the copy looks incomplete (an interrupted "
            "download or copy): copy or download it again"
        )
    if size > expected:
        raise LuvnetError(
            f"{path}: {size - expected} bytes past the end of its tensors ({size} bytes, its "
            f"header says {expected}); the copy looks incomplete or padded (a download or copy "
            "that went wrong): copy or download it again"
        )


def _placeholder(head: bytes) -> str | None:
    """What a small text file standing where the weights belong is, and how to get them."""
    if head.startswith(_LFS_POINTER):
        declared = re.search(rb"^size (\d+)", head, re.MULTILINE)
        real = f" ({int(declared[1])} bytes)" if declared else ""
        return (
            "a git-lfs pointer, not the weights: the repository was cloned without git-lfs; "
            f"run `git lfs install && git lfs pull` in the clone, or fetch the real file{real}"
        )
    if head.lstrip().lower().startswith((b"<!doctype html", b"<html")):
        return (
            "a web page (HTML), not the weights: it was saved from a page's address; download "
            "the file itself (on GitHub, the 'raw' or 'download' link)"
        )
    return None


def _data_end(raw: bytes) -> int | None:
    """Where the tensors end, from a safetensors JSON header; None if the header is odd."""
    try:
        header = json.loads(raw)
        ends = [
            int(entry["data_offsets"][1]) for key, entry in header.items() if key != "__metadata__"
        ]
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return None
    return max(ends, default=0)


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
