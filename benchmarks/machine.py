"""What the results JSONs say about the machine that made them: read from it, never written by hand."""

from __future__ import annotations

import os


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
