"""Scores as consecutive row blocks: what thresholds and metrics read, so that no documents x labels matrix
is held at once.

Every figure of the report is a sum over documents of per-block counts (positives' scores, scores below a
cut, per-row top k, decisions), so the arithmetic is written as a function of one block whose results are
put in place (:meth:`ScoreBlocks.each`) or merged (:meth:`ScoreBlocks.fold`), as often as it needs: on a
dense array (:class:`ArrayBlocks`, views of it: tests and small label spaces) in this process, or on the
scored Ray dataset of the evaluate stage (``pipeline.evaluation.scoring.DatasetBlocks``) in Ray tasks beside
its blocks, which return only the statistics. The caller's memory is then O(positives) arrays, whatever the
documents; the block functions are module-level (or partials of them) so that they travel to those tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike, NDArray

#: Score cells per block of :func:`as_blocks` (16 MB of float32).
BLOCK_CELLS = 4_000_000

T = TypeVar("T")


class ScoreBlocks:
    """Scores of shape ``shape`` as ``(first row, block [rows, labels])`` pairs, in row order.

    Iterating again reads them again; subclasses define :meth:`__iter__` and set ``shape``."""

    shape: tuple[int, int]

    def __iter__(self) -> Iterator[tuple[int, NDArray[Any]]]:
        raise NotImplementedError

    def each(self, fn: Callable[..., T], *args: Any) -> Iterator[tuple[int, T]]:
        """``(first row, fn(first row, block, *args))`` for every block, in row order."""
        for a, block in self:
            yield a, fn(a, block, *args)

    def fold(self, fn: Callable[..., T], merge: Callable[[T, T], T], *args: Any) -> T | None:
        """``fn(first row, block, *args)`` of every block, merged pairwise by ``merge`` (associative; blocks
        in row order); None without blocks."""
        out: T | None = None
        for _, part in self.each(fn, *args):
            out = part if out is None else merge(out, part)
        return out

    def map(self, fn: Callable[[NDArray[Any]], NDArray[Any]], columns: int | None = None) -> ScoreBlocks:
        """The same blocks through ``fn``, computed on each pass; ``columns``: the width of its output
        (default: unchanged)."""
        return MappedBlocks(self, fn, columns)


def block_rows(n_labels: int) -> int:
    """Rows per block: :data:`BLOCK_CELLS` cells."""
    return max(1, BLOCK_CELLS // max(n_labels, 1))


class ArrayBlocks(ScoreBlocks):
    """Row blocks of a dense 2-D array (views, no copy); ``rows`` per block (default: :data:`BLOCK_CELLS`
    cells)."""

    def __init__(self, scores: NDArray[Any], rows: int | None = None) -> None:
        self.scores = scores
        self.shape = (int(scores.shape[0]), int(scores.shape[1]))
        self.rows = rows or block_rows(self.shape[1])

    def __iter__(self) -> Iterator[tuple[int, NDArray[Any]]]:
        n = self.shape[0]
        for a in range(0, n, self.rows):
            yield a, self.scores[a : a + self.rows]


class MappedBlocks(ScoreBlocks):
    def __init__(
        self, source: ScoreBlocks, fn: Callable[[NDArray[Any]], NDArray[Any]], columns: int | None = None
    ) -> None:
        self.source, self.fn = source, fn
        self.shape = (source.shape[0], source.shape[1] if columns is None else int(columns))

    def __iter__(self) -> Iterator[tuple[int, NDArray[Any]]]:
        for a, block in self.source:
            yield a, self.fn(block)

    # Through the source's each/fold, so that fn runs where the source's blocks are read.
    def each(self, fn: Callable[..., T], *args: Any) -> Iterator[tuple[int, T]]:
        return self.source.each(_mapped, self.fn, fn, *args)

    def fold(self, fn: Callable[..., T], merge: Callable[[T, T], T], *args: Any) -> T | None:
        return self.source.fold(_mapped, merge, self.fn, fn, *args)


def _mapped(
    a: int, block: NDArray[Any], inner: Callable[[NDArray[Any]], NDArray[Any]], fn: Any, *args: Any
) -> Any:
    return fn(a, inner(block), *args)


def check_block(block: NDArray[Any], name: str = "scores") -> NDArray[np.floating]:
    """A finite float block; float32 and float64 are kept (no copy), anything else -> float64."""
    s = np.asarray(block)
    if s.dtype != np.float32 and s.dtype != np.float64:
        s = s.astype(np.float64)
    if not np.isfinite(s).all():
        raise ValueError(f"{name} must be finite")
    return s


def as_blocks(scores: ArrayLike | ScoreBlocks, name: str = "scores") -> ScoreBlocks:
    """``scores`` as blocks: a :class:`ScoreBlocks` as is, a dense 2-D array checked (finite, float) and cut
    into row blocks of :data:`BLOCK_CELLS` cells."""
    if isinstance(scores, ScoreBlocks):
        return scores
    if sp.issparse(scores):
        raise ValueError(f"{name} must be a dense array, got a sparse matrix")
    s = np.asarray(scores)
    if s.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {s.shape}")
    if s.dtype != np.float32 and s.dtype != np.float64:
        s = s.astype(np.float64)
    blocks = ArrayBlocks(s)
    for _, block in blocks:  # checked in blocks: no (n, labels) boolean temporary
        check_block(block, name)
    return blocks


def row_ranges(rows: NDArray[np.int64], n: int) -> NDArray[np.int64]:
    """``ptr`` with ``rows[ptr[i]:ptr[i + 1]] == i`` for ascending ``rows`` (the positives of row i)."""
    return np.searchsorted(rows, np.arange(n + 1)).astype(np.int64)


def _gather_block(
    a: int, block: NDArray[Any], rows: NDArray[np.int64], cols: NDArray[np.int64], ptr: NDArray[np.int64]
) -> NDArray[Any]:
    lo, hi = ptr[a], ptr[a + block.shape[0]]
    return block[rows[lo:hi] - a, cols[lo:hi]]


def gather(rows: NDArray[np.int64], cols: NDArray[np.int64], blocks: ScoreBlocks) -> NDArray[Any]:
    """The scores at the cells ``(rows, cols)`` (``rows`` ascending), read block by block."""
    ptr = row_ranges(rows, blocks.shape[0])
    parts = [part for _, part in blocks.each(_gather_block, rows, cols, ptr)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float64)


def _top_block(a: int, block: NDArray[Any], k: int) -> NDArray[Any]:
    c = block.shape[1]
    part = block if k >= c else np.partition(block, c - k, axis=1)[:, c - k :]
    return -np.sort(-part, axis=1)


def top_scores(blocks: ScoreBlocks, k: int) -> NDArray[Any]:
    """[n, min(k, labels)]: each row's k largest scores, descending."""
    n, c = blocks.shape
    k = min(k, c)
    out = np.zeros((n, k))
    for a, part in blocks.each(_top_block, k):
        out[a : a + part.shape[0]] = part
    return out


__all__ = [
    "BLOCK_CELLS",
    "ArrayBlocks",
    "MappedBlocks",
    "ScoreBlocks",
    "as_blocks",
    "block_rows",
    "check_block",
    "gather",
    "row_ranges",
    "top_scores",
]
