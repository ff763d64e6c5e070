"""Evaluation metrics against hand computations (and scikit-learn), overall, per group and per label."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from sklearn.metrics import average_precision_score, f1_score

import pipeline.evaluation.metrics as metrics_module
from pipeline.data.groups import GROUPS, assign_groups
from pipeline.evaluation.metrics import evaluate, per_label_ap, precision_at_k


def safe_div(a: NDArray | float, b: NDArray | float) -> NDArray:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return np.divide(a, b, out=np.zeros(np.broadcast(a, b).shape), where=b > 0)


def hand_ap(y: NDArray, s: NDArray) -> float:
    """Step-wise AP: sum over distinct score cut-offs of (recall gain) * precision."""
    order = np.argsort(-s, kind="stable")
    ys, ss = y[order], s[order]
    ap, prev_recall, tp = 0.0, 0.0, 0
    for i in range(len(ys)):
        tp += ys[i]
        if i + 1 < len(ys) and ss[i + 1] == ss[i]:
            continue
        recall = tp / ys.sum()
        ap += (recall - prev_recall) * tp / (i + 1)
        prev_recall = recall
    return ap


def hand_p_at_k(y: NDArray, s: NDArray, k: int) -> float:
    total = 0.0
    for row_y, row_s in zip(y, s, strict=True):
        top = sorted(range(len(row_s)), key=lambda j: (-row_s[j], j))[:k]
        total += sum(row_y[j] for j in top) / k
    return total / len(y)


def hand_metrics(y: NDArray, p: NDArray, s: NDArray) -> dict[str, Any]:
    """Every headline metric from counts, independent of scikit-learn."""
    y, p = y.astype(bool), p.astype(bool)
    tp = (y & p).sum(axis=0)
    fp = (~y & p).sum(axis=0)
    fn = (y & ~p).sum(axis=0)
    support = y.sum(axis=0)
    lab_p, lab_r, lab_f = safe_div(tp, tp + fp), safe_div(tp, tp + fn), safe_div(2 * tp, 2 * tp + fp + fn)
    out: dict[str, Any] = {}
    out["micro_precision"] = float(safe_div(tp.sum(), tp.sum() + fp.sum()))
    out["micro_recall"] = float(safe_div(tp.sum(), tp.sum() + fn.sum()))
    out["micro_f1"] = float(safe_div(2 * tp.sum(), 2 * tp.sum() + fp.sum() + fn.sum()))
    for name, v in (("precision", lab_p), ("recall", lab_r), ("f1", lab_f)):
        out[f"macro_{name}"] = float(v.mean())
        out[f"weighted_{name}"] = float(safe_div((v * support).sum(), support.sum()))
    inter = (y & p).sum(axis=1)
    n_true, n_pred = y.sum(axis=1), p.sum(axis=1)
    out["samples_precision"] = float(safe_div(inter, n_pred).mean())
    out["samples_recall"] = float(safe_div(inter, n_true).mean())
    out["samples_f1"] = float(safe_div(2 * inter, n_true + n_pred).mean())
    out["hamming_loss"] = float((y != p).mean())
    out["subset_accuracy"] = float((y == p).all(axis=1).mean())
    has = support > 0
    aps = [hand_ap(y[:, j].astype(int), s[:, j]) for j in np.flatnonzero(has)]
    out["macro_ap"] = float(np.mean(aps)) if aps else None
    out["macro_ap_n_labels"] = int(has.sum())
    out["macro_ap_n_excluded"] = int((~has).sum())
    out["micro_auprc"] = hand_ap(y.ravel().astype(int), s.ravel()) if y.any() else None
    out["p_at_1"] = hand_p_at_k(y.astype(int), s, 1)
    out["p_at_3"] = hand_p_at_k(y.astype(int), s, 3)
    out["labels_with_f1_gt_0"] = int((lab_f > 0).sum())
    out["n_labels"] = y.shape[1]
    out["n_docs"] = y.shape[0]
    return out


def assert_metrics_equal(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert set(want) <= set(got)
    for key, value in want.items():
        if value is None or isinstance(value, int):
            assert got[key] == value, key
        else:
            assert got[key] == pytest.approx(value, abs=1e-10), key


def assert_plain_json(x: Any) -> None:
    """Only python scalars and containers: numpy scalars would break strict JSON writers."""
    if isinstance(x, dict):
        for k, v in x.items():
            assert type(k) is str
            assert_plain_json(v)
    elif isinstance(x, list):
        for v in x:
            assert_plain_json(v)
    else:
        assert type(x) in (int, float, str, bool, type(None)), (x, type(x))


@st.composite
def evaluation_data(draw: st.DrawFn) -> tuple[NDArray, NDArray, NDArray, NDArray]:
    """Random labels, decisions, scores and train counts with every edge case forced in."""
    n = draw(st.integers(2, 30))
    c = draw(st.integers(2, 9))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    y = (rng.random((n, c)) < draw(st.sampled_from([0.1, 0.3, 0.6]))).astype(np.int8)
    p = (rng.random((n, c)) < draw(st.sampled_from([0.1, 0.3, 0.6]))).astype(np.int8)
    y[0] = 0  # a document with no true label
    p[1] = 0  # a document with no predicted label
    p[:, 0] = 0  # a label never predicted
    y[:, 1] = 0  # a label with no positives
    s = rng.integers(0, 5, (n, c)) / 4.0 if draw(st.booleans()) else rng.random((n, c))
    counts = rng.integers(0, 60, c)
    return y, p, s, counts


@settings(max_examples=30, deadline=None)
@given(evaluation_data())
def test_evaluate_matches_hand_computation(data: tuple[NDArray, NDArray, NDArray, NDArray]) -> None:
    y, p, s, counts = data
    labels = [f"L{j}" for j in range(y.shape[1])]
    res = evaluate(y, p, s, labels, counts)
    assert_metrics_equal(res["overall"], hand_metrics(y, p, s))
    groups = assign_groups(counts)
    for g in GROUPS:
        cols = np.flatnonzero(groups == g)
        if cols.size:
            assert_metrics_equal(res["groups"][g], hand_metrics(y[:, cols], p[:, cols], s[:, cols]))
        else:
            assert res["groups"][g]["n_labels"] == 0 and res["groups"][g]["micro_f1"] is None
        assert res["labels_with_f1_gt_0"][g] == res["groups"][g]["labels_with_f1_gt_0"]
    # sklearn agrees with the hand computation on the headline F1s.
    for avg in ("micro", "macro", "weighted", "samples"):
        assert res["overall"][f"{avg}_f1"] == pytest.approx(f1_score(y, p, average=avg, zero_division=0))
    tp = (y & p).sum(axis=0)
    for j, row in enumerate(res["per_label"]):
        assert row["label"] == labels[j] and row["group"] == groups[j] and row["train_count"] == counts[j]
        assert row["support"] == row["true_count"] == y[:, j].sum()
        assert row["predicted_count"] == p[:, j].sum() and row["true_positives"] == tp[j]
        if y[:, j].sum():
            assert row["over_prediction"] == pytest.approx(p[:, j].sum() / y[:, j].sum())
            assert row["ap"] == pytest.approx(average_precision_score(y[:, j], s[:, j]))
        else:
            assert row["over_prediction"] is None and row["ap"] is None
        assert row["f1"] == pytest.approx(2 * tp[j] / max(y[:, j].sum() + p[:, j].sum(), 1))
    never = {labels[j] for j in range(len(labels)) if y[:, j].sum() > 0 and tp[j] == 0}
    assert set(res["never_correct"]) == never
    assert "L0" in res["never_correct"] or y[:, 0].sum() == 0  # never predicted, so never right
    assert "L1" in res["labels_without_positives"]
    assert_plain_json(res)
    json.dumps(res, allow_nan=False)


def test_macro_averages_over_the_whole_vocabulary() -> None:
    # Label c is absent from the evaluated set and never predicted: it still counts, as 0.
    y = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0]])
    p = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0]])
    s = p * 0.9 + 0.05
    res = evaluate(y, p, s, ["a", "b", "c"], [50, 50, 50])
    assert res["overall"]["macro_f1"] == pytest.approx(2 / 3)
    assert res["overall"]["micro_f1"] == 1.0
    assert res["overall"]["macro_ap"] == 1.0 and res["overall"]["macro_ap_n_excluded"] == 1
    assert res["labels_with_f1_gt_0"]["overall"] == 2
    assert res["never_correct"] == [] and res["labels_without_positives"] == ["c"]
    assert res["conventions"]["zero_division"] == 0


def test_precision_at_k_by_hand() -> None:
    y = np.array([[1, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]])
    s = np.array([[0.9, 0.8, 0.7, 0.1], [0.5, 0.5, 0.2, 0.4], [0.3, 0.2, 0.1, 0.0]])
    # Row 0: top1 {0} -> 1, top3 {0,1,2} -> 2/3. Row 1: tie 0/1 goes to 0 -> 0; top3 {0,1,3} -> 1/3. Row 2: 0.
    assert precision_at_k(y, s, 1) == pytest.approx((1 + 0 + 0) / 3)
    assert precision_at_k(y, s, 3) == pytest.approx((2 / 3 + 1 / 3 + 0) / 3)
    # k larger than the label set still divides by k.
    assert precision_at_k(y[:, :2], s[:, :2], 3) == pytest.approx((1 / 3) / 3)
    with pytest.raises(ValueError):
        precision_at_k(y, s, 0)


def test_assign_groups_boundaries() -> None:
    groups = assign_groups([0, 8, 9, 34, 35, 1000])
    assert groups.tolist() == ["tail", "tail", "medium", "medium", "head", "head"]
    assert assign_groups([3, 4, 5], head_min=5, tail_max=3).tolist() == ["tail", "medium", "head"]
    with pytest.raises(ValueError):
        assign_groups([1, 2], head_min=5, tail_max=5)


def test_single_label_and_empty_groups() -> None:
    rng = np.random.default_rng(2)
    y = (rng.random((40, 3)) < 0.4).astype(np.int8)
    p = (rng.random((40, 3)) < 0.4).astype(np.int8)
    s = rng.random((40, 3))
    res = evaluate(y, p, s, ["h", "m1", "m2"], [100, 20, 20])
    assert res["groups"]["head"]["n_labels"] == 1
    assert_metrics_equal(res["groups"]["head"], hand_metrics(y[:, :1], p[:, :1], s[:, :1]))
    assert_metrics_equal(res["groups"]["medium"], hand_metrics(y[:, 1:], p[:, 1:], s[:, 1:]))
    tail = res["groups"]["tail"]
    assert tail["n_labels"] == 0 and tail["macro_f1"] is None and tail["p_at_1"] is None
    one = evaluate(y[:, :1], p[:, :1], s[:, :1], ["h"], [100])
    assert_metrics_equal(one["overall"], hand_metrics(y[:, :1], p[:, :1], s[:, :1]))
    assert one["per_label"][0]["f1"] == pytest.approx(f1_score(y[:, 0], p[:, 0]))


def test_rejects_mismatched_inputs() -> None:
    y = np.zeros((3, 2), dtype=int)
    with pytest.raises(ValueError):
        evaluate(y, y, np.zeros((3, 3)), ["a", "b"], [1, 2])
    with pytest.raises(ValueError):
        evaluate(y, y, np.zeros((3, 2)), ["a"], [1, 2])
    with pytest.raises(ValueError):
        evaluate(y, y + 2, np.zeros((3, 2)), ["a", "b"], [1, 2])


# ------------------------------------------------------------------------------- sparse ground truth


@settings(max_examples=30, deadline=None)
@given(evaluation_data(), st.booleans())
def test_sparse_and_dense_give_identical_results(
    data: tuple[NDArray, NDArray, NDArray, NDArray], float32: bool
) -> None:
    y, p, s, counts = data
    if float32:
        s = s.astype(np.float32)
    labels = [f"L{j}" for j in range(y.shape[1])]
    dense = evaluate(y, p, s, labels, counts)
    for yt, yp in (
        (sp.csr_matrix(y), p),
        (sp.csr_matrix(y), sp.csr_matrix(p)),
        (sp.csc_matrix(y.astype(np.float32)), sp.coo_matrix(p)),
        (sp.csr_array(y.astype(bool)), p.astype(bool)),
    ):
        assert evaluate(yt, yp, s, labels, counts) == dense
    np.testing.assert_array_equal(per_label_ap(sp.csr_matrix(y), s), per_label_ap(y, s))
    for k in (1, 2, 3, 50):
        assert precision_at_k(sp.csr_matrix(y), s, k) == precision_at_k(y, s, k)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 40), st.integers(1, 12), st.booleans())
def test_ap_and_precision_at_k_match_references(seed: int, n: int, c: int, ties: bool) -> None:
    rng = np.random.default_rng(seed)
    y = (rng.random((n, c)) < 0.3).astype(np.int8)
    s = rng.integers(0, 3, (n, c)) / 2.0 if ties else rng.random((n, c))
    ap = per_label_ap(sp.csr_matrix(y), s)
    for j in range(c):
        if y[:, j].any():
            assert ap[j] == pytest.approx(average_precision_score(y[:, j], s[:, j]), abs=1e-12)
        else:
            assert np.isnan(ap[j])
    for k in (1, 3, c, c + 2):
        assert precision_at_k(sp.csr_matrix(y), s, k) == pytest.approx(hand_p_at_k(y, s, k), abs=1e-12)


def test_precision_at_k_ties_across_row_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    # Rows are ranked in chunks; ties (to the lower label index) must not depend on the chunking.
    rng = np.random.default_rng(5)
    y = (rng.random((50, 7)) < 0.4).astype(np.int8)
    s = rng.integers(0, 2, (50, 7)) / 1.0  # mostly ties
    want = {k: hand_p_at_k(y, s, k) for k in (1, 3)}
    monkeypatch.setattr(metrics_module, "_CHUNK_CELLS", 10)  # one row per chunk
    for k in (1, 3):
        assert precision_at_k(sp.csr_matrix(y), s, k) == pytest.approx(want[k])
    res = evaluate(y, y, s, [str(j) for j in range(7)], np.full(7, 100))
    assert res["overall"]["p_at_1"] == pytest.approx(want[1])
    assert res["overall"]["p_at_3"] == pytest.approx(want[3])


def test_sparse_inputs_are_checked_and_left_alone() -> None:
    y = np.array([[1, 0, 1], [0, 1, 0]])
    s = np.array([[0.9, 0.2, 0.4], [0.1, 0.8, 0.3]])
    unsorted = sp.csr_matrix((np.array([1, 1, 1]), np.array([2, 0, 1]), np.array([0, 2, 3])), shape=(2, 3))
    unsorted.has_sorted_indices = False
    before = unsorted.indices.copy()
    assert evaluate(unsorted, y, s, ["a", "b", "c"], [50, 20, 1]) == evaluate(
        y, y, s, ["a", "b", "c"], [50, 20, 1]
    )
    np.testing.assert_array_equal(unsorted.indices, before)
    with pytest.raises(ValueError, match="only 0 and 1"):
        evaluate(sp.csr_matrix(y * 3), y, s, ["a", "b", "c"], [1, 2, 3])
    with pytest.raises(ValueError, match="finite"):
        evaluate(sp.csr_matrix(y), y, np.where(y > 0, np.nan, s), ["a", "b", "c"], [1, 2, 3])
    with pytest.raises(ValueError, match="one shape"):
        evaluate(sp.csr_matrix((2, 4)), y, s, ["a", "b", "c"], [1, 2, 3])
