"""pipeline.evaluation.rank_adjust: the logit adjustment of the ranking, exactly, and that it moves only the
ranking metrics of the report."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.evaluation.metrics import evaluate, inverse_propensities
from pipeline.evaluation.rank_adjust import adjusted_scores, choose_tau


def test_adjusted_scores_shift_each_labels_logit_by_tau_log_prior():
    s = np.array([[0.5, 0.5], [0.9, 0.2]])
    prior = np.array([0.5, 0.01])
    assert adjusted_scores(s, prior, 0.0).tolist() == s.astype(np.float32).tolist()
    out = adjusted_scores(s, prior, 1.0)
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    sigmoid = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    for (i, j), p in np.ndenumerate(s):
        assert out[i, j] == pytest.approx(sigmoid(logit(p) - math.log(prior[j])), rel=1e-5)
    # Within a label the order is kept (a per-label monotone map): thresholds move with it.
    col = np.linspace(0.01, 0.99, 50)[:, None]
    assert np.all(np.diff(adjusted_scores(col, [0.03], 0.4)[:, 0]) > 0)
    with pytest.raises(ValueError, match="one value per label"):
        adjusted_scores(s, [0.5], 0.1)


def _case(other: float = 0.05):
    """20 documents, 7 labels. Label 0 (prior 0.5) is scored 0.60 everywhere and true on 16 documents; the
    rare label 1 (prior 0.01) is true on the other 4, scored 0.55 there and `other` elsewhere; labels 2-6
    (prior 0.5, never true) are scored 0.58, so unadjusted the rare label ranks 7th where it is true."""
    n = 20
    y = np.zeros((n, 7), dtype=int)
    y[::5, 1] = 1
    y[y[:, 1] == 0, 0] = 1
    s = np.full((n, 7), 0.58)
    s[:, 0] = 0.60
    s[:, 1] = np.where(y[:, 1] == 1, 0.55, other)
    prior = np.array([0.5, 0.01, 0.5, 0.5, 0.5, 0.5, 0.5])
    return y, s, prior, inverse_propensities(np.array([50, 1, 50, 50, 50, 50, 50]), 100)


def test_choose_tau_takes_the_best_psp_within_the_p_at_1_tolerance():
    y, s, prior, inv = _case()
    tau, table = choose_tau(y, s, prior, inv, grid=(0.0, 0.1, 0.3))
    by_tau = {r["tau"]: r for r in table}
    # tau 0: label 0 tops every document (P@1 0.8); tau 0.1 lifts the rare label to the top where it is true.
    assert by_tau[0.0]["p_at_1"] == pytest.approx(0.8) and by_tau[0.1]["p_at_1"] == pytest.approx(1.0)
    assert by_tau[0.1]["psp_at_5"] > by_tau[0.0]["psp_at_5"]
    assert tau == 0.1  # 0.3 ranks the same here: the tie goes to the smaller tau
    # Scored 0.52 where it is false, the rare label then tops every document (P@1 0.2): tau stays 0.
    y, s, prior, inv = _case(other=0.52)
    tau, table = choose_tau(y, s, prior, inv, grid=(0.0, 0.1, 0.3))
    assert tau == 0.0 and table[1]["p_at_1"] == pytest.approx(0.2), table
    with pytest.raises(ValueError, match="tau = 0"):
        choose_tau(y, s, prior, inv, grid=(0.1,))


def test_rank_scores_move_the_ranking_metrics_only():
    y, s, prior, _ = _case()
    pred = (s >= 0.5).astype(int)
    args = (y, pred, s, list("abcdefg"), np.array([50, 1, 50, 50, 50, 50, 50]))
    plain = evaluate(*args, n_train_docs=100)
    moved = evaluate(*args, n_train_docs=100, rank_scores=adjusted_scores(s, prior, 0.1))
    ranking = {f"{m}_at_{k}" for m in ("p", "ndcg", "psp", "psndcg") for k in (1, 3, 5)}
    assert (moved["overall"]["p_at_1"], plain["overall"]["p_at_1"]) == pytest.approx((1.0, 0.8))
    same = {k: v for k, v in plain["overall"].items() if k not in ranking}
    assert same == {k: v for k, v in moved["overall"].items() if k not in ranking}
    assert plain["per_label"] == moved["per_label"]
    with pytest.raises(ValueError, match="rank_scores must have the shape"):
        evaluate(*args, rank_scores=s[:, :1])
