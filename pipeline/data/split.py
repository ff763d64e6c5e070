"""Iterative stratification (Sechidis et al. 2011) on label sets, never text: vectorised, O(nnz + L^2) numpy.

"Bulk" iterative stratification: repeatedly take the label with the fewest unassigned rows, shuffle those rows
(seeded) and divide them among the splits in proportion to each split's remaining desire for that label
(largest-remainder rounding), then subtract the label counts of the rows just placed from every label's
desires. Rows with no label are placed last, by each split's remaining size desire. Nothing is ever densified:
the label matrix stays CSR/CSC, and per-step updates are one np.bincount over the placed rows' labels.

scikit-multilearn's IterativeStratification (order=1) computes the same kind of split but row by row in
Python (243 s and 1 GB at 1e5 rows x 1,000 labels); it is kept as a dependency only as the reference that
benchmarks/split_scaling.py and tests/test_split.py compare against.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np
import scipy.sparse as sp

_EPS = 1e-9


def label_matrix(label_rows: Sequence[Sequence[int]], num_labels: int) -> sp.csr_matrix:
    """Binary CSR (rows x num_labels, int8) from one list of label indices per row."""
    n = len(label_rows)
    lengths = np.fromiter(map(len, label_rows), dtype=np.int64, count=n)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    nnz = int(indptr[-1])
    indices = np.fromiter(itertools.chain.from_iterable(label_rows), dtype=np.int64, count=nnz)
    return _binary_csr(indptr, indices, n, num_labels)


def _binary_csr(indptr: np.ndarray, indices: np.ndarray, n: int, num_labels: int) -> sp.csr_matrix:
    if len(indices) and (indices.min() < 0 or indices.max() >= num_labels):
        raise ValueError(f"label index out of range [0, {num_labels})")
    idx_dtype = np.int32 if max(len(indices), num_labels) < np.iinfo(np.int32).max else np.int64
    y = sp.csr_matrix(
        (np.ones(len(indices), dtype=np.int8), indices.astype(idx_dtype), indptr.astype(idx_dtype)),
        shape=(n, num_labels),
    )
    y.sum_duplicates()  # sorts each row's labels; a label listed twice in a row counts once
    y.data[:] = 1
    return y


def stratified_assign(y: sp.csr_matrix, ratios: dict[str, float], seed: int) -> np.ndarray:
    """Assign each row to a split (returns split names) so each label's rows follow `ratios`.

    `y` is a (rows x labels) sparse 0/1 matrix (any nonzero counts as present). The same seed gives the same
    assignment. The first split named in `ratios` is the one that must hold every label: a label with no row
    there after stratification gets one row moved in, so the training vocabulary covers every label.
    """
    names = list(ratios)
    if y.shape[0] < len(names):
        raise ValueError(f"cannot split {y.shape[0]} rows into {len(names)} splits {names}")
    weights = np.asarray([ratios[n] for n in names], dtype=np.float64)
    if not np.all(np.isfinite(weights)) or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"split ratios must be non-negative and not all zero: {ratios}")
    y = _structure(y)
    csc = y.tocsc()
    codes = _stratify(y, csc, weights / weights.sum(), np.random.default_rng(seed))
    _ensure_in_first(y, codes, csc)
    return np.asarray(names, dtype=object)[codes]


def proportion_error(y: sp.spmatrix, assignment: np.ndarray, ratios: Mapping[str, float]) -> dict[str, float]:
    """How far each label's split proportions are from `ratios` (labels with at least one row only).

    `assignment` holds split names (or fold indices in `ratios` order). Returns
    - `mean_abs_error`: mean over (label, split) pairs of |rows of the label in the split / its rows - ratio|;
    - `zero_desired_gt0`: fraction of (label, split) pairs with ratio * label rows > 0 that got none of them;
    - `zero_desired_ge1`: the same among pairs whose desired count is at least one row;
    - `size_abs_error`: the largest |split rows / rows - ratio|.
    """
    names = list(ratios)
    weights = np.asarray([ratios[n] for n in names], dtype=np.float64)
    weights = weights / weights.sum()
    assignment = np.asarray(assignment)
    if assignment.dtype.kind in "iu":
        codes = assignment.astype(np.int64)
    else:
        lookup = {n: i for i, n in enumerate(names)}
        codes = np.fromiter((lookup[a] for a in assignment), dtype=np.int64, count=len(assignment))
    y = _structure(y)
    n, num_labels = y.shape
    row_of = np.repeat(np.arange(n), np.diff(y.indptr))
    per_fold = np.bincount(codes[row_of] * num_labels + y.indices, minlength=len(names) * num_labels)
    per_fold = per_fold.reshape(len(names), num_labels)
    total = per_fold.sum(0)
    present = total > 0
    frac = per_fold[:, present] / total[present]
    desired = weights[:, None] * total[present]
    zero = per_fold[:, present] == 0
    sizes = np.bincount(codes, minlength=len(names)) / max(n, 1)
    return {
        "mean_abs_error": float(np.abs(frac - weights[:, None]).mean()) if present.any() else 0.0,
        "zero_desired_gt0": float(zero[desired > 0].mean()) if (desired > 0).any() else 0.0,
        "zero_desired_ge1": float(zero[desired >= 1].mean()) if (desired >= 1).any() else 0.0,
        "size_abs_error": float(np.abs(sizes - weights).max()),
    }


def _structure(y: sp.spmatrix) -> sp.csr_matrix:
    """CSR with sorted, unique column indices per row and no explicit zeros (the values are not used)."""
    y = sp.csr_matrix(y)
    if not y.has_canonical_format or (len(y.data) and not np.all(y.data)):
        y = y.copy()
        y.sum_duplicates()
        y.eliminate_zeros()
    return y


def _gather(indptr: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions in `indices` of the entries of `rows` (concatenated, row by row) and each row's length."""
    starts = indptr[rows].astype(np.int64)
    lengths = indptr[rows + 1].astype(np.int64) - starts
    out_starts = np.cumsum(lengths) - lengths
    positions = np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(out_starts - starts, lengths)
    return positions, lengths


def _apportion(
    k: int,
    desire: np.ndarray,
    size_desire: np.ndarray,
    weights: np.ndarray,
    rng: np.random.Generator,
    first_needs_one: bool = False,
) -> np.ndarray:
    """Split k rows among folds in proportion to their positive desire, by largest remainder.

    Ties between remainders go to the fold with the larger remaining size desire, then at random. With no
    positive desire, the remaining size desire (then the ratios) is used instead. `first_needs_one` gives fold
    0 at least one row, taken from the fold that is most over its quota.
    """
    share = np.maximum(desire, 0.0)
    if share.sum() <= _EPS:
        share = np.maximum(size_desire, 0.0)
        if share.sum() <= _EPS:
            share = weights.copy()
    quota = k * share / share.sum()
    counts = np.floor(quota + _EPS).astype(np.int64)
    left = k - int(counts.sum())
    if left > 0:
        remainder = np.round(quota - counts, 9)
        order = np.lexsort((rng.random(len(quota)), -size_desire, -remainder))
        counts[order[:left]] += 1
    elif left < 0:  # floor(q + eps) overshot on values a hair below an integer
        order = np.argsort(quota - counts, kind="stable")
        counts[order[:-left]] -= 1
    if first_needs_one and k > 0 and counts[0] == 0 and weights[0] > 0:
        donor = int(np.argmax(np.where(counts > 0, counts - quota, -np.inf)))
        counts[donor] -= 1
        counts[0] += 1
    return counts


def _stratify(
    y: sp.csr_matrix, csc: sp.csc_matrix, weights: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    n, num_labels = y.shape
    folds = len(weights)
    label_count = np.diff(csc.indptr).astype(np.int64)
    desire = weights[:, None] * label_count[None, :]  # (fold, label) rows of the label the fold still wants
    size_desire = weights * n  # rows each fold still wants
    remaining = label_count.copy()  # unassigned rows per label
    codes = np.full(n, -1, dtype=np.int64)
    # Fewest remaining rows first; equal counts in a seeded random order.
    tie_rank = rng.permutation(num_labels).astype(np.int64)
    done = np.iinfo(np.int64).max
    key = np.where(remaining > 0, remaining * num_labels + tie_rank, done)
    fold_ids = np.arange(folds)
    while key.size:
        label = int(np.argmin(key))
        if key[label] == done:
            break
        rows = csc.indices[csc.indptr[label] : csc.indptr[label + 1]]
        rows = rng.permutation(rows[codes[rows] < 0])
        in_first = weights[0] * label_count[label] - desire[0, label]
        counts = _apportion(len(rows), desire[:, label], size_desire, weights, rng, in_first < 0.5)
        fold_of_row = np.repeat(fold_ids, counts)
        codes[rows] = fold_of_row
        size_desire -= counts
        positions, lengths = _gather(y.indptr, rows)
        flat = np.repeat(fold_of_row, lengths) * num_labels + y.indices[positions]
        placed = np.bincount(flat, minlength=folds * num_labels).reshape(folds, num_labels)
        desire -= placed
        remaining -= placed.sum(0)
        key = np.where(remaining > 0, remaining * num_labels + tie_rank, done)
    # Rows with no label: by each fold's remaining size desire.
    free = np.flatnonzero(codes < 0)
    if len(free):
        counts = _apportion(len(free), size_desire, size_desire, weights, rng)
        codes[rng.permutation(free)] = np.repeat(fold_ids, counts)
    return codes


def _ensure_in_first(y: sp.csr_matrix, codes: np.ndarray, csc: sp.csc_matrix | None = None) -> None:
    """Move one row of every label absent from fold 0 into fold 0 (its lowest-numbered row)."""
    present = np.asarray((y != 0).sum(0)).ravel() if csc is None else np.diff(csc.indptr)
    in_first = y.T @ (codes == 0).astype(np.int64)
    missing = np.flatnonzero((present > 0) & (in_first == 0))
    if len(missing) == 0:
        return
    csc = sp.csc_matrix(y != 0) if csc is None else csc
    csc.sort_indices()
    for label in missing:
        rows = csc.indices[csc.indptr[label] : csc.indptr[label + 1]]
        if not (codes[rows] == 0).any():  # an earlier move may already have brought this label in
            codes[rows[0]] = 0
