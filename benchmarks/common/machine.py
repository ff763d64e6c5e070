"""What the results JSONs say about the machine that made them: read from it, never written by hand."""

from __future__ import annotations

import os
import platform
from typing import Any


def memory_gib() -> float:
    import psutil

    return psutil.virtual_memory().total / 2**30


def gpus() -> list[str]:
    import torch

    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def machine_summary() -> str:
    """'2 CPUs, 24 GiB, no GPU' or '16 CPUs, 128 GiB, 1 GPU (NVIDIA H100 80GB HBM3)'."""
    names = gpus()
    gpu = f"{len(names)} GPU ({', '.join(sorted(set(names)))})" if names else "no GPU"
    return f"{os.cpu_count()} CPUs, {memory_gib():.0f} GiB, {gpu}"


def machine_record() -> dict[str, Any]:
    """The summary with its parts: CPUs, memory and the platform string."""
    return {
        "summary": machine_summary(),
        "cpus": os.cpu_count(),
        "memory_gib": round(memory_gib(), 1),
        "platform": platform.platform(),
    }


def load_average(ndigits: int | None = None) -> list[float]:
    """The 1, 5 and 15-minute load averages: how busy the machine was around a measurement."""
    loads = os.getloadavg()
    return [round(x, ndigits) for x in loads] if ndigits is not None else list(loads)
