"""Labels as index lists / sparse matrices (labels.py): exact against a brute-force multi-hot."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from pipeline.data.labels import (
    PAD,
    csr_from_arrow,
    csr_from_lists,
    csr_from_padded,
    dense_targets,
    outside_counts,
    padded_indices,
    row_width,
)

VOCAB = ["a", "b", "c", "d", "e"]
ROWS = [["b", "a"], [], ["e"], ["c", "c", "d"], ["a", "b", "c", "d", "e"]]


def _brute(rows: list[list[str]]) -> np.ndarray:
    y = np.zeros((len(rows), len(VOCAB)), np.int8)
    for r, labs in enumerate(rows):
        for lab in labs:
            y[r, VOCAB.index(lab)] = 1
    return y


def test_csr_from_arrow_matches_brute_force() -> None:
    arr = pa.chunked_array([pa.array(ROWS[:2], pa.list_(pa.string())), pa.array(ROWS[2:])])
    y = csr_from_arrow(arr, VOCAB)
    np.testing.assert_array_equal(y.toarray(), _brute(ROWS))
    assert y.dtype == np.int8 and set(y.data.tolist()) == {1}  # the duplicate "c" counts once


def test_unknown_label_is_an_error_unless_ignored() -> None:
    rows = [["a", "zz"], ["b"]]
    with pytest.raises(KeyError, match="zz"):
        csr_from_lists(rows, {lab: i for i, lab in enumerate(VOCAB)})
    y = csr_from_lists(rows, {lab: i for i, lab in enumerate(VOCAB)}, ignore_unknown=True)
    np.testing.assert_array_equal(y.toarray(), _brute([["a"], ["b"]]))


def test_outside_counts_are_what_ignore_unknown_leaves_out() -> None:
    """Zero-shot labels: documents per label outside the vocabulary; known labels keep their indices."""
    rows = pa.array([["zz", "a", "zz"], None, [], ["b", "yy", "zz"], ["e"]], pa.list_(pa.string()))
    assert outside_counts(rows, VOCAB) == {"zz": 2, "yy": 1}
    assert outside_counts(pa.chunked_array([rows]), [*VOCAB, "yy", "zz"]) == {}
    y = csr_from_arrow(
        pa.array([[] if r is None else r for r in rows.to_pylist()]), VOCAB, ignore_unknown=True
    )
    np.testing.assert_array_equal(y.toarray(), _brute([["a"], [], [], ["b"], ["e"]]))


def test_pickled_object_column_is_converted() -> None:
    """Ray Data may return Python-list columns as its pickled-object extension type: same result."""
    from ray.data._internal.object_extensions.arrow import ArrowPythonObjectArray

    objects = ArrowPythonObjectArray.from_objects([np.array(r, dtype=object) for r in ROWS])
    assert not pa.types.is_list(objects.type)
    np.testing.assert_array_equal(csr_from_arrow(objects, VOCAB).toarray(), _brute(ROWS))


def test_padded_round_trip_and_dense_targets() -> None:
    y = csr_from_lists(ROWS, {lab: i for i, lab in enumerate(VOCAB)})
    width = row_width(y)
    assert width == 5
    idx = padded_indices(y, width)
    assert idx.dtype == np.int32 and idx.shape == (5, 5)
    assert (idx[1] == PAD).all()
    np.testing.assert_array_equal(csr_from_padded(idx, len(VOCAB)).toarray(), _brute(ROWS))
    dense = dense_targets(torch.from_numpy(idx), len(VOCAB))
    assert dense.dtype == torch.float32
    np.testing.assert_array_equal(dense.numpy(), _brute(ROWS).astype(np.float32))
    with pytest.raises(ValueError, match="more than the index width"):
        padded_indices(y, 2)


def test_wide_vocabulary_never_densifies_the_split() -> None:
    """7,900 labels x 130 per row: the CSR holds only the positives."""
    rng = np.random.default_rng(0)
    vocab = [f"label_{i:04d}" for i in range(7900)]
    rows = [sorted(rng.choice(7900, size=130, replace=False).tolist()) for _ in range(200)]
    y = csr_from_arrow(pa.array([[vocab[i] for i in r] for r in rows], pa.list_(pa.string())), vocab)
    assert y.shape == (200, 7900) and y.nnz == 200 * 130
    assert [sorted(y[r].indices.tolist()) for r in range(3)] == rows[:3]
