"""``auto``: pick a backend and say why.

On CUDA the order is fixed by what is known to be fastest there (docs/model.md, "Reference
figures"): tensorrt, then inductor, then eager; the first that loads and passes parity wins. On the
CPU no order is safe to assume (inductor and ONNX Runtime beat eager on some trunks and not on
others), so every verified candidate is timed briefly and the fastest wins.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable

import torch

from luvnet.engine.backends.base import Backend, BackendSpec
from luvnet.engine.backends.parity import ParityError, Reference
from luvnet.engine.errors import LuvnetError

log = logging.getLogger(__name__)

CUDA_ORDER = ("tensorrt", "inductor", "eager")
CPU_CANDIDATES = ("eager", "inductor", "onnxruntime")
TIMED_CALLS = 5

Loader = Callable[[str], Backend]


def _one_line(err: Exception) -> str:
    text = (str(err).strip().splitlines() or [""])[0]
    return text[:200] or type(err).__name__


def _try(name: str, load: Loader, skipped: list[str]) -> Backend | None:
    try:
        return load(name)
    except Exception as err:  # auto's job is to fall through; the reason records why
        # A wrong answer is worth a warning; a missing package or device is routine.
        level = logging.WARNING if isinstance(err, ParityError) else logging.INFO
        debug = log.isEnabledFor(logging.DEBUG)
        log.log(level, "auto: %s not used: %s", name, _one_line(err), exc_info=debug)
        skipped.append(f"{name}: {_one_line(err)}")
        return None


def _skipped_text(skipped: list[str]) -> str:
    return f"; skipped {' | '.join(skipped)}" if skipped else ""


def time_backend(backend: Backend, reference: Reference, calls: int = TIMED_CALLS) -> float:
    """Median milliseconds of encode + head (full window) over ``calls``, after one warm call."""
    window = reference.embedding.unsqueeze(1) * reference.gains
    sync = backend.device.type == "cuda"

    def step() -> None:
        backend.head(window, None)
        backend.encode(reference.frame)
        if sync:
            torch.cuda.synchronize(backend.device)

    step()
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        step()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def _first_that_loads(spec: BackendSpec, load: Loader) -> Backend:
    skipped: list[str] = []
    for name in CUDA_ORDER:
        backend = _try(name, load, skipped)
        if backend is not None:
            reason = (
                f"auto picked {name}: first of {' > '.join(CUDA_ORDER)} on {spec.device} "
                f"that loaded and passed parity{_skipped_text(skipped)}"
            )
            return backend.with_info(reason=reason)
    raise _nothing_loaded(skipped)


def _fastest(spec: BackendSpec, reference: Reference, load: Loader) -> Backend:
    skipped: list[str] = ["tensorrt: needs CUDA"]
    timed: dict[str, tuple[float, Backend]] = {}
    for name in CPU_CANDIDATES:
        backend = _try(name, load, skipped)
        if backend is not None:
            timed[name] = (time_backend(backend, reference), backend)
    if not timed:
        raise _nothing_loaded(skipped)
    best = min(timed, key=lambda n: timed[n][0])
    table = ", ".join(f"{n} {ms:.1f} ms" for n, (ms, _) in timed.items())
    reason = (
        f"auto picked {best}: fastest verified backend on {spec.device} ({table}; "
        f"encode + head, median of {TIMED_CALLS} calls){_skipped_text(skipped)}"
    )
    winner = timed[best][1]
    details = {**winner.info.details, "auto_ms": {n: round(ms, 3) for n, (ms, _) in timed.items()}}
    return winner.with_info(reason=reason, details=details)


def _nothing_loaded(skipped: list[str]) -> LuvnetError:
    return LuvnetError(f"auto: no backend loaded ({' | '.join(skipped)})")


def select(spec: BackendSpec, reference: Reference, load: Loader) -> Backend:
    if spec.device.type == "cuda":
        return _first_that_loads(spec, load)
    return _fastest(spec, reference, load)
