"""Threshold search: exactness against brute force, fallback, the micro-F1 floor, decisions, JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from sklearn.metrics import f1_score

from pipeline.core.config import EvaluateSection
from pipeline.evaluation.blocks import ArrayBlocks
from pipeline.evaluation.thresholds import (
    STRATEGIES,
    ThresholdResult,
    apply_thresholds,
    best_f1_thresholds,
    best_global_threshold,
    fit_thresholds,
    fit_thresholds_with,
    prior_matched_thresholds,
)

FAST = settings(max_examples=60, deadline=None)


@st.composite
def label_matrices(draw: st.DrawFn, max_n: int = 25, max_c: int = 6) -> tuple[NDArray, NDArray]:
    """0/1 labels and scores; coarse integer scores half the time so ties are common."""
    n = draw(st.integers(1, max_n))
    c = draw(st.integers(1, max_c))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    density = draw(st.sampled_from([0.05, 0.2, 0.5]))
    y = (rng.random((n, c)) < density).astype(np.int8)
    if draw(st.booleans()):
        s = rng.integers(0, 6, (n, c)) / 5.0
    else:
        s = np.clip(rng.random((n, c)) * 0.6 + 0.4 * y * rng.random((n, c)), 0, 1)
    return y, s


def hand_f1(y: NDArray, pred: NDArray) -> NDArray:
    """Per-column F1 = 2TP / (2TP + FP + FN), 0 when nothing is true or predicted."""
    y, pred = np.atleast_2d(y.T).T.astype(bool), np.atleast_2d(pred.T).T.astype(bool)
    tp = (y & pred).sum(axis=0)
    denom = y.sum(axis=0) + pred.sum(axis=0)
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)


def hand_micro_f1(y: NDArray, pred: NDArray) -> float:
    return float(hand_f1(y.reshape(-1), pred.reshape(-1))[0])


def brute_force_f1(y: NDArray, s: NDArray) -> tuple[float, float]:
    """Best F1 and highest score reaching it, trying every distinct score as a `>=` cut-off."""
    best, best_c = 0.0, np.nan
    for cut in sorted(set(s.tolist()), reverse=True):
        f = float(hand_f1(y, s >= cut)[0])
        if f > best + 1e-12:
            best, best_c = f, cut
    return best, best_c


@FAST
@given(label_matrices())
def test_per_label_thresholds_match_brute_force(data: tuple[NDArray, NDArray]) -> None:
    y, s = data
    thr, f1, support = best_f1_thresholds(y, s)
    np.testing.assert_array_equal(support, y.sum(axis=0))
    for j in range(y.shape[1]):
        if y[:, j].sum() == 0:
            assert np.isnan(thr[j]) and f1[j] == 0.0
            continue
        best, cut = brute_force_f1(y[:, j], s[:, j])
        assert f1[j] == pytest.approx(best, abs=1e-12)
        # The threshold picks exactly the brute-force decision set, and scores that F1 itself.
        np.testing.assert_array_equal(s[:, j] >= thr[j], s[:, j] >= cut)
        assert f1_score(y[:, j], s[:, j] >= thr[j]) == pytest.approx(best, abs=1e-12)
        lower = s[:, j][s[:, j] < cut]
        if lower.size:
            assert lower.max() < thr[j] <= cut
            assert thr[j] == pytest.approx((cut + lower.max()) / 2)
        else:
            assert thr[j] == cut


@FAST
@given(label_matrices())
def test_global_threshold_matches_brute_force_micro_f1(data: tuple[NDArray, NDArray]) -> None:
    y, s = data
    t, micro = best_global_threshold(y, s)
    if y.sum() == 0:
        assert (t, micro) == (0.5, 0.0)
        return
    best = max(hand_micro_f1(y, s >= cut) for cut in np.unique(s))
    assert micro == pytest.approx(best, abs=1e-12)
    assert hand_micro_f1(y, apply_thresholds(s, t)) == pytest.approx(best)


def test_crafted_threshold_midpoint_and_tie_rule() -> None:
    # F1 at cut 0.9/0.8/0.7/0.6/0.2: 0.5, 0.8, 0.667, 0.857, 0.75 -> cut 0.6, midpoint to 0.2.
    y = np.array([[1], [1], [0], [1], [0]])
    s = np.array([[0.9], [0.8], [0.7], [0.6], [0.2]])
    thr, f1, support = best_f1_thresholds(y, s)
    assert thr[0] == pytest.approx(0.4) and f1[0] == pytest.approx(6 / 7) and support[0] == 3
    # F1 2/3 both at cut 0.9 (1 of 1 predicted right) and at cut 0.3 (2 of 4): the higher threshold wins.
    y2 = np.array([[1], [0], [0], [1], [0]])
    s2 = np.array([[0.9], [0.7], [0.5], [0.3], [0.1]])
    thr2, f12, _ = best_f1_thresholds(y2, s2)
    assert f12[0] == pytest.approx(2 / 3)
    assert thr2[0] == pytest.approx(0.8)
    y3 = np.array([[1], [0], [0], [0], [1], [1]])
    s3 = np.array([[0.9], [0.8], [0.8], [0.7], [0.5], [0.4]])
    # cut 0.9: 2/4; cut 0.5: 4/8; cut 0.4: 6/9 -> predict all, threshold = the lowest score.
    thr3, f13, _ = best_f1_thresholds(y3, s3)
    assert f13[0] == pytest.approx(2 / 3) and thr3[0] == 0.4


def test_adjacent_floats_keep_the_decision_set() -> None:
    hi = 0.5
    lo = np.nextafter(hi, 0.0)
    y = np.array([[1], [0]])
    s = np.array([[hi], [lo]])
    thr, _, _ = best_f1_thresholds(y, s)
    np.testing.assert_array_equal(apply_thresholds(s, thr)[:, 0], [1, 0])


def imbalanced(seed: int, n: int = 1500) -> tuple[NDArray, NDArray, list[str]]:
    """Head labels scored around 0.5; rare labels compressed toward 0 (positives ~0.25, negatives ~0.1)."""
    rng = np.random.default_rng(seed)
    priors = np.array([0.3, 0.25, 0.2, 0.04, 0.03, 0.02, 0.02])
    y = (rng.random((n, priors.size)) < priors).astype(np.int8)
    scale = np.where(priors >= 0.1, 1.0, 0.35)
    s = scale * np.clip(0.25 + 0.45 * y + rng.normal(0, 0.15, y.shape), 0, 1)
    return y, s, [f"l{j}" for j in range(priors.size)]


def test_beats_fixed_half_on_imbalanced_scores() -> None:
    y_val, s_val, labels = imbalanced(0)
    y_test, s_test, _ = imbalanced(1)
    res = fit_thresholds(y_val, s_val, labels)
    half = (s_test >= 0.5).astype(int)
    tuned = res.apply(s_test)
    assert f1_score(y_test, half, average="macro", zero_division=0) < 0.6
    assert (
        f1_score(y_test, tuned, average="macro", zero_division=0)
        > f1_score(y_test, half, average="macro", zero_division=0) + 0.2
    )
    assert f1_score(y_test, tuned, average="micro") > f1_score(y_test, half, average="micro")
    assert res.validation["chosen"]["macro_f1"] > res.validation["fixed_0.5"]["macro_f1"]


def test_fallback_applies_exactly_to_low_support_labels() -> None:
    rng = np.random.default_rng(3)
    supports = [0, 1, 2, 4, 5, 6, 20]
    n = 60
    y = np.zeros((n, len(supports)), dtype=np.int8)
    for j, k in enumerate(supports):
        y[rng.choice(n, k, replace=False), j] = 1
    s = np.clip(0.3 * y + rng.random(y.shape) * 0.7, 0, 1)
    labels = [f"s{k}" for k in supports]
    res = fit_thresholds(y, s, labels, min_support=5, enforce_global_floor=False)
    assert res.fallback_labels == ["s0", "s1", "s2", "s4"]
    thr_label, _, _ = best_f1_thresholds(y, s)
    for j, k in enumerate(supports):
        if k < 5:
            assert res.source[j] == "global" and res.thresholds[j] == res.global_threshold
        else:
            assert res.source[j] == "per_label" and res.thresholds[j] == thr_label[j]
    naive = fit_thresholds(y, s, labels, strategy="per_label", enforce_global_floor=False)
    assert naive.fallback_labels == ["s0"]
    assert fit_thresholds(y, s, labels, min_support=7).fallback_labels == ["s0", "s1", "s2", "s4", "s5", "s6"]


def test_prior_matched_thresholds_by_hand() -> None:
    s = np.array([[0.1, 0.5, 0.2], [0.9, 0.5, 0.2], [0.5, 0.2, 0.2], [0.3, 0.0, 0.2]])
    # k = ceil(q * 4): 2 -> midpoint of the 2nd and 3rd largest; 1 (ties: both 0.5 kept); 4 -> the lowest.
    np.testing.assert_allclose(prior_matched_thresholds(s, [0.5, 0.25, 1.0]), [0.4, 0.5, 0.2])
    # q * n = 1.2 -> k = 2; a tiny prior still predicts the top document; exact multiples are not rounded up.
    np.testing.assert_allclose(prior_matched_thresholds(s, [0.3, 1e-9, 0.75]), [0.4, 0.5, 0.2])
    out = prior_matched_thresholds(s, [0.5, np.nan, 0.25], cols=[0, 1])
    assert out[0] == pytest.approx(0.4) and np.isnan(out[1]) and np.isnan(out[2])
    with pytest.raises(ValueError, match="shape"):
        prior_matched_thresholds(s, [0.5, 0.5])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        prior_matched_thresholds(s, [0.5, 1.5, 0.1])


@FAST
@given(label_matrices(max_n=40), st.integers(0, 2**32 - 1), st.sampled_from([1, 2, 1024]))
def test_prior_matched_thresholds_predict_k_documents(
    data: tuple[NDArray, NDArray], seed: int, block: int
) -> None:
    """Read in row blocks of any size (each label keeping its k + 1 largest scores across them)."""
    _, s = data
    n = s.shape[0]
    q = np.random.default_rng(seed).random(s.shape[1])
    t = prior_matched_thresholds(ArrayBlocks(s, rows=block), q)
    np.testing.assert_array_equal(t, prior_matched_thresholds(s, q))
    for j in range(s.shape[1]):
        k = max(1, int(np.ceil(q[j] * n - 1e-9)))
        kth = np.sort(s[:, j])[::-1][k - 1]
        # Exactly the documents scoring at least the k-th largest score are predicted (ties included).
        np.testing.assert_array_equal(s[:, j] >= t[j], s[:, j] >= kth)


def _five_supports() -> tuple[NDArray, NDArray, list[str], NDArray]:
    """80 documents, labels s0..s20 with 0, 1, 3, 6 and 20 validation positives, their training priors (s0's
    is 0: never seen in training)."""
    rng = np.random.default_rng(5)
    supports = [0, 1, 3, 6, 20]
    n = 80
    y = np.zeros((n, len(supports)), dtype=np.int8)
    for j, k in enumerate(supports):
        y[rng.choice(n, k, replace=False), j] = 1
    s = np.clip(0.3 * y + rng.random(y.shape) * 0.6, 0, 1)
    return y, s, [f"s{k}" for k in supports], np.array([0.0, 0.02, 0.05, 0.1, 0.25])


def test_prior_fallback_replaces_the_global_threshold_of_low_support_labels() -> None:
    y, s, labels, prior = _five_supports()
    plain = fit_thresholds(y, s, labels, enforce_global_floor=False)
    res = fit_thresholds(y, s, labels, fallback="prior", prior=prior, enforce_global_floor=False)
    assert res.fallback == "prior" and res.fallback_labels == plain.fallback_labels == ["s0", "s1", "s3"]
    expected = prior_matched_thresholds(s, prior)
    # s0 has prior 0 (never seen in training): it keeps the global threshold.
    assert res.source == ["global", "prior", "prior", "per_label", "per_label"]
    assert res.thresholds[0] == res.global_threshold
    np.testing.assert_array_equal(res.thresholds[1:3], expected[1:3])
    np.testing.assert_array_equal(res.thresholds[3:], plain.thresholds[3:])
    assert (res.apply(s)[:, 1] == 1).sum() == 2 and (res.apply(s)[:, 2] == 1).sum() == 4
    back = ThresholdResult.from_json_dict(json.loads(json.dumps(res.to_json_dict())))
    assert back.fallback == "prior" and back.source == res.source
    # The global strategy has no low-support labels, so the prior changes nothing there.
    glob = fit_thresholds(y, s, labels, strategy="global", fallback="prior", prior=prior)
    assert glob.source == ["global"] * 5
    with pytest.raises(ValueError, match="prior"):
        fit_thresholds(y, s, labels, fallback="prior")
    with pytest.raises(ValueError, match="shape"):
        fit_thresholds(y, s, labels, fallback="prior", prior=prior[:2])
    with pytest.raises(ValueError, match="fallback"):
        fit_thresholds(y, s, labels, fallback="median")


def test_best_fallback_takes_the_prior_threshold_only_where_it_wins_on_validation() -> None:
    # 40 documents; "head" has 20 separated positives (a threshold of its own), the others fewer than 5.
    n = 40
    y, s2 = _separated_head_and_a_rare_label(n)
    y = np.concatenate([y[:, :1], np.zeros((n, 4), dtype=np.int8)], axis=1)
    s = np.concatenate([s2[:, :1], np.tile(np.linspace(0.0, 0.05, n)[:, None], (1, 4))], axis=1)
    y[[20, 21], 1] = 1  # "found": its 2 positives top its column, below the global threshold
    s[[20, 21], 1] = 0.08
    y[[22, 23], 2] = 1  # "missed": its 2 positives score 0, 2 negatives top the column
    s[[22, 23], 2] = 0.0
    s[[0, 1], 2] = 0.07
    # "unseen": no validation positive (column 3 as is)
    y[24, 4] = 1  # "crowded": 1 positive at 0.95 over 10 negatives at 0.92, all above the global threshold
    s[24, 4], s[:10, 4] = 0.95, 0.92
    labels = ["head", "found", "missed", "unseen", "crowded"]
    prior = np.array([0.5, 0.05, 0.05, 0.1, 0.025])  # predicts 2, 2, 4 and 1 documents
    kw = {"prior": prior, "enforce_global_floor": False}
    best = fit_thresholds(y, s, labels, fallback="best", **kw)
    every = fit_thresholds(y, s, labels, fallback="prior", **kw)
    assert 0.1 < best.global_threshold < 0.9
    # found: F1 1 with the prior's 2 predictions, 0 without; crowded: 1 against 2/12 with 11 predictions;
    # missed and unseen: F1 0 either way, and the global threshold predicts nothing.
    assert best.source == ["per_label", "prior", "global", "global", "prior"]
    assert every.source == ["per_label", "prior", "prior", "prior", "prior"]
    np.testing.assert_array_equal(best.thresholds[[1, 4]], prior_matched_thresholds(s, prior)[[1, 4]])
    assert best.thresholds[2] == best.thresholds[3] == best.global_threshold
    assert best.f1.tolist() == [1.0, 1.0, 0.0, 0.0, 1.0]
    assert best.fallback_labels == ["found", "missed", "unseen", "crowded"]
    assert ThresholdResult.from_json_dict(json.loads(json.dumps(best.to_json_dict()))).fallback == "best"
    with pytest.raises(ValueError, match="best.*prior"):
        fit_thresholds(y, s, labels, fallback="best")


def test_blend_fallback_sits_halfway_between_the_global_and_the_prior_threshold() -> None:
    y, s, labels, prior = _five_supports()
    kw = {"prior": prior, "enforce_global_floor": False}
    blend = fit_thresholds(y, s, labels, fallback="blend", **kw)
    every = fit_thresholds(y, s, labels, fallback="prior", **kw)
    g = blend.global_threshold
    # s0 never seen in training keeps the global threshold; s1, s3 (under 5 positives) sit halfway.
    assert blend.source == ["global", "blend", "blend", "per_label", "per_label"]
    assert blend.thresholds[0] == g
    np.testing.assert_array_equal(blend.thresholds[1:3], (g + prior_matched_thresholds(s, prior)[1:3]) / 2)
    np.testing.assert_array_equal(blend.thresholds[3:], every.thresholds[3:])
    lo, hi = np.minimum(every.thresholds[1:3], g), np.maximum(every.thresholds[1:3], g)
    assert ((lo < blend.thresholds[1:3]) & (blend.thresholds[1:3] < hi)).all()
    back = ThresholdResult.from_json_dict(json.loads(json.dumps(blend.to_json_dict())))
    assert back.fallback == "blend" and back.source == blend.source
    with pytest.raises(ValueError, match="blend.*prior"):
        fit_thresholds(y, s, labels, fallback="blend")


def test_fit_thresholds_with_the_evaluate_settings() -> None:
    # Each evaluate setting reaches the fit: the same thresholds as fit_thresholds given them by hand.
    rng = np.random.default_rng(9)
    y = (rng.random((120, 6)) < np.array([0.02, 0.04, 0.1, 0.2, 0.3, 0.4])).astype(np.int8)
    s = np.clip(0.25 * y + rng.random(y.shape) * 0.7, 0, 1)
    labels = [f"l{j}" for j in range(6)]
    prior = y.mean(axis=0)
    cases = [
        {},
        {"fallback": "global"},
        {"fallback": "best"},
        {"fallback": "prior"},  # ({} is the default, blend)
        {"threshold_strategy": "global"},
        {"min_support": 2, "shrinkage": 3.0},
        {"at_least_one": True},
    ]
    seen = set()
    for update in cases:
        ecfg = EvaluateSection(**update)
        got = fit_thresholds_with(ecfg, y, s, labels, prior)
        want = fit_thresholds(
            y,
            s,
            labels,
            strategy=ecfg.threshold_strategy,
            min_support=ecfg.min_support,
            shrinkage=ecfg.shrinkage,
            at_least_one=ecfg.at_least_one,
            fallback=ecfg.fallback,
            prior=prior,
        )
        assert got.to_json_dict() == want.to_json_dict()
        seen.add(json.dumps(got.to_json_dict(), sort_keys=True))
    assert len(seen) == len(cases)  # every setting changed the fit here
    with pytest.raises(ValueError, match="prior"):
        fit_thresholds_with(EvaluateSection(fallback="prior"), y, s, labels)


def _separated_head_and_a_rare_label(n: int) -> tuple[NDArray, NDArray]:
    """Label 0 ("head"): 20 positives scored 0.9, negatives 0.1. Label 1: zeros, for the caller."""
    y = np.zeros((n, 2), dtype=np.int8)
    s = np.zeros((n, 2))
    y[:20, 0] = 1
    s[:, 0] = np.where(y[:, 0] == 1, 0.9, 0.1)
    return y, s


def test_prior_fallback_keeps_the_micro_f1_floor() -> None:
    # "rare" has no validation positive and a prior that predicts 10 of 40 documents: 10 false positives,
    # so the guard sends it back to the global threshold.
    n = 40
    y, s = _separated_head_and_a_rare_label(n)
    s[:, 1] = np.linspace(0.0, 0.4, n)
    res = fit_thresholds(y, s, ["head", "rare"], fallback="prior", prior=np.array([0.5, 0.25]))
    assert res.floor_action == "greedy_revert" and res.reverted_labels == ["rare"]
    assert res.source == ["per_label", "global"]
    off = fit_thresholds(
        y, s, ["head", "rare"], fallback="prior", prior=np.array([0.5, 0.25]), enforce_global_floor=False
    )
    assert off.source == ["per_label", "prior"] and int(off.apply(s)[:, 1].sum()) == 10


def test_shrinkage_formula() -> None:
    y, s, labels = imbalanced(4, n=300)
    k = 10.0
    res = fit_thresholds(y, s, labels, shrinkage=k, enforce_global_floor=False)
    thr_label, _, support = best_f1_thresholds(y, s)
    own = support >= 5
    assert own.all()
    expected = (support * thr_label + k * res.global_threshold) / (support + k)
    np.testing.assert_allclose(res.thresholds, expected)
    assert res.source == ["shrunk"] * len(labels)


def test_global_strategy_uses_one_threshold() -> None:
    y, s, labels = imbalanced(5, n=300)
    res = fit_thresholds(y, s, labels, strategy="global")
    t, micro = best_global_threshold(y, s)
    assert np.all(res.thresholds == t) and res.source == ["global"] * len(labels)
    assert res.fallback_labels == [] and res.validation["chosen"]["micro_f1"] == pytest.approx(micro)


def test_floor_reverts_the_label_that_costs_micro_f1() -> None:
    # Label "head" is separated perfectly; "rare" has one positive scored among negatives, so its own
    # optimum predicts 5 documents (F1 1/3) and adds 4 false positives to the micro counts.
    n = 40
    y, s = _separated_head_and_a_rare_label(n)
    y[4, 1] = 1
    s[:5, 1] = [0.30, 0.29, 0.28, 0.27, 0.26]
    s[5:, 1] = 0.01
    labels = ["head", "rare"]
    naive = fit_thresholds(y, s, labels, strategy="per_label", enforce_global_floor=False)
    assert naive.validation["chosen"]["micro_f1"] < naive.validation["global"]["micro_f1"]
    guarded = fit_thresholds(y, s, labels, strategy="per_label")
    assert guarded.floor_action == "greedy_revert" and guarded.reverted_labels == ["rare"]
    assert guarded.source == ["per_label", "global"]
    assert guarded.validation["chosen"]["micro_f1"] >= guarded.validation["global"]["micro_f1"]


def test_floor_with_at_least_one_falls_back_wholesale() -> None:
    # Label "a" ties its positive with a negative (own threshold 0.4: F1 2/3); "b" separates (0.6).
    # Without the rule per-label beats global (micro 0.8 vs 2/3); with it, global forces the right label
    # onto the empty row and scores 1.0, which the per-label thresholds cannot match.
    y = np.array([[0, 1], [1, 0]])
    s = np.array([[0.4, 0.8], [0.4, 0.4]])
    plain = fit_thresholds(y, s, ["a", "b"], strategy="per_label")
    assert plain.floor_action == "none" and plain.source == ["per_label", "per_label"]
    forced = fit_thresholds(y, s, ["a", "b"], strategy="per_label", at_least_one=True)
    assert forced.floor_action == "wholesale_global" and forced.reverted_labels == ["a"]  # b: own == global
    assert np.all(forced.thresholds == forced.global_threshold)
    assert forced.validation["chosen"]["micro_f1"] == 1.0


@settings(max_examples=80, deadline=None)
@given(
    label_matrices(max_n=30, max_c=8),
    st.sampled_from(["per_label", "per_label_with_fallback"]),
    st.integers(1, 6),
    st.sampled_from([0.0, 3.0]),
    st.booleans(),
)
def test_never_below_global_micro_f1(
    data: tuple[NDArray, NDArray], strategy: str, min_support: int, shrinkage: float, at_least_one: bool
) -> None:
    y, s = data
    labels = [str(j) for j in range(y.shape[1])]
    res = fit_thresholds(y, s, labels, strategy, min_support, shrinkage, at_least_one)
    t_global, _ = best_global_threshold(y, s)
    chosen = hand_micro_f1(y, res.apply(s))
    glob = hand_micro_f1(y, apply_thresholds(s, np.full(y.shape[1], t_global), at_least_one))
    assert chosen >= glob - 1e-12
    assert res.validation["chosen"]["micro_f1"] == pytest.approx(chosen)
    assert res.validation["global"]["micro_f1"] == pytest.approx(glob)
    assert res.validation["chosen"]["macro_f1"] == pytest.approx(hand_f1(y, res.apply(s)).mean())
    # Guard: no label gets its own threshold from fewer than min_support positives.
    for j, src in enumerate(res.source):
        if src != "global" and strategy == "per_label_with_fallback":
            assert res.support[j] >= min_support
    np.testing.assert_allclose(res.f1, hand_f1(y, res.apply(s)))
    if y.shape[1] > 1:  # sklearn reads a single column as a binary target
        assert res.validation["chosen"]["macro_f1"] == pytest.approx(
            f1_score(y, res.apply(s), average="macro", zero_division=0)
        )


def test_apply_at_least_one_gives_every_row_a_label() -> None:
    rng = np.random.default_rng(7)
    s = rng.random((200, 5)) * 0.6
    t = np.array([0.5, 0.55, 0.3, 0.58, 0.59])
    plain = apply_thresholds(s, t)
    forced = apply_thresholds(s, t, at_least_one=True)
    assert (plain.sum(axis=1) == 0).any()
    assert (forced.sum(axis=1) >= 1).all()
    had = plain.sum(axis=1) > 0
    np.testing.assert_array_equal(forced[had], plain[had])
    empty = np.flatnonzero(~had)
    np.testing.assert_array_equal(np.argmax(forced[empty], axis=1), np.argmax(s[empty] - t, axis=1))
    assert forced[empty].sum() == empty.size
    assert forced.dtype == np.int8
    with pytest.raises(ValueError, match="finite"):
        apply_thresholds(s, np.array([0.5, np.nan, 0.5, 0.5, 0.5]))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_json_round_trip(strategy: str) -> None:
    y, s, labels = imbalanced(8, n=200)
    y[:, 6] = 0  # a label without validation positives: NaN optimum stored as null
    res = fit_thresholds(y, s, labels, strategy=strategy, shrinkage=2.0, at_least_one=True)
    text = json.dumps(res.to_json_dict(), allow_nan=False)
    back = ThresholdResult.from_json_dict(json.loads(text))
    assert back.to_json_dict() == res.to_json_dict()
    np.testing.assert_array_equal(back.thresholds, res.thresholds)
    np.testing.assert_array_equal(back.apply(s), res.apply(s))
    row = json.loads(text)["labels"][6]
    assert row["label_optimal_threshold"] is None and row["support"] == 0 and row["source"] == "global"
    assert set(json.loads(text)["validation"]) == {"chosen", "global", "fixed_0.5"}


def test_rejects_bad_inputs() -> None:
    y = np.array([[0, 1], [1, 0]])
    s = np.array([[0.1, 0.9], [0.8, 0.2]])
    with pytest.raises(ValueError, match="strategy"):
        fit_thresholds(y, s, ["a", "b"], strategy="nope")
    with pytest.raises(ValueError, match="label names"):
        fit_thresholds(y, s, ["a"])
    with pytest.raises(ValueError, match="only 0 and 1"):
        best_f1_thresholds(y * 2, s)


# ------------------------------------------------------------------------------- sparse ground truth


def sparse_forms(y: NDArray) -> list:
    """The same 0/1 matrix as CSR, CSC, COO with an explicit zero, and CSR with unsorted column indices."""
    coo = sp.coo_matrix(y)
    with_zero = sp.coo_matrix(
        (np.r_[coo.data, 0], (np.r_[coo.row, 0], np.r_[coo.col, 0])), shape=y.shape
    )  # an explicit 0 (possibly on a 1 cell: duplicates are summed, 1 + 0 stays 1)
    csr = sp.csr_matrix(y)
    unsorted = sp.csr_matrix((csr.data[::-1].copy(), csr.indices.copy(), csr.indptr.copy()), shape=y.shape)
    for r in range(y.shape[0]):  # reverse each row's column order
        a, b = unsorted.indptr[r], unsorted.indptr[r + 1]
        unsorted.indices[a:b] = csr.indices[a:b][::-1]
        unsorted.data[a:b] = csr.data[a:b][::-1]
    unsorted.has_sorted_indices = False
    return [csr, sp.csc_matrix(y), with_zero, unsorted, sp.csr_array(y)]


@FAST
@given(label_matrices(), st.sampled_from(STRATEGIES), st.booleans(), st.booleans())
def test_sparse_and_dense_ground_truth_give_identical_results(
    data: tuple[NDArray, NDArray], strategy: str, at_least_one: bool, float32: bool
) -> None:
    y, s = data
    if float32:
        s = s.astype(np.float32)
    labels = [str(j) for j in range(y.shape[1])]
    dense = fit_thresholds(y, s, labels, strategy=strategy, shrinkage=2.0, at_least_one=at_least_one)
    thr, f1, support = best_f1_thresholds(y, s)
    glob = best_global_threshold(y, s)
    for ys in sparse_forms(y):
        snapshot = (ys.copy(), type(ys))
        res = fit_thresholds(ys, s, labels, strategy=strategy, shrinkage=2.0, at_least_one=at_least_one)
        assert res.to_json_dict() == dense.to_json_dict()
        got = best_f1_thresholds(ys, s)
        np.testing.assert_array_equal(got[0], thr)
        np.testing.assert_array_equal(got[1], f1)
        np.testing.assert_array_equal(got[2], support)
        assert best_global_threshold(ys, s) == glob
        assert type(ys) is snapshot[1] and (abs(ys - snapshot[0]) > 0).nnz == 0  # the input is not modified


@FAST
@given(label_matrices())
def test_float32_scores_give_the_float64_results(data: tuple[NDArray, NDArray]) -> None:
    # float32 scores are used without a float64 copy; every comparison with a float64 threshold stays exact.
    y, s = data
    s32 = s.astype(np.float32)
    labels = [str(j) for j in range(y.shape[1])]
    res32 = fit_thresholds(sp.csr_matrix(y), s32, labels, at_least_one=True)
    res64 = fit_thresholds(y, s32.astype(np.float64), labels, at_least_one=True)
    assert res32.to_json_dict() == res64.to_json_dict()
    np.testing.assert_array_equal(res32.apply(s32), res64.apply(s32.astype(np.float64)))


def test_float32_scores_compare_with_float64_thresholds_exactly() -> None:
    s32 = np.array([[np.float32(0.1)], [np.nextafter(np.float32(0.1), np.float32(0))]], dtype=np.float32)
    np.testing.assert_array_equal(apply_thresholds(s32, 0.1)[:, 0], [1, 0])
    # Just above the top score in float64, but equal to it once rounded to float32: must not predict it.
    t = float(s32[0, 0]) + 1e-12
    assert np.float32(t) == s32[0, 0]
    assert apply_thresholds(s32, t)[0, 0] == 0
    assert apply_thresholds(s32, np.array([t]))[0, 0] == 0
    assert fit_thresholds(np.array([[1], [0]]), s32, ["a"]).apply(s32)[:, 0].tolist() == [1, 0]


def test_sparse_rejects_non_binary_and_duplicates() -> None:
    s = np.array([[0.1, 0.9], [0.8, 0.2]])
    with pytest.raises(ValueError, match="only 0 and 1"):
        best_f1_thresholds(sp.csr_matrix(np.array([[0, 2], [1, 0]])), s)
    dup = sp.coo_matrix((np.array([1, 1]), (np.array([0, 0]), np.array([1, 1]))), shape=(2, 2))
    with pytest.raises(ValueError, match="only 0 and 1"):  # a duplicated 1 sums to 2
        fit_thresholds(dup, s, ["a", "b"])
    with pytest.raises(ValueError, match="one shape"):
        fit_thresholds(sp.csr_matrix((3, 2)), s, ["a", "b"])
    with pytest.raises(ValueError, match="dense"):
        best_f1_thresholds(np.eye(2), sp.csr_matrix(s))
