"""Per-epoch validation scores kept in row blocks (in the object store under Ray) and read across ranks:
the epoch metrics equal those of the dense matrix, on one rank and on two."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.multiprocessing as mp

from pipeline.training.validation_scores import RankBlocks, ScoreBuffer
from pipeline.training.worker import epoch_metrics, mixed_epoch_metrics


def _data(seed: int = 0, n: int = 61, c: int = 9) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random((n, c)) < 0.25).astype(np.int8)
    y[:, 0] = 0  # a label without positives
    s0 = ((y * 0.4 + rng.random(y.shape)) / 1.4).astype(np.float32)
    s1 = rng.random(y.shape).astype(np.float32)
    s0[3, 2] = s0[4, 2]  # a tie across rows
    return sp.csr_matrix(y), s0, s1


def _stored(parts: list[np.ndarray], rows: int = 7, batch: int = 5) -> RankBlocks:
    buf = ScoreBuffer(parts[0].shape[1], branches=len(parts))
    buf.rows = rows  # blocks that straddle batches
    for a in range(0, parts[0].shape[0], batch):
        buf.add([p[a : a + batch] for p in parts])
    return buf.finish()


def test_epoch_metrics_of_stored_blocks_equal_the_dense_ones():
    y, s0, s1 = _data()
    blocks = _stored([s0])
    assert blocks.shape == s0.shape and len(blocks.blocks) > 2
    np.testing.assert_array_equal(np.concatenate([b for _, b in blocks]), s0)
    assert epoch_metrics(y, blocks) == epoch_metrics(y, s0)
    both = _stored([s0, s1])
    for metric in ("val_macro_ap", "val_tuned_macro_f1"):
        assert mixed_epoch_metrics(y, both, metric, "max") == mixed_epoch_metrics(y, [s0, s1], metric, "max")
    with pytest.raises(ValueError, match="finite"):
        _stored([np.full((3, 2), np.nan, np.float32)])


def test_blocks_live_in_the_object_store_under_ray(ray_session):
    y, s0, _ = _data(1)
    blocks = _stored([s0])
    assert all(isinstance(arrays[0], ray_session.ObjectRef) for arrays, _ in blocks.blocks)
    assert epoch_metrics(y, blocks) == epoch_metrics(y, s0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rank(rank: int, port: int, out: dict) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2
    )
    try:
        y, s0, s1 = _data(2)
        half = 25  # unequal shares: rank 1 holds the rest
        rows = slice(0, half) if rank == 0 else slice(half, None)
        one, two = _stored([s0[rows]]), _stored([s0[rows], s1[rows]])
        out[rank] = (
            one.first,
            one.shape,
            epoch_metrics(y, one),
            mixed_epoch_metrics(y, two, "val_tuned_macro_f1", "max"),
        )
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.timeout(120)
def test_two_ranks_compute_the_metrics_of_all_rows():
    y, s0, s1 = _data(2)
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_rank, args=(_free_port(), out), nprocs=2, join=True)
        got = dict(out)
    assert got[0][:2] == (0, s0.shape) and got[1][:2] == (25, s0.shape)
    for rank in (0, 1):
        assert got[rank][2] == epoch_metrics(y, s0)
        assert got[rank][3] == mixed_epoch_metrics(y, [s0, s1], "val_tuned_macro_f1", "max")
