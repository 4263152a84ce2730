"""Resumable training state: safetensors for every tensor, JSON for everything else.

Layout of ``RUN/fold_<i>/last/``::

    state.json                  the commit point: counters, history, RNG, optimizer metadata,
                                and the name of the tensor file it belongs to
    state-<generation>.safetensors
                                model/<key>, optimizer/<param>/<key>, rng/torch, rng/cuda/<i>,
                                and with ``--ema`` average/<key> (:mod:`.averaging`)

A save writes a new tensor file under a fresh name, then replaces ``state.json`` atomically
(:mod:`luvnet.engine.files`: a temporary file + ``os.replace``), then deletes older tensor
files. A process killed at any moment therefore leaves either the old or the new state,
complete. Nothing is pickled: the optimizer's ``state_dict`` is split into its tensors
(safetensors) and the rest (JSON).
"""

from __future__ import annotations

import random
import uuid
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from luvnet.engine.errors import LuvnetError
from luvnet.engine.files import atomic_path, read_versioned_json, write_json
from luvnet.engine.training.settings import TrainSettings

FORMAT = "luvnet-train-state"
FORMAT_VERSION = 1
STATE_JSON = "state.json"


@dataclass
class Progress:
    """Counters that decide where a resumed run continues."""

    epoch: int = 0  # the epoch in progress (0-based)
    step: int = 0  # batches of that epoch already trained
    global_step: int = 0  # optimizer steps over the whole fold
    elapsed_s: float = 0.0  # wall clock spent on this fold, summed over invocations
    cpu_s: float = 0.0  # CPU time of the process(es) in that wall clock (shared machines)
    best_score: float | None = None  # the best validation figure in --eval-metric's metric
    best_epoch: int | None = None
    bad_epochs: int = 0  # epochs since that best figure (early-stopping counter)
    epoch_loss_sum: float = 0.0  # training loss of the epoch in progress, for history.csv
    epoch_loss_count: int = 0
    stop_reason: str | None = None  # "early_stop", "max_epochs", "budget" once finished
    bn_frozen: bool = False  # BatchNorm statistics fixed for the rest of the run
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class TrainState:
    progress: Progress
    fingerprint: dict[str, Any]  # settings a resumed run must share with the saved one
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scaler: dict[str, Any]
    rng: dict[str, Any]
    average: dict[str, torch.Tensor] = field(default_factory=dict)  # --ema's; empty when off


# --- optimizer state <-> (tensors, JSON) -------------------------------------------------------


def split_optimizer_state(
    state_dict: dict[str, Any],
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``optimizer.state_dict()`` -> (flat tensors, JSON-able rest)."""
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, dict[str, Any]] = {}
    for param_id, entries in state_dict["state"].items():
        plain: dict[str, Any] = {}
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{param_id}/{key}"] = value
            else:
                plain[key] = value
        meta[str(param_id)] = plain
    return tensors, {"param_groups": state_dict["param_groups"], "state": meta}


def join_optimizer_state(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`split_optimizer_state`."""
    state: dict[int, dict[str, Any]] = {int(k): dict(v) for k, v in rest["state"].items()}
    for name, value in tensors.items():
        _, param_id, key = name.split("/", 2)
        state.setdefault(int(param_id), {})[key] = value
    return {"state": state, "param_groups": rest["param_groups"]}


# --- RNG states -------------------------------------------------------------------------------


def capture_rng() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Torch/CUDA generator states as tensors; Python and NumPy states as JSON."""
    tensors = {"rng/torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{i}"] = s
    version, internal, gauss = random.getstate()
    # The global RandomState is MT19937, whose legacy state is this tuple; the stub also
    # allows the dict other bit generators give.
    legacy = cast("tuple[str, np.ndarray, int, int, float]", np.random.get_state())
    kind, keys, pos, has_gauss, cached = legacy
    plain = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
    }
    return tensors, plain


def restore_rng(tensors: dict[str, torch.Tensor], plain: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng/torch"])
    cuda = [tensors[k] for k in sorted(t for t in tensors if t.startswith("rng/cuda/"))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    version, internal, gauss = plain["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = plain["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


# --- save / load ------------------------------------------------------------------------------


def save_state(
    directory: str | Path,
    *,
    progress: Progress,
    fingerprint: dict[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    average: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write the state atomically (module docstring); returns the directory. ``average``:
    the weight average's tensors (``--ema``), None without one."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
    tensors |= {f"average/{k}": v for k, v in (average or {}).items()}
    optim_tensors, optim_rest = split_optimizer_state(optimizer.state_dict())
    rng_tensors, rng_rest = capture_rng()
    tensors |= optim_tensors | rng_tensors
    # clone(): safetensors refuses tensors that share storage (tied or viewed weights).
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    generation = uuid.uuid4().hex[:12]
    tensor_name = f"state-{generation}.safetensors"
    with atomic_path(directory / tensor_name) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT, "generation": generation})
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "tensors": tensor_name,
        "generation": generation,
        "progress": asdict(progress),
        "fingerprint": fingerprint,
        "optimizer": optim_rest,
        "scaler": scaler.state_dict(),
        "rng": rng_rest,
    }
    write_json(directory / STATE_JSON, document, indent=1)  # the commit point
    # Older generations, and temporary files a killed save left behind.
    for stale in [*directory.glob("state-*.safetensors*"), *directory.glob(".state*.tmp")]:
        if stale.name != tensor_name:
            stale.unlink(missing_ok=True)
    return directory


def _read_state_json(directory: Path) -> dict[str, Any] | None:
    """``state.json`` of ``directory``, checked for format and version; None when absent."""
    json_path = directory / STATE_JSON
    if not json_path.is_file():
        return None
    return read_versioned_json(
        json_path,
        format=FORMAT,
        version=FORMAT_VERSION,
        expected="luvnet training state",
        hint=f"delete {directory} to restart",
    )


def load_state(directory: str | Path) -> TrainState | None:
    """The saved state, or None when there is none yet; a damaged one is a LuvnetError."""
    directory = Path(directory)
    document = _read_state_json(directory)
    if document is None:
        return None
    tensor_path = directory / str(document.get("tensors"))
    try:
        tensors = load_file(str(tensor_path))
    except (SafetensorError, OSError) as err:
        raise LuvnetError(
            f"{tensor_path}: unreadable training state ({err}); delete {directory} to restart"
        ) from None
    prefix = "model/"
    progress = dict(document["progress"])
    if "best_val_loss" in progress:  # saved before --eval-metric, when it was always the loss
        progress["best_score"] = progress.pop("best_val_loss")
    return TrainState(
        progress=Progress(**progress),
        fingerprint=document["fingerprint"],
        model={k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)},
        optimizer=join_optimizer_state(
            {k: v for k, v in tensors.items() if k.startswith("optimizer/")},
            document["optimizer"],
        ),
        scaler=document["scaler"],
        rng={"tensors": {k: v for k, v in tensors.items() if k.startswith("rng/")}}
        | {"plain": document["rng"]},
        average={k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith("average/")},
    )


def check_saved_fingerprint(directory: Path, current: dict[str, Any]) -> None:
    """:func:`check_fingerprint` against the state saved in ``directory``, reading only its
    JSON (so every fold of a run can be checked before any is loaded); no state passes.

    Raises:
        LuvnetError: a damaged state, or one saved with other settings.
    """
    document = _read_state_json(directory)
    if document is None:
        return
    saved = document.get("fingerprint")
    if not isinstance(saved, dict):
        raise LuvnetError(
            f"{directory / STATE_JSON}: no settings fingerprint (a damaged training state); "
            f"expected the form luvnet train writes: delete {directory} to restart"
        )
    check_fingerprint(directory, saved, current)


# Fingerprint keys present only when their option is on, so that older runs resume: absent is
# the option's default (TrainSettings'), named on both sides of a mismatch.
OPTIONAL_SETTINGS = ("ema", "eval_metric")


def _as_option(key: str, value: Any) -> str:
    """``--ema 0.5``: a fingerprint value as the ``luvnet train`` option that sets it."""
    if value is None:
        value = next(f.default for f in fields(TrainSettings) if f.name == key)
    # 0.0 as "0", as typed; a value %g would round (0.9999999) as Python writes it
    shown = f"{value:g}" if isinstance(value, float) and float(f"{value:g}") == value else value
    return f"--{key.replace('_', '-')} {shown}"


def check_fingerprint(directory: Path, saved: dict[str, Any], current: dict[str, Any]) -> None:
    """Refuse to resume with settings that would make the saved state meaningless."""
    key = "init_model_id"  # first: it explains init_head's difference too
    if saved.get(key) != current.get(key):
        was, now = (
            f"--init model id {v}" if v is not None else "no --init"
            for v in (saved.get(key), current.get(key))
        )
        raise LuvnetError(
            f"{directory}: trained from {was}, this command has {now}; resume with the "
            "--init it was trained from (`luvnet info --checkpoint DIR` prints a "
            "checkpoint's model id), or train into a new --out"
        )
    for key in sorted(set(saved) | set(current)):
        if saved.get(key) == current.get(key):
            continue
        if key in OPTIONAL_SETTINGS:
            was, now = _as_option(key, saved.get(key)), _as_option(key, current.get(key))
            raise LuvnetError(
                f"{directory}: trained with {was}, this command has {now}; rerun with {was} "
                "or train into a new --out"
            )
        raise LuvnetError(
            f"{directory}: saved with {key}={saved.get(key)!r}, this command has "
            f"{key}={current.get(key)!r}; rerun with the same settings or a new --out"
        )
