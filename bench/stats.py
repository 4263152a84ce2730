"""Latency summaries and the machine a figure came from."""

from __future__ import annotations

import os
import platform
import resource

import numpy as np
import torch


def summarize(samples_ms: list[float] | np.ndarray) -> dict[str, float | int]:
    """mean, p50, p90, p99, p99.9, max (ms) and the sample count."""
    values = np.asarray(samples_ms, dtype=np.float64)
    if values.size == 0:
        return {"n": 0}
    p50, p90, p99, p999 = np.percentile(values, [50, 90, 99, 99.9])
    return {
        "n": int(values.size),
        "mean": float(values.mean()),
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "p99.9": float(p999),
        "max": float(values.max()),
    }


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(device: torch.device) -> dict[str, object]:
    info: dict[str, object] = {
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def peak_memory(device: torch.device) -> dict[str, float]:
    # ru_maxrss is in KiB on Linux.
    memory = {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        memory["peak_gpu_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return memory
