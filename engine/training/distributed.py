"""Multi-GPU training through ``torchrun``: the same ``luvnet train`` command, DDP underneath.

``torchrun --nproc-per-node 4 -m luvnet.cli train ...`` sets ``WORLD_SIZE``, ``RANK`` and
``LOCAL_RANK``; :func:`setup` then joins the process group (NCCL on CUDA, Gloo on CPU) and
pins this process to ``cuda:<LOCAL_RANK>``. Without ``WORLD_SIZE`` everything here is the
single-process identity (world 1, rank 0, no process group), so the training loop has one path.

Written against the documented ``torch.distributed`` / ``DistributedDataParallel`` API. Run
here with Gloo on two CPU processes (tests/engine/training/test_train.py); never on GPUs
(NCCL), since no GPU machine was available (see docs/training.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from luvnet.engine.errors import LuvnetError


@dataclass(frozen=True)
class DistEnv:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise LuvnetError(f"environment {name}: expected an integer, got {text!r}") from None


def from_environment() -> DistEnv:
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise LuvnetError(f"environment: RANK={rank} WORLD_SIZE={world}; expected 0 <= RANK < WS")
    return DistEnv(world, rank, local)


def setup(env: DistEnv, device: str) -> torch.device:
    """Join the process group when launched by torchrun; return this process's device."""
    if device == "cuda":
        if not torch.cuda.is_available():
            raise LuvnetError("--device cuda: no CUDA device is visible; use --device cpu")
        torch.cuda.set_device(env.local_rank)
        chosen = torch.device("cuda", env.local_rank)
    else:
        chosen = torch.device(device)
    if env.enabled and not dist.is_initialized():
        backend = "nccl" if chosen.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=env.rank, world_size=env.world_size)
    return chosen


def teardown(env: DistEnv) -> None:
    if env.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.enabled:
        dist.barrier()


def any_true(env: DistEnv, flag: bool, device: torch.device) -> bool:
    """True on every rank when it is True on any rank (budget and early-stop decisions)."""
    if not env.enabled:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def broadcast_floats(env: DistEnv, values: list[float], device: torch.device) -> list[float]:
    """Rank 0's values on every rank."""
    if not env.enabled:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.broadcast(tensor, src=0)
    return [float(v) for v in tensor.tolist()]
