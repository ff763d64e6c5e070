"""Both sides of a comparison at the same thread count and niceness: what Ray's workers get, and the bare
side taking the same."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

#: Ray's default worker niceness (PR ray-project/ray#24928); the bare sides adopt what the workers really had.
RAY_DEFAULT_WORKER_NICENESS = 15
NICENESS_FILE = "ray_worker_niceness.txt"


def probe_threads(cpus: float, work: Path | None = None) -> dict[str, Any]:
    """torch's thread count and the niceness of a Ray worker holding `cpus` CPUs (what the Train worker
    actor sees). With `work`, the niceness is left there for the bare side (`_adopt_ray_niceness`)."""
    import ray

    @ray.remote(num_cpus=cpus)
    def probe() -> dict[str, Any]:
        import torch

        return {
            "torch_threads": torch.get_num_threads(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "niceness": os.nice(0),
        }

    found = ray.get(probe.remote())
    if work is not None:
        (work / NICENESS_FILE).write_text(str(found["niceness"]))
    return found


def _adopt_niceness(target: int) -> int:
    """Move this process to `target` niceness (raising it needs no privilege); returns the niceness now."""
    return os.nice(target - os.nice(0)) if target > os.nice(0) else os.nice(0)


def _adopt_ray_niceness(work: Path) -> int:
    """Ray runs its workers at niceness 15 (`RAY_worker_niceness`; drivers and Ray's daemons stay at 0).
    A bare side at 0 would win every contended time slice on a busy 2-CPU machine, so it takes the niceness
    its Ray side's workers had (Ray's default when that side has not run in this work folder)."""
    saved = work / NICENESS_FILE
    return _adopt_niceness(int(saved.read_text()) if saved.exists() else RAY_DEFAULT_WORKER_NICENESS)


def enter_bare_side(work: Path) -> int:
    """A bare side's process set up as its Ray side's workers: torch at the thread count the parent gave
    (--threads, as OMP_NUM_THREADS) and the workers' niceness; returns the niceness."""
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    return _adopt_ray_niceness(work)
