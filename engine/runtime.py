"""This process: where the model runs (the device named by ``--device``, the CPU thread count)
and the command line it records in what it writes."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import torch

from luvnet.engine.errors import LuvnetError


def resolve_device(
    name: str | torch.device | None = None, *, option: str = "--device"
) -> torch.device:
    """The torch device for ``name``, checked against what this machine has.

    Args:
        name: ``auto`` or ``None`` (CUDA when a GPU is visible, else the CPU), ``cpu``, ``cuda``
            or ``cuda:N``, or a ``torch.device``.
        option: the option or field the name came from, for the error message.

    Returns:
        ``cpu``, or ``cuda:N`` with an explicit index (CUDA graphs and device queries need one).

    Raises:
        LuvnetError: another device type, a malformed name, or CUDA asked for where none is.
    """
    if name is None or name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise LuvnetError(f"{option}: expected auto, cpu, cuda or cuda:N, got {name!r}") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise LuvnetError(f"{option}: expected auto, cpu, cuda or cuda:N, got {name!r}")
    if not torch.cuda.is_available():
        raise LuvnetError(f"{option} {name}: no CUDA GPU is visible on this machine; use cpu")
    index = torch.cuda.current_device() if device.index is None else device.index
    if index >= torch.cuda.device_count():
        raise LuvnetError(
            f"{option} {name}: this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    return torch.device("cuda", index)


def set_threads(threads: int | None) -> None:
    """Use ``threads`` CPU threads for torch's intra-op work; ``None`` or 0 keeps torch's default.

    On an oversubscribed CPU, OpenMP threads spin waiting for each other: measured here
    (mobilenet_v3_small, 64 px, training, load ~7 on 2 cores) 2 threads took 243 ms of wall
    clock per frame, 1 thread 10 ms.
    """
    if threads:
        torch.set_num_threads(threads)


def command_line() -> str:
    """This process's command line with its program by name, not by where it is installed:
    ``luvnet train --manifest ...``, ``python -m luvnet.commands.demo_model --work ...``.

    A checkpoint travels, and ``sys.argv[0]`` is the program's resolved path (a console script
    found on ``PATH``, or the module's file under ``python -m``), which names the folders, and
    often the user, of the machine that trained it. The arguments stay as typed.
    """
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    program = f"python -m {spec.name}" if spec is not None else Path(sys.argv[0]).name
    return " ".join([program, *map(shlex.quote, sys.argv[1:])])
