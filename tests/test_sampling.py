"""sampling: hand-computed weights, samplers, the Ray Data column, and the tail share on Reuters."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

from pipeline.modeling.sampling import (
    SAMPLE_WEIGHT_MODES,
    add_sample_weight_column,
    class_aware_indices,
    sample_weights,
    tail_share,
    weighted_indices,
)
from tests.conftest import shared_dataset

# counts [1, 2, 4, 0] -> inverse frequencies [1, 1/2, 1/4, 1] (n = 0 uses max(n, 1))
COUNTS = np.array([1, 2, 4, 0])
ROWS = [[0, 1], [2], [], [1, 2, 3], [0, 0]]  # an empty row; a label listed twice counts once
EXPECTED = {
    "mean": [0.75, 0.25, 0.25, (0.5 + 0.25 + 1) / 3, 1.0],
    "max": [1.0, 0.25, 0.25, 1.0, 1.0],
    "geomean": [np.sqrt(0.5), 0.25, 0.25, 0.5, 1.0],  # cube root of 1/2 * 1/4 * 1 = 1/2
}  # empty row: 1 / max(counts) = 1/4


def _dense(rows, c):
    m = np.zeros((len(rows), c))
    for k, r in enumerate(rows):
        m[k, r] = 1
    return m


@pytest.mark.parametrize("mode", SAMPLE_WEIGHT_MODES)
def test_sample_weights_hand_computed(mode):
    np.testing.assert_allclose(sample_weights(ROWS, COUNTS, mode), EXPECTED[mode], rtol=1e-12)
    dense = _dense(ROWS, 4)
    np.testing.assert_allclose(sample_weights(dense, COUNTS, mode), EXPECTED[mode], rtol=1e-12)
    np.testing.assert_allclose(sample_weights(sp.csr_matrix(dense), COUNTS, mode), EXPECTED[mode], rtol=1e-12)


def test_sample_weights_empty_row_and_errors():
    assert sample_weights([[]], COUNTS, "mean", empty_weight=2.0)[0] == 2.0
    with pytest.raises(ValueError, match="valid: mean, max, geomean"):
        sample_weights(ROWS, COUNTS, "median")
    with pytest.raises(ValueError, match="out of range"):
        sample_weights([[4]], COUNTS)
    with pytest.raises(ValueError, match="expected 4"):
        sample_weights(np.zeros((2, 3)), COUNTS)


def test_weighted_indices_follow_the_weights():
    w = np.array([1.0, 3.0, 0.0])
    idx = weighted_indices(w, 40_000, seed=1)
    assert idx.shape == (40_000,) and idx.dtype.kind == "i"
    assert not np.any(idx == 2)  # weight 0: never drawn
    assert abs(np.mean(idx == 1) - 0.75) < 0.01
    np.testing.assert_array_equal(idx, weighted_indices(w, 40_000, seed=1))  # reproducible
    assert not np.array_equal(idx, weighted_indices(w, 40_000, seed=2))
    with pytest.raises(ValueError):
        weighted_indices([0.0, 0.0], 3, seed=0)
    with pytest.raises(ValueError):
        weighted_indices([1.0, np.nan], 3, seed=0)


def test_class_aware_indices_pick_classes_uniformly():
    rows = [[0], [0], [0], [1], []]
    idx = class_aware_indices(rows, num_classes=3, num_samples=20_000, seed=0)  # class 2 is absent
    assert set(np.unique(idx)) == {0, 1, 2, 3}  # the empty row 4 is never drawn
    assert abs(np.mean(idx == 3) - 0.5) < 0.02  # class 1 has one document: half of the draws
    assert abs(np.mean(idx == 0) - 0.5 / 3) < 0.02
    np.testing.assert_array_equal(idx, class_aware_indices(rows, 3, 20_000, seed=0))
    with pytest.raises(ValueError, match="no row"):
        class_aware_indices([[], []], 2, 5, seed=0)


def test_tail_share_hand_computed():
    rows = [[0, 1], [1], [2]]
    tail = np.array([False, False, True])
    # draws 0, 2, 2: label occurrences 2 + 1 + 1 = 4, of which 2 tail
    assert tail_share(rows, [0, 2, 2], tail) == 0.5
    assert tail_share(rows, [1], tail) == 0.0
    assert np.isnan(tail_share([[], [0]], [0], np.array([True])))


# ---- Ray Data column -------------------------------------------------------------------------------------
LABELS = pa.array(
    [["a", "b"], ["c"], [], ["b", "c", "d"], None, ["a", "a"]],
    type=pa.list_(pa.string()),
)
VOCAB = {"a": 0, "b": 1, "c": 2, "d": 3}


@pytest.fixture(scope="module")
def labelled_ds(ray_session):
    table = pa.table({"id": [str(i) for i in range(len(LABELS))], "labels": LABELS})
    # three blocks, so the column is computed per block
    return ray_session.data.from_arrow([table.slice(0, 2), table.slice(2, 2), table.slice(4)])


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", SAMPLE_WEIGHT_MODES)
def test_ray_sample_weight_column(labelled_ds, mode):
    rows = add_sample_weight_column(labelled_ds, VOCAB, COUNTS, mode=mode).take_all()
    rows = sorted(rows, key=lambda r: int(r["id"]))
    got = [r["sample_weight"] for r in rows]
    expected = EXPECTED[mode][:4] + [0.25] + [1.0]  # null list = no label -> 1/max(counts)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert set(rows[0]) == {"id", "labels", "sample_weight"}


@pytest.mark.timeout(120)
def test_ray_unknown_label(ray_session):
    ds = ray_session.data.from_arrow(pa.table({"labels": pa.array([["a"], ["zz"]], pa.list_(pa.string()))}))
    with pytest.raises(Exception, match="'zz'.*not in the training vocabulary"):
        add_sample_weight_column(ds, VOCAB, COUNTS, column="w").take_all()
    got = add_sample_weight_column(ds, VOCAB, COUNTS, column="w", on_unknown="ignore").take_all()
    assert [r["w"] for r in got] == [1.0, 0.25]


# ---- Reuters: weighted batches raise the tail share ------------------------------------------------------
def test_weighted_sampling_raises_tail_share_on_reuters():
    train = shared_dataset("reuters21578") / "train"
    files = sorted(train.glob("*.parquet"))
    labels = pq.read_table(files, columns=["labels"]).column("labels").to_pylist()
    vocab = {name: i for i, name in enumerate(sorted({x for row in labels for x in row}))}
    rows = [np.array([vocab[x] for x in row], dtype=np.int64) for row in labels]
    counts = np.bincount(np.concatenate(rows), minlength=len(vocab))
    n_docs = len(rows)
    tail = counts <= 8  # the default tail cut-off (groups.tail_max)

    uniform = tail_share(rows, np.arange(n_docs), tail)  # one plain epoch sees every row once
    factors = {}
    for mode in SAMPLE_WEIGHT_MODES:
        w = sample_weights(rows, counts, mode)
        factors[mode] = tail_share(rows, weighted_indices(w, n_docs, seed=0), tail) / uniform
    factors["class-aware"] = (
        tail_share(rows, class_aware_indices(rows, len(vocab), n_docs, seed=0), tail) / uniform
    )

    print(
        f"\nReuters train: {n_docs} docs, {len(vocab)} labels, {int(tail.sum())} tail labels (<= 8 docs); "
        f"uniform tail share {uniform:.4f}; weighted / uniform: "
        + ", ".join(f"{k} x{v:.1f}" for k, v in factors.items())
    )
    assert 0 < uniform < 0.02
    for name, factor in factors.items():
        assert factor >= 5, f"{name}: tail share only x{factor:.2f} of uniform"
