"""Scores read in row blocks give exactly the figures of the dense matrix: thresholds of every strategy,
the report's metrics (groups, ranking, AP, AUPRC), the rank adjustment, and the helpers of blocks."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import scipy.sparse as sp

from pipeline.evaluation.blocks import ArrayBlocks, as_blocks, gather, top_scores
from pipeline.evaluation.metrics import evaluate, score_figures
from pipeline.evaluation.rank_adjust import adjusted_scores, choose_tau
from pipeline.evaluation.thresholds import apply_thresholds, decisions, fit_thresholds


def _data(n: int = 60, c: int = 9, seed: int = 0) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    rate = np.geomspace(0.4, 0.02, c)  # head to tail
    y = (rng.random((n, c)) < rate).astype(np.int8)
    s = np.clip(0.35 * y + rng.random((n, c)) * 0.6, 0, 1).astype(np.float32)
    s[:, 2] = np.round(s[:, 2], 1)  # ties
    train_counts = np.round(rate * 200).astype(np.int64)
    return sp.csr_matrix(y), s, train_counts


def _same(a: object, b: object) -> None:
    """Equal JSON-like structures, NaN equal to NaN."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys()
        for k in a:
            _same(a[k], b[k])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, z in zip(a, b, strict=True):
            _same(x, z)
    elif isinstance(a, float) and np.isnan(a):
        assert isinstance(b, float) and np.isnan(b)
    else:
        assert a == b


@pytest.mark.parametrize("rows", [1, 4, 7])
@pytest.mark.parametrize(
    "kwargs",
    [
        {"strategy": "per_label_with_fallback"},
        {"strategy": "per_label", "at_least_one": True},
        {"strategy": "global"},
        {"strategy": "per_label_with_fallback", "fallback": "prior", "shrinkage": 2.0, "min_support": 3},
    ],
)
def test_thresholds_from_blocks_equal_the_dense_search(rows, kwargs):
    y, s, counts = _data()
    labels = [f"l{j}" for j in range(s.shape[1])]
    prior = counts / 200
    dense = fit_thresholds(y, s, labels, prior=prior, **kwargs).to_json_dict()
    blocked = fit_thresholds(y, ArrayBlocks(s, rows=rows), labels, prior=prior, **kwargs).to_json_dict()
    _same(dense, blocked)


@pytest.mark.parametrize("rows", [1, 5, 64])
def test_report_metrics_from_blocks_equal_the_dense_ones(rows):
    y, s, counts = _data(seed=1)
    labels = [f"l{j}" for j in range(s.shape[1])]
    thr = fit_thresholds(y, s, labels)
    pred = decisions(ArrayBlocks(s, rows=rows), thr.thresholds)
    assert (pred.toarray() == apply_thresholds(s, thr.thresholds)).all()
    prior = counts / 200
    rank = adjusted_scores(s, prior, 0.1)
    common = {"head_min": 50, "tail_max": 10, "n_train_docs": 200, "zero_shot": {"z": 3}}
    dense = evaluate(y, apply_thresholds(s, thr.thresholds), s, labels, counts, rank_scores=rank, **common)
    blocks = ArrayBlocks(s, rows=rows)
    blocked = evaluate(
        y,
        pred,
        blocks,
        labels,
        counts,
        rank_scores=blocks.map(functools.partial(adjusted_scores, prior=prior, tau=0.1)),
        **common,
    )
    _same(dense, blocked)
    assert choose_tau(y, s, prior, 1 / prior) == choose_tau(y, ArrayBlocks(s, rows=rows), prior, 1 / prior)


def test_block_helpers():
    s = np.arange(20, dtype=np.float32).reshape(4, 5) % 7
    blocks = ArrayBlocks(s, rows=3)
    assert [a for a, _ in blocks] == [0, 3] and blocks.shape == (4, 5)
    rows, cols = np.array([0, 0, 2, 3]), np.array([1, 4, 0, 2])
    np.testing.assert_array_equal(gather(rows, cols, blocks), s[rows, cols])
    np.testing.assert_array_equal(top_scores(blocks, 2), -np.sort(-s, axis=1)[:, :2])
    np.testing.assert_array_equal(top_scores(blocks, 9), -np.sort(-s, axis=1))
    assert as_blocks(blocks) is blocks
    with pytest.raises(ValueError, match="finite"):
        as_blocks(np.array([[0.5, np.nan]]))
    with pytest.raises(ValueError, match="dense"):
        as_blocks(sp.csr_matrix(s))


class _CountingBlocks(ArrayBlocks):
    """ArrayBlocks that count the passes over them."""

    passes = 0

    def __iter__(self):
        self.passes += 1
        return super().__iter__()


def test_score_figures_computed_once_give_the_same_report():
    """evaluate(..., scored=score_figures(...)) equals evaluate alone, at any decisions, and reads the scores
    only for the decision figures (the rank scores not at all)."""
    y, s, counts = _data(seed=2)
    labels = [f"l{j}" for j in range(s.shape[1])]
    common = {"head_min": 50, "tail_max": 10, "n_train_docs": 200}
    rank = adjusted_scores(s, counts / 200, 0.1)
    scored = score_figures(y, s, counts, rank_scores=rank, **common)
    for cut in (0.3, 0.5):
        pred = apply_thresholds(s, np.full(len(labels), cut))
        alone = evaluate(y, pred, s, labels, counts, rank_scores=rank, **common)
        blocks, ranked = _CountingBlocks(s, rows=7), _CountingBlocks(rank, rows=7)
        reused = evaluate(y, pred, blocks, labels, counts, rank_scores=ranked, scored=scored, **common)
        _same(alone, reused)
        assert ranked.passes == 0 and blocks.passes == 0
        evaluate(y, pred, blocks, labels, counts, rank_scores=ranked, **common)
        assert ranked.passes > 0 and blocks.passes > 1
    with pytest.raises(ValueError, match="shape"):
        evaluate(y[:5], pred[:5], s[:5], labels, counts, scored=scored, **common)


def test_threshold_search_reads_the_scores_four_times():
    """The positives' scores are gathered once for both searches and, without "at least one", one pass
    counts the decisions for the floor check and the report."""
    y, s, counts = _data(seed=3)
    labels = [f"l{j}" for j in range(s.shape[1])]
    blocks = _CountingBlocks(s, rows=7)
    blocked = fit_thresholds(y, blocks, labels).to_json_dict()
    assert blocks.passes == 4  # gather, per-label cuts, pooled cuts, decision counts
    _same(fit_thresholds(y, s, labels).to_json_dict(), blocked)
