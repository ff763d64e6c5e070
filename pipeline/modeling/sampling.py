"""Multi-label re-sampling: per-document sample weights, weighted and class-aware index draws, tail share.

A multi-label document has several labels, so "inverse class frequency" needs a rule to combine the inverse
frequencies ``1/n_j`` of the row's labels into one sample weight (the recipes users share for it;
docs/losses.md, "Sampling"):

* ``mean``: ``mean_j 1/n_j``;
* ``max``: ``max_j 1/n_j`` (the rarest label decides);
* ``geomean``: ``(prod_j 1/n_j)^(1/L)``, the L-th root of the product over the row's L labels.

``n_j = 0`` uses ``max(n_j, 1)``. A row without labels gets ``empty_weight``, by default ``1/max_j n_j``: an
unlabelled document is sampled like a document of the most frequent label (not up-weighted).

The weights are computed in Ray Data as a column (:func:`add_sample_weight_column`) and used inside each Ray
Train worker on its own shard (:func:`weighted_indices`, :func:`class_aware_indices`): seed each epoch's draw
with e.g. ``seed + 1000 * epoch + rank`` so workers and epochs draw different batches, reproducibly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

__all__ = [
    "SAMPLE_WEIGHT_MODES",
    "add_sample_weight_column",
    "class_aware_indices",
    "sample_weights",
    "tail_share",
    "weighted_indices",
]

SAMPLE_WEIGHT_MODES = ("mean", "max", "geomean")


def _label_csr(label_indices: Any, num_labels: int | None = None) -> sp.csr_matrix:
    """Binary CSR (rows x labels) from per-row index arrays, a dense 0/1 matrix or a scipy.sparse matrix."""
    if sp.issparse(label_indices):
        m = sp.csr_matrix(label_indices, dtype=np.float64)
    elif isinstance(label_indices, np.ndarray) and label_indices.ndim == 2:
        m = sp.csr_matrix((label_indices > 0).astype(np.float64))
    else:
        rows_list = [np.asarray(r, dtype=np.int64).reshape(-1) for r in label_indices]
        lengths = np.fromiter((r.size for r in rows_list), dtype=np.int64, count=len(rows_list))
        cols = np.concatenate(rows_list) if rows_list else np.zeros(0, dtype=np.int64)
        if cols.size and cols.min() < 0:
            raise ValueError("label indices must be >= 0")
        n_cols = num_labels if num_labels is not None else (int(cols.max()) + 1 if cols.size else 0)
        if cols.size and cols.max() >= n_cols:
            raise ValueError(f"label index {int(cols.max())} out of range for {n_cols} labels")
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        m = sp.csr_matrix((np.ones(cols.size), cols, indptr), shape=(len(rows_list), n_cols))
    if num_labels is not None and m.shape[1] != num_labels:
        raise ValueError(f"label matrix has {m.shape[1]} labels, expected {num_labels}")
    m.sum_duplicates()  # a label listed twice in a row counts once
    m.eliminate_zeros()
    m.data[:] = 1.0
    return m


def _counts(counts: Sequence[int] | np.ndarray) -> np.ndarray:
    n = np.asarray(counts, dtype=np.float64).reshape(-1)
    if n.size == 0 or not np.all(np.isfinite(n)) or np.any(n < 0):
        raise ValueError("counts must be a non-empty sequence of finite per-label counts >= 0")
    return n


def sample_weights(
    label_indices: Any,
    counts: Sequence[int] | np.ndarray,
    mode: str = "mean",
    empty_weight: float | None = None,
) -> np.ndarray:
    """Per-row sample weight from the inverse training frequencies of the row's labels (float64, length rows).

    label_indices: per-row label index arrays, or a rows x C 0/1 matrix (dense or scipy.sparse).
    counts: training documents per label ``n_j`` (length C); ``max(n_j, 1)`` is used.
    mode: ``"mean"``, ``"max"`` or ``"geomean"`` (see the module docstring).
    empty_weight: weight of a row with no label; default ``1 / max_j n_j``.
    """
    if mode not in SAMPLE_WEIGHT_MODES:
        raise ValueError(f"unknown sample-weight mode {mode!r}; valid: {', '.join(SAMPLE_WEIGHT_MODES)}")
    n = _counts(counts)
    m = _label_csr(label_indices, n.size)
    inv = 1.0 / np.maximum(n, 1.0)
    lengths = np.diff(m.indptr)
    rows = np.repeat(np.arange(m.shape[0]), lengths)
    vals = inv[m.indices]
    safe = np.maximum(lengths, 1)
    if mode == "mean":
        w = np.bincount(rows, weights=vals, minlength=m.shape[0]) / safe
    elif mode == "geomean":
        w = np.exp(np.bincount(rows, weights=np.log(vals), minlength=m.shape[0]) / safe)
    else:
        w = np.zeros(m.shape[0])
        np.maximum.at(w, rows, vals)
    empty = 1.0 / max(float(n.max()), 1.0) if empty_weight is None else float(empty_weight)
    if not np.isfinite(empty) or empty < 0:
        raise ValueError(f"empty_weight must be finite and >= 0, got {empty_weight}")
    w[lengths == 0] = empty
    return w


def add_sample_weight_column(
    ds: Any,
    label_to_index: Mapping[str, int],
    counts: Sequence[int] | np.ndarray,
    labels_column: str = "labels",
    mode: str = "mean",
    column: str = "sample_weight",
    empty_weight: float | None = None,
    on_unknown: str = "error",
) -> Any:
    """Add a float64 ``column`` of :func:`sample_weights` to a Ray Dataset whose ``labels_column`` is
    ``list<string>`` (computed per block with ``map_batches``, in parallel, never on the driver).

    label_to_index: the training label vocabulary (label -> column index of ``counts``).
    on_unknown: ``"error"`` (default: raise ValueError naming the label) or ``"ignore"`` (drop the label
        from the weight computation) for labels outside the vocabulary. The error is raised when the dataset
        executes (Ray surfaces it as a ``UserCodeException`` carrying the message). A null list is no label.
    An existing ``column`` is replaced.
    """
    if mode not in SAMPLE_WEIGHT_MODES:
        raise ValueError(f"unknown sample-weight mode {mode!r}; valid: {', '.join(SAMPLE_WEIGHT_MODES)}")
    if on_unknown not in ("error", "ignore"):
        raise ValueError(f"on_unknown must be 'error' or 'ignore', got {on_unknown!r}")
    n = _counts(counts)
    vocab = [None] * n.size
    for label, i in label_to_index.items():
        if not 0 <= int(i) < n.size:
            raise ValueError(f"label_to_index[{label!r}] = {i} out of range for {n.size} counts")
        vocab[int(i)] = label
    if any(v is None for v in vocab):
        raise ValueError("label_to_index must map onto every index 0..len(counts)-1")

    def _add(batch: Any) -> Any:
        import pyarrow as pa
        import pyarrow.compute as pc

        if labels_column not in batch.column_names:
            raise ValueError(f"column {labels_column!r} not found; columns: {batch.column_names}")
        col = batch.column(labels_column)
        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks() if col.num_chunks else pa.array([], type=col.type)
        if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)):
            raise ValueError(f"column {labels_column!r} must be list<string>, got {col.type}")
        values = pc.list_flatten(col)
        parents = np.asarray(pc.list_parent_indices(col), dtype=np.int64)
        idx = pc.index_in(values, value_set=pa.array(vocab, type=values.type))
        known = np.asarray(idx.is_valid())
        if not known.all():
            if on_unknown == "error":
                bad = values[int(np.argmin(known))].as_py()
                raise ValueError(
                    f"label {bad!r} in column {labels_column!r} is not in the training vocabulary "
                    f"({len(vocab)} labels); pass on_unknown='ignore' to skip such labels"
                )
        cols = np.asarray(idx.fill_null(-1), dtype=np.int64)
        keep = cols >= 0
        m = sp.csr_matrix(
            (np.ones(int(keep.sum())), (parents[keep], cols[keep])), shape=(batch.num_rows, n.size)
        )
        w = sample_weights(m, n, mode=mode, empty_weight=empty_weight)
        arr = pa.array(w, type=pa.float64())
        if column in batch.column_names:
            return batch.set_column(batch.column_names.index(column), column, arr)
        return batch.append_column(column, arr)

    return ds.map_batches(_add, batch_format="pyarrow")


def weighted_indices(weights: Sequence[float] | np.ndarray, num_samples: int, seed: int) -> np.ndarray:
    """``num_samples`` row indices drawn with replacement, ``P(row) = w_row / sum(w)`` (numpy Generator).

    Use on a worker's own shard once per epoch (``num_samples`` = shard size keeps the epoch length).
    """
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.size == 0 or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("weights must be a non-empty array of finite values >= 0 with a positive sum")
    if num_samples < 0:
        raise ValueError(f"num_samples must be >= 0, got {num_samples}")
    rng = np.random.default_rng(seed)
    return rng.choice(w.size, size=int(num_samples), replace=True, p=w / w.sum())


def class_aware_indices(label_indices: Any, num_classes: int, num_samples: int, seed: int) -> np.ndarray:
    """Class-aware sampling (Shen et al. 2016, "Relay Backpropagation"): for each draw pick a class uniformly
    among the classes present in ``label_indices``, then one of that class's rows uniformly, with replacement.

    A multi-label row can be reached through each of its labels. Rows without labels are never drawn.
    """
    m = _label_csr(label_indices, num_classes).tocsc()
    sizes = np.diff(m.indptr)
    present = np.flatnonzero(sizes)
    if present.size == 0:
        raise ValueError("class_aware_indices: no row carries any label")
    if num_samples < 0:
        raise ValueError(f"num_samples must be >= 0, got {num_samples}")
    rng = np.random.default_rng(seed)
    cls = present[rng.integers(present.size, size=int(num_samples))]
    offset = np.floor(rng.random(int(num_samples)) * sizes[cls]).astype(np.int64)
    return m.indices[m.indptr[cls] + offset].astype(np.int64)


def tail_share(label_indices: Any, indices: Sequence[int] | np.ndarray, tail_mask: Any) -> float:
    """Share of the label occurrences seen in the rows ``indices`` (repeats count each time) that are tail
    labels: ``sum_draws #tail labels of the row / sum_draws #labels of the row``; NaN if no label is seen.

    tail_mask: boolean array over labels (True = tail, e.g. ``counts <= 8``, the default tail cut-off).
    """
    mask = np.asarray(tail_mask, dtype=bool).reshape(-1)
    m = _label_csr(label_indices, mask.size)
    per_row_total = np.diff(m.indptr)
    per_row_tail = np.asarray(m @ mask.astype(np.float64)).reshape(-1)
    idx = np.asarray(indices, dtype=np.int64)
    total = per_row_total[idx].sum()
    return float(per_row_tail[idx].sum() / total) if total else float("nan")
