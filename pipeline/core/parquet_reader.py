"""Every Ray Data read of Parquet in the pipeline, through Ray's V1 Parquet reader.

Ray 2.60's default DataSourceV2 reader (ListFiles -> ReadFiles) was set aside for two measured reasons:
- its file lister's completion thread can find its queue already shut down on a finished read and print an
  `InterruptedError` stack into the job's log (seen in a job that had worked; a race in Ray's
  `dynamic_work_queue`), which users would take for a failure;
- it packed many small shards into one read task whatever `override_num_blocks` said, where V1 makes a task
  per file, so prepare's read ran on one CPU of two.
A dataset keeps the DataContext it was created with, so setting the flag around the call is enough.
"""

from __future__ import annotations

from typing import Any

import ray.data
from ray.data import DataContext


def read_parquet(
    paths: str | list[str], *, reserve_resources: bool = True, **kwargs: Any
) -> ray.data.Dataset:
    """`ray.data.read_parquet(paths, **kwargs)` with the V1 reader.

    `reserve_resources=False` also turns off Ray Data's operator resource reservation for this dataset: it
    keeps half the CPUs for operators a read-and-map pipeline does not have (prepare's read ran tasks one at a
    time with it: 3.5 s against 1.9 s without, 20 shards, 2 CPUs).
    """
    ctx = DataContext.get_current()
    saved = ctx.use_datasource_v2, ctx.op_resource_reservation_enabled
    ctx.use_datasource_v2 = False
    if not reserve_resources:
        ctx.op_resource_reservation_enabled = False
    try:
        return ray.data.read_parquet(paths, **kwargs)
    finally:
        ctx.use_datasource_v2, ctx.op_resource_reservation_enabled = saved
