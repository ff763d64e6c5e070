"""Ray's start-up for a benchmark run."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def benchmark_ray(
    num_cpus: int | None = 2,
    *,
    address: str | None = None,
    ray_config: Any = None,
    include_dashboard: bool = False,
    log_to_driver: bool = False,
    env_defaults: dict[str, str] | None = None,
) -> Iterator[bool]:
    """A Ray for the benchmark, shut down at the end only if it was started here; yields whether it was.

    `address` joins a running cluster; `ray_config` (a RaySection) starts it as the pipeline's jobs do
    (cluster.ensure_ray: a caller's Ray is used as it is); otherwise a Ray already up in this process (the
    tests') is used as it is, else a local one of `num_cpus` CPUs starts. `env_defaults` are set, unless
    already set, before a Ray of our own starts (its workers inherit them). Ray Data's progress bars are off.
    """
    import ray

    from pipeline.core.cluster import ensure_ray, start_local_ray

    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    if address:
        ray.init(address=address, log_to_driver=log_to_driver)
        started = True
    elif ray_config is not None:
        started = ensure_ray(ray_config)
    elif ray.is_initialized():
        started = False
    else:
        for key, value in (env_defaults or {}).items():
            os.environ.setdefault(key, value)
        start_local_ray(num_cpus, include_dashboard=include_dashboard, log_to_driver=log_to_driver)
        started = True
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield started
    finally:
        if started:
            ray.shutdown()
