"""Label sets as index lists and sparse matrices: how labels travel from Parquet to the loss.

A dense documents x labels matrix is built per batch only (`dense_targets`), never for a whole split: at
80,000 documents x 7,900 labels it would be 2.5 GB of float32. Whole splits are CSR matrices (0/1 int8) and
the tokenised datasets carry each row's label indices padded to a fixed width (`PAD`), which Ray Data
stores as a fixed-shape tensor column.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

if TYPE_CHECKING:  # torch only where targets are built: prepare's Ray Data tasks need not import it
    import torch

#: Padding of the label-index column (a row has fewer labels than the column's width).
PAD = -1


def _flat(arr: pa.Array | pa.ChunkedArray) -> pa.ListArray:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    if not (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type)):
        # Ray Data may hand a column of Python lists back as its pickled-object extension type.
        arr = pa.array(
            [None if v is None else [str(x) for x in v] for v in arr.to_pylist()], pa.list_(pa.string())
        )
    return arr


def csr_from_arrow(
    labels: pa.Array | pa.ChunkedArray, vocab: Sequence[str], ignore_unknown: bool = False
) -> sp.csr_matrix:
    """0/1 int8 CSR (rows x len(vocab)) from a list<string> column, in Arrow compute (no per-label Python).

    An unknown label is an error unless `ignore_unknown`; a label listed twice in a row counts once.
    """
    arr = _flat(labels)
    n = len(arr)
    if arr.null_count:
        raise ValueError(f"{arr.null_count} row(s) have null labels; expected a list of strings per row")
    flat = pc.list_flatten(arr)
    idx = pc.index_in(flat, value_set=pa.array(list(vocab), pa.string()))
    lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False).astype(np.int64)
    rows = np.repeat(np.arange(n, dtype=np.int64), lengths)
    if idx.null_count:
        if not ignore_unknown:
            bad = flat.filter(pc.is_null(idx))[0].as_py()
            raise KeyError(f"label {bad!r} is not in the label vocabulary ({len(vocab)} labels)")
        keep = pc.is_valid(idx).to_numpy(zero_copy_only=False)
        rows, idx = rows[keep], idx.filter(pc.is_valid(idx))
    cols = idx.to_numpy(zero_copy_only=False).astype(np.int64)
    m = sp.csr_matrix((np.ones(len(cols), np.int8), (rows, cols)), shape=(n, len(vocab)))
    m.data[:] = 1  # coo -> csr summed duplicates
    return m


def outside_counts(labels: pa.Array | pa.ChunkedArray, vocab: Sequence[str]) -> dict[str, int]:
    """label -> rows holding it, for the labels outside `vocab` (a label listed twice in a row counts once).

    What `csr_from_arrow(..., ignore_unknown=True)` leaves out: the evaluation counts these (zero-shot)
    positives apart, so they are neither lost nor mixed into the vocabulary's columns.
    """
    arr = _flat(labels)
    lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    flat = pc.list_flatten(arr)
    outside = pc.invert(pc.fill_null(pc.is_in(flat, value_set=pa.array(list(vocab), pa.string())), False))
    mask = np.asarray(pc.and_(outside, pc.is_valid(flat)), dtype=bool)
    if not mask.any():
        return {}
    rows = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)[mask]
    enc = pc.dictionary_encode(flat.filter(pa.array(mask)))
    codes = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    names = enc.dictionary.to_pylist()
    pairs = np.unique(rows * len(names) + codes)
    counts = np.bincount(pairs % len(names), minlength=len(names))
    return {names[i]: int(counts[i]) for i in np.flatnonzero(counts)}


def csr_from_lists(
    label_lists: Iterable[Iterable[str] | None], index: Mapping[str, int], ignore_unknown: bool = False
) -> sp.csr_matrix:
    """`csr_from_arrow` for Python lists (or numpy object arrays of label arrays)."""
    vocab = [None] * len(index)
    for lab, i in index.items():
        vocab[i] = lab
    rows = [None if r is None else list(r) for r in label_lists]
    return csr_from_arrow(pa.array(rows, pa.list_(pa.string())), vocab, ignore_unknown)


def padded_indices(y: sp.csr_matrix, width: int) -> np.ndarray:
    """(rows, width) int32 label indices of each row, padded with PAD; width must hold the longest row."""
    y = sp.csr_matrix(y)
    lengths = np.diff(y.indptr)
    if len(lengths) and lengths.max() > width:
        raise ValueError(f"a row has {lengths.max()} labels, more than the index width {width}")
    out = np.full((y.shape[0], width), PAD, dtype=np.int32)
    pos = np.arange(len(y.indices)) - np.repeat(y.indptr[:-1], lengths)
    out[np.repeat(np.arange(y.shape[0]), lengths), pos] = y.indices
    return out


def csr_from_padded(idx: np.ndarray, num_labels: int) -> sp.csr_matrix:
    """Inverse of `padded_indices`."""
    idx = np.asarray(idx)
    mask = idx != PAD
    rows = np.nonzero(mask)[0]
    cols = idx[mask].astype(np.int64)
    return sp.csr_matrix((np.ones(len(cols), np.int8), (rows, cols)), shape=(idx.shape[0], num_labels))


def dense_targets(idx: torch.Tensor, num_labels: int) -> torch.Tensor:
    """Multi-hot float32 targets (batch x labels) from a batch of padded label indices."""
    import torch

    idx = idx.long()
    spill = torch.where(idx == PAD, torch.full_like(idx, num_labels), idx)
    y = torch.zeros(idx.shape[0], num_labels + 1, dtype=torch.float32, device=idx.device)
    y.scatter_(1, spill, 1.0)
    return y[:, :num_labels]


def row_width(y: sp.csr_matrix) -> int:
    """The index width a split needs: its longest row, at least 1."""
    lengths = np.diff(sp.csr_matrix(y).indptr)
    return max(int(lengths.max()) if len(lengths) else 0, 1)
