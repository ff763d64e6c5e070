"""Scores as consecutive row blocks: what thresholds and metrics read, so that no documents x labels matrix
is held at once.

Every figure of the report is a sum over documents of per-block counts (positives' scores, scores below a
cut, per-row top k, decisions), so the arithmetic reads the scores block by block, as often as it needs:
from a dense array (:class:`ArrayBlocks`, views of it: tests and small label spaces) or from the scored
Ray dataset of the evaluate stage (``pipeline.evaluation.scoring.DatasetBlocks``), whose blocks are read from
the object store on each pass. Memory is then one block and O(positives) arrays, whatever the documents.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike, NDArray

#: Score cells per block of :func:`as_blocks` (16 MB of float32).
BLOCK_CELLS = 4_000_000


class ScoreBlocks:
    """Scores of shape ``shape`` as ``(first row, block [rows, labels])`` pairs, in row order.

    Iterating again reads them again; subclasses define :meth:`__iter__` and set ``shape``."""

    shape: tuple[int, int]

    def __iter__(self) -> Iterator[tuple[int, NDArray[Any]]]:
        raise NotImplementedError

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


def gather(rows: NDArray[np.int64], cols: NDArray[np.int64], blocks: ScoreBlocks) -> NDArray[Any]:
    """The scores at the cells ``(rows, cols)`` (``rows`` ascending), read block by block."""
    ptr = row_ranges(rows, blocks.shape[0])
    out: NDArray[Any] | None = None
    for a, block in blocks:
        b = a + block.shape[0]
        lo, hi = ptr[a], ptr[b]
        if out is None:
            out = np.empty(rows.size, dtype=block.dtype)
        out[lo:hi] = block[rows[lo:hi] - a, cols[lo:hi]]
    return out if out is not None else np.zeros(0, dtype=np.float64)


def top_scores(blocks: ScoreBlocks, k: int) -> NDArray[Any]:
    """[n, min(k, labels)]: each row's k largest scores, descending."""
    n, c = blocks.shape
    k = min(k, c)
    out = np.zeros((n, k))
    for a, block in blocks:
        part = block if k >= c else np.partition(block, c - k, axis=1)[:, c - k :]
        out[a : a + block.shape[0]] = -np.sort(-part, axis=1)
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
