"""Validation scores of a training epoch, kept in Ray's object store in row blocks and read as
:class:`~pipeline.evaluation.blocks.ScoreBlocks`, so that the per-epoch metrics hold no documents x labels
matrix in any worker.

Each data-parallel rank keeps its own rows' scores (``ray.put`` of blocks of ``block_rows(labels)`` rows, one
array per branch of a combined model). :meth:`RankBlocks.each` and :meth:`RankBlocks.fold` run the block
function on the rank's own blocks and all-gather the results (statistics, not scores) in rank order, so every
rank computes the same figures over rows numbered rank by rank, as the gathered targets are. All ranks must
call them together and in the same order; the metrics do (the same code on the same targets).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numpy as np
import torch

from pipeline.evaluation.blocks import ScoreBlocks, block_rows, check_block
from pipeline.modeling.frozen import mix_scores

T = TypeVar("T")
#: A stored block: one array (or object store reference to one) per branch, and its rows.
Block = tuple[tuple[Any, ...], int]


def all_gather(obj: Any) -> list[Any]:
    """``obj`` of every data-parallel rank, in rank order (``[obj]`` without a process group)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [obj]
    parts: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(parts, obj)
    return parts


def store_block(block: np.ndarray) -> Any:
    """``block`` in Ray's object store (a reference to it), or itself without a Ray session."""
    import ray

    return ray.put(block) if ray.is_initialized() else block


def load_block(x: Any) -> np.ndarray:
    """The array of :func:`store_block`'s result."""
    import ray

    return ray.get(x) if isinstance(x, ray.ObjectRef) else x


class RankBlocks(ScoreBlocks):
    """Scores stored by :class:`ScoreBuffer` on each rank; ``combine`` makes a block of its branches
    (default: the only one)."""

    def __init__(
        self, blocks: list[Block], first: int, shape: tuple[int, int], combine: Callable[..., Any] | None
    ) -> None:
        self.blocks, self.first, self.shape, self.combine = blocks, first, shape, combine

    def _local(self) -> Iterator[tuple[int, np.ndarray]]:
        a = self.first
        for arrays, rows in self.blocks:
            parts = [load_block(x) for x in arrays]
            yield a, parts[0] if self.combine is None else self.combine(*parts)
            a += rows

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        return self.each(_whole)  # every rank's blocks: for tests and small label spaces

    def each(self, fn: Callable[..., T], *args: Any) -> Iterator[tuple[int, T]]:
        local = [(a, fn(a, block, *args)) for a, block in self._local()]
        for part in all_gather(local):
            yield from part

    def fold(self, fn: Callable[..., T], merge: Callable[[T, T], T], *args: Any) -> T | None:
        local: T | None = None
        for a, block in self._local():
            part = fn(a, block, *args)
            local = part if local is None else merge(local, part)
        out: T | None = None
        for part in all_gather(local):
            if part is not None:
                out = part if out is None else merge(out, part)
        return out

    def mixed(self, w: float) -> RankBlocks:
        """The mix ``w * branch 0 + (1 - w) * branch 1`` of a two-branch store, computed per block."""
        return RankBlocks(self.blocks, self.first, self.shape, functools.partial(mix_scores, w=w))


def _whole(a: int, block: np.ndarray) -> np.ndarray:
    return np.array(block)


class ScoreBuffer:
    """Collects a rank's validation score batches ([rows, labels] per branch) into stored row blocks."""

    def __init__(self, n_labels: int, branches: int = 1) -> None:
        self.n_labels, self.branches = n_labels, branches
        self.rows = block_rows(n_labels)
        self.blocks: list[Block] = []
        self._pending: list[list[np.ndarray]] = [[] for _ in range(branches)]
        self._pending_rows = 0

    def add(self, scores: list[np.ndarray]) -> None:
        """One batch: its scores per branch."""
        for i, s in enumerate(scores):
            self._pending[i].append(check_block(s, "validation scores"))
        self._pending_rows += len(scores[0])
        if self._pending_rows >= self.rows:
            self._flush()

    def _flush(self) -> None:
        if self._pending_rows:
            arrays = tuple(store_block(np.concatenate(p)) for p in self._pending)
            self.blocks.append((arrays, self._pending_rows))
        self._pending = [[] for _ in range(self.branches)]
        self._pending_rows = 0

    def finish(self) -> RankBlocks:
        """The stored scores as blocks over all ranks (collective: every rank calls it). Two branches:
        blocks of the first branch; :meth:`RankBlocks.mixed` gives their mixes."""
        self._flush()
        counts = all_gather(sum(rows for _, rows in self.blocks))
        rank = torch.distributed.get_rank() if len(counts) > 1 else 0
        first = int(sum(counts[:rank]))
        combine = None if self.branches == 1 else _first_branch
        return RankBlocks(self.blocks, first, (int(sum(counts)), self.n_labels), combine)


def _first_branch(*parts: np.ndarray) -> np.ndarray:
    return parts[0]


__all__ = ["RankBlocks", "ScoreBuffer", "all_gather"]
