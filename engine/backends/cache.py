"""Where compiled artefacts live and what they are keyed by.

The cache root is a directory the user owns: ``$XDG_CACHE_HOME/luvnet`` or
``~/.cache/luvnet`` (never /tmp, which torch-tensorrt defaults to; docs/model.md, "Known pitfalls").
Each backend uses a subdirectory (``trt/``, ``onnx/``) holding one directory per key. A key hashes
everything that makes an artefact invalid: the weights and config (model fingerprint), the fixed
shapes, the precision and the versions of the tools that built it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from luvnet.engine.files import atomic_open
from luvnet.engine.model.network import LUVNet

# Bump when the layout of what the backends write changes.
CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "luvnet"


def model_fingerprint(model: LUVNet) -> str:
    """SHA-256 over the config and every tensor of the state dict (names, dtypes, shapes, bytes).

    Hashes what is loaded, not the file it came from, so a model changed after loading
    never reuses a stale engine. About a second for DenseNet-161's 0.5 GB.
    """
    digest = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cache_key(facts: dict[str, Any]) -> str:
    """A short, stable directory name for a dict of facts (strings, numbers)."""
    text = json.dumps({"cache_format": CACHE_FORMAT, **facts}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def write_facts(directory: Path, facts: dict[str, Any]) -> None:
    """Record, next to the artefacts, what they were built from (for people, not lookups)."""
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_open(directory / "key.json") as handle:
        handle.write(json.dumps(facts, indent=2, sort_keys=True) + "\n")
