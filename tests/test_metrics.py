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
from pipeline.evaluation.metrics import (
    RANKING_K,
    evaluate,
    inverse_propensities,
    ndcg_at_k,
    per_label_ap,
    precision_at_k,
    propensities,
    psndcg_at_k,
    psp_at_k,
    ranking_metrics,
)
from tests.conftest import missing_tool


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


# ---------------------------------------------------------------------- ranking and propensity-scored


def napkinxc_metrics() -> Any:
    """napkinXC's metrics module (the reference implementation), or skip / fail (CI) when missing."""
    try:
        import napkinxc.metrics as nxm
    except ImportError:
        missing_tool("napkinxc is not installed (PyPI napkinxc==0.7.2, the 'bench' extra)")
    return nxm


def test_ndcg_at_k_by_hand() -> None:
    y = np.array([[1, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]])
    s = np.array([[0.9, 0.8, 0.7, 0.1], [0.5, 0.5, 0.2, 0.4], [0.3, 0.2, 0.1, 0.0]])
    # Row 0 ranks 0,1,2,3 (hits at places 1 and 3), row 1 ranks 0,1,3,2 (tie to label 0; hit at place 3),
    # row 2 has no positive and scores 0. Row 0's ideal DCG@3 has 2 hits: 1 + 1/log2(3).
    ideal0 = 1 + 1 / np.log2(3)
    assert ndcg_at_k(y, s, 1) == pytest.approx((1 + 0 + 0) / 3)
    assert ndcg_at_k(y, s, 3) == pytest.approx(((1 + 0.5) / ideal0 + 0.5 + 0) / 3)
    assert ndcg_at_k(y, s, 5) == pytest.approx(((1 + 0.5) / ideal0 + 0.5 + 0) / 3)  # 4 labels: as @3
    assert ndcg_at_k(y, y + 0.5, 5) == 2 / 3  # a perfect ranking; the empty row scores 0
    with pytest.raises(ValueError):
        ndcg_at_k(y, s, 0)


def test_propensity_scored_by_hand() -> None:
    y = np.array([[1, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]])
    s = np.array([[0.9, 0.8, 0.7, 0.1], [0.5, 0.5, 0.2, 0.4], [0.3, 0.2, 0.1, 0.0]])
    q = np.array([1.0, 2.0, 4.0, 3.0])
    # @1: row 0 hits label 0 (q 1), row 1 misses; the best rankings put label 2 (q 4) and label 3 (q 3) first.
    assert psp_at_k(y, s, 1, q) == pytest.approx(1 / 7)
    assert psndcg_at_k(y, s, 1, q) == pytest.approx(1 / 7)
    # @3: every positive is in its row's top 3, so PSP@3 is perfect, PSnDCG@3 pays for the places.
    assert psp_at_k(y, s, 3, q) == pytest.approx(1.0)
    z0 = 1 + 1 / np.log2(3)
    got, best = (1 * 1 + 4 * 0.5) / z0 + 3 * 0.5, (4 * 1 + 1 / np.log2(3)) / z0 + 3 * 1
    assert psndcg_at_k(y, s, 3, q) == pytest.approx(got / best)
    best_first = y * q + 0.5  # each row's positives first, heaviest first: the best ranking
    assert psp_at_k(y, best_first, 5, q) == 1.0 and psndcg_at_k(y, best_first, 5, q) == pytest.approx(1.0)
    # Positives first but the light one on top: PSP@k does not see the order, PSnDCG@k does.
    assert psp_at_k(y, y + 0.5, 3, q) == 1.0 and psndcg_at_k(y, y + 0.5, 3, q) < 1.0
    # Undefined without any positive (the best achievable sum is 0).
    assert np.isnan(psp_at_k(np.zeros_like(y), s, 1, q))
    with pytest.raises(ValueError, match="inv_propensity"):
        psp_at_k(y, s, 1, q[:3])


def test_propensities_by_hand() -> None:
    counts, n, a, b = np.array([0, 10, 99]), 100, 0.55, 1.5
    c = (np.log(n) - 1) * (b + 1) ** a
    want = 1 / (1 + c * np.exp(-a * np.log(counts + b)))  # Jain et al. (2016), as written there
    np.testing.assert_allclose(propensities(counts, n), want, rtol=1e-12)
    np.testing.assert_allclose(inverse_propensities(counts, n), 1 / want, rtol=1e-12)
    assert inverse_propensities([0], 100)[0] == pytest.approx(5.7746, abs=1e-4)  # 1 + 3.60517 * (5/3)^0.55
    p = propensities(np.arange(0, 5000, 50), 10_000)
    assert (np.diff(p) > 0).all() and (p < 1).all()  # rarer labels are less likely to be observed
    with pytest.raises(ValueError):
        inverse_propensities([1, -1], 100)
    with pytest.raises(ValueError):
        inverse_propensities([1, 2], 0)
    with pytest.raises(ValueError):
        inverse_propensities([1, 2], 100, b=0.0)


def test_evaluate_adds_the_ranking_figures_to_overall_only() -> None:
    rng = np.random.default_rng(7)
    y = (rng.random((60, 9)) < 0.3).astype(np.int8)
    s = rng.integers(0, 4, (60, 9)) / 3.0
    counts = rng.integers(0, 80, 9)
    labels = [f"L{j}" for j in range(9)]
    plain = evaluate(y, y, s, labels, counts)
    res = evaluate(y, y, s, labels, counts, n_train_docs=500, propensity_a=0.6, propensity_b=2.6)
    want = ranking_metrics(y, s, RANKING_K, inverse_propensities(counts, 500, 0.6, 2.6))
    assert set(want) == {f"{m}_at_{k}" for m in ("p", "ndcg", "psp", "psndcg") for k in (1, 3, 5)}
    for key, value in want.items():
        assert res["overall"][key] == value, key
    # The existing figures do not move, and P@1 / P@3 are those of precision_at_k.
    assert {k: v for k, v in res["overall"].items() if k not in want} == {
        k: v for k, v in plain["overall"].items() if k not in want
    }
    assert res["groups"] == plain["groups"] and res["per_label"] == plain["per_label"]
    assert res["overall"]["p_at_3"] == plain["overall"]["p_at_3"] == precision_at_k(y, s, 3)
    for g in GROUPS:
        assert "p_at_5" not in res["groups"][g] and "psp_at_1" not in res["groups"][g]
    # Without the number of training documents the propensity-scored figures are null.
    assert plain["overall"]["psp_at_1"] is None and plain["overall"]["ndcg_at_5"] == want["ndcg_at_5"]
    assert "A = 0.6, B = 2.6" in res["conventions"]["propensity_scored"]
    assert_plain_json(res)
    json.dumps(res, allow_nan=False)
    empty = evaluate(y[:0], y[:0], s[:0], labels, counts, n_train_docs=500)
    assert all(empty["overall"][key] is None for key in want)


def test_ranking_metrics_sparse_dense_and_chunking_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(11)
    y = (rng.random((200, 30)) < 0.1).astype(np.int8)
    y[:5] = 0  # documents without a positive
    s = (rng.integers(0, 6, (200, 30)) / 5.0).astype(np.float32)  # many ties
    q = inverse_propensities(rng.integers(0, 300, 30), 2000)
    dense = ranking_metrics(y, s, (1, 3, 5, 40), q)
    for yt in (sp.csr_matrix(y), sp.csc_matrix(y.astype(float)), sp.csr_array(y.astype(bool))):
        assert ranking_metrics(yt, s, (1, 3, 5, 40), q) == dense
    monkeypatch.setattr(metrics_module, "_CHUNK_CELLS", 10)  # one row per chunk
    assert ranking_metrics(sp.csr_matrix(y), s, (1, 3, 5, 40), q) == dense
    for k in (1, 3, 5, 40):
        assert dense[f"p_at_{k}"] == pytest.approx(hand_p_at_k(y, s, k), abs=1e-12)
    counts = rng.integers(0, 300, 30)
    labels = [str(j) for j in range(30)]
    assert evaluate(sp.csr_matrix(y), y, s, labels, counts, n_train_docs=900) == evaluate(
        y, y, s, labels, counts, n_train_docs=900
    )


@pytest.mark.parametrize("ties", [False, True])
def test_ranking_metrics_match_napkinxc(ties: bool) -> None:
    nxm = napkinxc_metrics()
    rng = np.random.default_rng(2016)
    n, c, a, b = 300, 50, 0.55, 1.5
    y = sp.csr_matrix((rng.random((n, c)) < 0.08).astype(np.float64))
    y_train = sp.csr_matrix((rng.random((1000, c)) < rng.random(c) ** 3 * 0.3).astype(np.float64))
    counts, n_train = np.asarray(y_train.sum(axis=0)).ravel(), y_train.shape[0]
    s = rng.integers(0, 6, (n, c)) / 5.0 if ties else rng.random((n, c))
    # napkinXC ranks a score matrix with numpy's unstable argsort, so with ties it is given our ranking:
    # each row's labels by score, equal scores in label order.
    pred = [np.argsort(-row, kind="stable").tolist() for row in s] if ties else s
    for a_, b_ in ((a, b), (0.6, 2.6)):
        q = inverse_propensities(counts, n_train, a_, b_)
        np.testing.assert_allclose(q, nxm.Jain_et_al_inverse_propensity(y_train, a_, b_), rtol=0, atol=1e-9)
        np.testing.assert_allclose(
            propensities(counts, n_train, a_, b_), nxm.Jain_et_al_propensity(y_train, a_, b_), atol=1e-9
        )
    q = inverse_propensities(counts, n_train, a, b)
    got = ranking_metrics(y, s, RANKING_K, q)
    want = {
        "p": nxm.precision_at_k(y, pred, k=5),
        "ndcg": nxm.ndcg_at_k(y, pred, k=5),
        "psp": nxm.psprecision_at_k(y, pred, q, k=5),
        "psndcg": nxm.psndcg_at_k(y, pred, q, k=5),
    }
    for m, values in want.items():
        for k in RANKING_K:
            assert got[f"{m}_at_{k}"] == pytest.approx(values[k - 1], rel=0, abs=1e-9), (m, k)
