"""Iterative stratification (Sechidis et al. 2011, via scikit-multilearn) on label sets, never text."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from skmultilearn.model_selection import IterativeStratification


def label_matrix(label_rows: list[list[int]], num_labels: int) -> sp.csr_matrix:
    indptr = np.zeros(len(label_rows) + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(r) for r in label_rows])
    indices = np.fromiter((i for r in label_rows for i in r), dtype=np.int64, count=int(indptr[-1]))
    data = np.ones(len(indices), dtype=np.int8)
    return sp.csr_matrix((data, indices, indptr), shape=(len(label_rows), num_labels))


def stratified_assign(y: sp.csr_matrix, ratios: dict[str, float], seed: int) -> np.ndarray:
    """Assign each row to a split (returns split names) so each label's rows follow `ratios`.

    The first split named in `ratios` is the one that must hold every label: a label with no row there
    after stratification gets one row moved in, so the training vocabulary covers every label.
    """
    names = list(ratios)
    if y.shape[0] < len(names):
        raise ValueError(f"cannot split {y.shape[0]} rows into {len(names)} splits {names}")
    # scikit-multilearn draws ties and label-free rows from numpy's global generator and ignores random_state.
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        strat = IterativeStratification(
            n_splits=len(names), order=1, sample_distribution_per_fold=[ratios[n] for n in names]
        )
        codes = np.full(y.shape[0], -1, dtype=np.int64)
        x = np.zeros((y.shape[0], 1))
        for fold, (_, test_idx) in enumerate(strat.split(x, y)):
            codes[test_idx] = fold
    finally:
        np.random.set_state(state)
    _ensure_in_first(y, codes)
    return np.asarray(names, dtype=object)[codes]


def _ensure_in_first(y: sp.csr_matrix, codes: np.ndarray) -> None:
    csc = y.tocsc()
    for label in range(y.shape[1]):
        rows = csc.indices[csc.indptr[label] : csc.indptr[label + 1]]
        if len(rows) and not (codes[rows] == 0).any():
            codes[rows[0]] = 0
