"""Ray Data Parquet reads through the V1 reader: a read task per file, the caller's DataContext untouched."""

from __future__ import annotations

import pyarrow as pa
from ray.data import DataContext

from pipeline.core.parquet_reader import read_parquet
from tests.conftest import write_parquet


def _shards(folder, n: int = 4) -> list[str]:
    return [
        str(write_parquet(folder / f"part-{i}.parquet", pa.table({"x": range(10 * i, 10 * i + 10)})))
        for i in range(n)
    ]


def test_reads_each_file_as_its_own_task_with_the_v1_reader(ray_session, tmp_path):
    files = _shards(tmp_path)
    ctx = DataContext.get_current()
    before = ctx.use_datasource_v2, ctx.op_resource_reservation_enabled
    ds = read_parquet(files, override_num_blocks=len(files), include_paths=True)
    assert (ctx.use_datasource_v2, ctx.op_resource_reservation_enabled) == before
    assert not ds.context.use_datasource_v2
    assert ds.context.op_resource_reservation_enabled == before[1]
    done = ds.materialize()
    # The V2 reader packed these four small files into one block whatever override_num_blocks said.
    assert done.num_blocks() == len(files)
    rows = done.take_all()
    assert sorted(r["x"] for r in rows) == list(range(40))
    assert {r["path"] for r in rows} == set(files)


def test_reserve_resources_false_changes_that_dataset_only(ray_session, tmp_path):
    files = _shards(tmp_path, 2)
    ctx = DataContext.get_current()
    before = ctx.op_resource_reservation_enabled
    ds = read_parquet(files, reserve_resources=False)
    assert ds.context.op_resource_reservation_enabled is False
    assert ctx.op_resource_reservation_enabled == before
    assert ds.count() == 20
