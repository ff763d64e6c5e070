"""Connect to the Ray cluster of a submitted job, or start a local one in-process."""

from __future__ import annotations

import logging
import os

import ray
import ray.data

from pipeline.config import RaySection

log = logging.getLogger(__name__)


def ensure_ray(cfg: RaySection) -> bool:
    """Initialise Ray once; returns True when this call started it (so the caller shuts it down).

    Under `ray job submit`, RAY_ADDRESS is set and `ray.init()` joins that cluster; with no address at all a
    local Ray starts in-process (the embedded default).
    """
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        log.info("joined Ray cluster at %s: %s", address, ray.cluster_resources())
    else:
        # The dashboard serves the State API, which Train V2's PlacementGroupCleaner needs: without it, the
        # placement groups of Train runs that Tune ended (ASHA) stayed reserved and later work never started.
        ray.init(num_cpus=cfg.num_cpus, include_dashboard=True)
        log.info("started a local Ray: %s", ray.cluster_resources())
    ray.data.DataContext.get_current().enable_progress_bars = False
    return True
