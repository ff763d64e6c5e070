"""Decision thresholds for multi-label scores, fitted on validation.

A model trained on a long-tailed label set produces scores whose scale differs per label: rare labels
rarely reach 0.5, so one fixed cut-off predicts the head and never the tail. Per-label F1-optimal thresholds
fix that for labels with enough validation positives, but a threshold fitted to 1-3 positives follows those
few scores and over-predicts on test (docs/metrics.md, "Thresholds"). This module therefore fits,
exactly and without a grid:

- one global threshold maximising validation micro-F1 (the floor every strategy must match),
- per-label thresholds maximising each label's validation F1,
- a fallback for labels with little validation support: the global threshold, or a prior-matched one
  (the label predicted for as many validation documents as its training prevalence implies), for each
  such label the one of the two with the higher validation F1, or the midpoint of the two,
- optional shrinkage of per-label thresholds toward the global one,
- a guard that reverts labels to the global threshold whenever the per-label thresholds would lose to it on
  validation micro-F1.

Decision rule everywhere: a label is predicted iff ``score >= threshold``. All functions are pure numpy.
Validation labels may be a dense 0/1 array or a ``scipy.sparse`` matrix (identical results); scores a dense
array or row blocks (``pipeline.evaluation.blocks``). The search works on the positives' coordinates and
per-block sorts of the label columns (:func:`metrics.label_cuts`), and every decision count is summed over
blocks, so memory is a block of scores and the positives, not documents x labels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike, NDArray

from pipeline.evaluation.blocks import ScoreBlocks, as_blocks, gather, row_ranges
from pipeline.evaluation.metrics import (
    Positives,
    ScoreCuts,
    checked_inputs,
    cut_f1,
    label_cuts,
    pooled_cuts,
)

STRATEGIES: tuple[str, ...] = ("global", "per_label", "per_label_with_fallback")
DEFAULT_STRATEGY = "per_label_with_fallback"
FALLBACKS: tuple[str, ...] = ("global", "prior", "best", "blend")
DEFAULT_FALLBACK = "global"
DEFAULT_MIN_SUPPORT = 5
DEFAULT_SHRINKAGE = 0.0
DECISION_RULE = "score >= threshold"
SCHEMA_VERSION = 1
# Threshold used when validation holds no positive at all (every threshold then scores micro-F1 0).
NO_POSITIVES_THRESHOLD = 0.5


def _best_cuts(
    cuts: ScoreCuts, support: NDArray[np.int64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """F1-optimal threshold and its F1 for every label (NaN / 0 without positives).

    F1 = 2 TP / (predicted + positives) only peaks where a run of equal scores holding a positive ends (past a
    run of negatives TP stays and predictions grow), so the cuts of :class:`metrics.ScoreCuts` are
    every candidate. Among equal F1s the first cut, i.e. the highest threshold (fewest predictions), wins.
    """
    n_labels = cuts.ptr.size - 1
    thr = np.full(n_labels, np.nan)
    best_f1 = np.zeros(n_labels)
    if cuts.label.size == 0:
        return thr, best_f1
    f1 = cut_f1(cuts, support)
    starts = cuts.ptr[:-1][cuts.ptr[1:] > cuts.ptr[:-1]]
    peak = np.maximum.reduceat(f1, starts)
    owners = cuts.label[starts]
    top = np.zeros(n_labels)
    top[owners] = peak
    at_peak = np.flatnonzero(f1 == top[cuts.label])
    _, first = np.unique(cuts.label[at_peak], return_index=True)
    best = at_peak[first]  # one cut per label with positives, in label order
    chosen, lower = cuts.cut[best], cuts.lower[best]
    # Midpoint to the next lower distinct score; if rounding lands it on that score, keep the chosen score.
    mid = 0.5 * chosen + 0.5 * lower
    has_lower = ~np.isnan(lower)
    thr[owners] = np.where(has_lower & (mid > lower), mid, chosen)
    best_f1[owners] = f1[best]
    return thr, best_f1


def best_f1_thresholds(
    y_true: Any, scores: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.int64]]:
    """Exact per-label F1-optimal thresholds, searched over every distinct score.

    Parameters
    ----------
    y_true : array or scipy.sparse matrix of shape (n_samples, n_labels)
        0/1 validation labels; dense and sparse give identical results.
    scores : array of shape (n_samples, n_labels)
        Validation scores (probabilities or logits); higher means more likely.

    Returns
    -------
    thresholds : ndarray of shape (n_labels,)
        Threshold for the rule ``score >= threshold``, placed at the midpoint between the optimal score and
        the next lower distinct score so that small score shifts on test do not flip the decision at the
        boundary (the optimal score itself when it is the column's lowest). Among equally good thresholds the
        highest is kept (fewest predictions). NaN for labels without validation positives: every threshold
        has F1 0 there, so the choice is left to the strategy's fallback.
    f1 : ndarray of shape (n_labels,)
        Validation F1 at that threshold (0 for labels without positives).
    support : ndarray of shape (n_labels,)
        Validation positives per label.
    """
    y, s = checked_inputs(y_true, scores)
    support = y.per_label()
    thr, f1 = _best_cuts(label_cuts(y, s), support)
    return thr, f1, support


def _global_optimum(
    y: Positives, s: ScoreBlocks, gathered: NDArray[Any] | None = None
) -> tuple[float, float]:
    total = y.rows.size
    if total == 0:
        return NO_POSITIVES_THRESHOLD, 0.0
    thr, f1 = _best_cuts(pooled_cuts(y, s, gathered=gathered), np.array([total], dtype=np.int64))
    return float(thr[0]), float(f1[0])


def best_global_threshold(y_true: Any, scores: ArrayLike) -> tuple[float, float]:
    """One threshold for all labels that maximises micro-F1 exactly.

    Micro-F1 pools every (document, label) decision, so the search is the per-label search on the pooled
    cells. Same placement and tie rule as :func:`best_f1_thresholds`; ``y_true`` dense or scipy.sparse.

    Returns
    -------
    threshold : float
        ``NO_POSITIVES_THRESHOLD`` (0.5) when validation has no positive at all (every threshold scores 0).
    micro_f1 : float
        Validation micro-F1 at that threshold.
    """
    y, s = checked_inputs(y_true, scores)
    return _global_optimum(y, s)


def prior_matched_thresholds(
    scores: ArrayLike | ScoreBlocks, prior: ArrayLike, cols: ArrayLike | None = None
) -> NDArray[np.float64]:
    """Thresholds that predict each label for as many documents as its prior prevalence implies.

    For label j with prevalence ``q_j`` (e.g. training documents with j / training documents) over n
    documents, the threshold is the k-th largest score of column j with ``k = max(1, ceil(q_j * n))``, placed
    like :func:`best_f1_thresholds`'s (midpoint to the next lower distinct score). It needs no positive of
    the label among the scored documents, which is why it suits labels too rare for an F1 optimum: a rare
    label's scores sit below the global threshold on most models, so the global fallback never predicts it.

    Parameters
    ----------
    scores : array or ScoreBlocks of shape (n_samples, n_labels)
        Read block by block, keeping each label's k + 1 largest scores (labels grouped by k rounded up to a
        power of two, so memory is about twice the predicted pairs).
    prior : array of shape (n_labels,)
        Prevalence in [0, 1] per label; NaN for labels it is not defined for (their result is NaN).
    cols : array of int, optional
        Only these columns (others NaN); all by default.

    Returns
    -------
    ndarray of shape (n_labels,), NaN outside ``cols``, where the prior is NaN, or without documents.
    """
    blocks = as_blocks(scores)
    n, n_labels = blocks.shape
    q = np.asarray(prior, dtype=np.float64)
    if q.shape != (n_labels,):
        raise ValueError(f"prior must have shape ({n_labels},), got {q.shape}")
    if ((q < 0) | (q > 1)).any():
        raise ValueError("prior prevalences must lie in [0, 1]")
    out = np.full(n_labels, np.nan)
    todo = np.arange(n_labels) if cols is None else np.asarray(cols, dtype=np.intp)
    todo = todo[np.isfinite(q[todo])]
    if n == 0 or todo.size == 0:
        return out
    k = np.clip(np.ceil(q[todo] * n - 1e-9).astype(np.int64), 1, n)  # 1e-9: q * n = 3 exactly is 3, not 4
    keep = np.minimum(2 ** np.ceil(np.log2(k + 1)).astype(np.int64), n)  # >= k + 1 largest, or all n
    groups = {int(m): np.flatnonzero(keep == m) for m in np.unique(keep)}
    top = blocks.fold(_block_top, _merge_top, {m: todo[members] for m, members in groups.items()})
    if top is None:
        return out
    for m, members in groups.items():
        srt = -np.sort(-top[m].astype(np.float64), axis=0)  # descending; k-th largest at k - 1
        i = np.arange(members.size)
        km = k[members]
        chosen = srt[km - 1, i]
        has_lower = km < srt.shape[0]
        lower = np.where(has_lower, srt[np.minimum(km, srt.shape[0] - 1), i], np.nan)
        mid = 0.5 * chosen + 0.5 * lower
        out[todo[members]] = np.where(~np.isnan(lower) & (mid > lower), mid, chosen)
    return out


def _largest(cand: NDArray[Any], m: int) -> NDArray[Any]:
    """The ``m`` largest rows of each column (all if fewer), unordered."""
    if cand.shape[0] <= m:
        return cand
    return np.partition(cand, cand.shape[0] - m, axis=0)[cand.shape[0] - m :]


def _block_top(a: int, block: NDArray[Any], columns: dict[int, NDArray[np.intp]]) -> dict[int, NDArray[Any]]:
    """Per group m: the m largest scores of each of its ``columns[m]`` in the block, [<= m, labels]."""
    return {m: _largest(block[:, cols], m) for m, cols in columns.items()}


def _merge_top(x: dict[int, NDArray[Any]], y: dict[int, NDArray[Any]]) -> dict[int, NDArray[Any]]:
    return {m: _largest(np.concatenate([x[m], y[m]]), m) for m in x}


def _decide(s: NDArray[np.floating], t: NDArray[np.float64], at_least_one: bool) -> NDArray[np.bool_]:
    """Boolean ``s >= t`` (t float64, so float32 scores compare exactly), plus the "at least one" label."""
    pred = s >= t
    if at_least_one and s.shape[1] > 0:
        empty = np.flatnonzero(~pred.any(axis=1))
        if empty.size:
            margin = s[empty] - np.broadcast_to(t, s.shape[1])
            pred[empty, np.argmax(margin, axis=1)] = True
    return pred


def apply_thresholds(
    scores: ArrayLike, thresholds: ArrayLike | float, at_least_one: bool = False
) -> NDArray[np.int8]:
    """Turn scores into 0/1 decisions with ``score >= threshold``.

    Parameters
    ----------
    scores : array of shape (n_samples, n_labels)
    thresholds : float or array of shape (n_labels,)
        Must be finite: a NaN threshold would silently never predict its label.
    at_least_one : bool, default=False
        A row with no predicted label gets the label with the largest ``score - threshold``, i.e. the label
        closest to (relative to its own threshold) being predicted; the raw arg-max score would ignore that
        labels are calibrated differently and favour head labels.

    Returns
    -------
    ndarray of int8, shape (n_samples, n_labels)
    """
    s = np.asarray(scores)
    if s.dtype != np.float32 and s.dtype != np.float64:
        s = s.astype(np.float64)
    t = np.asarray(thresholds, dtype=np.float64)
    if s.ndim != 2:
        raise ValueError(f"scores must be 2-D, got shape {s.shape}")
    if t.ndim not in (0, 1) or (t.ndim == 1 and t.shape[0] != s.shape[1]):
        raise ValueError(f"thresholds must be a scalar or of shape ({s.shape[1]},), got {t.shape}")
    if not np.isfinite(t).all():
        raise ValueError("thresholds must be finite")
    return _decide(s, t, at_least_one).view(np.int8)


def _decision_counts(
    y: Positives, blocks: ScoreBlocks, thresholds: list[NDArray[np.float64]], at_least_one: bool
) -> list[tuple[NDArray[np.int64], NDArray[np.int64]]]:
    """Per-label true and false positives of the decisions with each threshold vector, in one pass."""
    n, n_labels = blocks.shape
    ptr = row_ranges(y.rows, n)
    sums = blocks.fold(_block_counts, _merge_counts, y.rows, y.cols, ptr, thresholds, at_least_one)
    zero = np.zeros(n_labels, dtype=np.int64)
    if sums is None:
        return [(zero, zero.copy()) for _ in thresholds]
    return [(tp, predicted - tp) for tp, predicted in sums]


def _block_counts(
    a: int,
    block: NDArray[Any],
    y_rows: NDArray[np.int64],
    y_cols: NDArray[np.int64],
    ptr: NDArray[np.int64],
    thresholds: list[NDArray[np.float64]],
    at_least_one: bool,
) -> list[tuple[NDArray[np.int64], NDArray[np.int64]]]:
    """Per threshold vector: (true positives, predicted) per label in the block."""
    lo, hi = ptr[a], ptr[a + block.shape[0]]
    rows, cols = y_rows[lo:hi] - a, y_cols[lo:hi]
    out = []
    for t in thresholds:
        pred = _decide(block, t, at_least_one)
        tp = np.bincount(cols[pred[rows, cols]], minlength=block.shape[1]).astype(np.int64)
        out.append((tp, np.count_nonzero(pred, axis=0).astype(np.int64)))
    return out


def _merge_counts(x: list[tuple[Any, Any]], y: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    return [(a[0] + b[0], a[1] + b[1]) for a, b in zip(x, y, strict=True)]


def decision_counts(
    y_true: Any, scores: ArrayLike | ScoreBlocks, thresholds: ArrayLike, at_least_one: bool = False
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Per-label (true positives, false positives) of :func:`apply_thresholds`' decisions, counted block by
    block."""
    y, s = checked_inputs(y_true, scores)
    return _decision_counts(y, s, [np.asarray(thresholds, dtype=np.float64)], at_least_one)[0]


def decisions(
    scores: ArrayLike | ScoreBlocks, thresholds: ArrayLike, at_least_one: bool = False
) -> sp.csr_matrix:
    """:func:`apply_thresholds` as a 0/1 CSR matrix, decided block by block (no dense decision matrix)."""
    blocks = as_blocks(scores)
    t = np.asarray(thresholds, dtype=np.float64)
    if t.shape != (blocks.shape[1],) or not np.isfinite(t).all():
        raise ValueError(f"thresholds must be {blocks.shape[1]} finite values, got shape {t.shape}")
    parts = [part for _, part in blocks.each(_block_decisions, t, at_least_one)]
    return sp.vstack(parts, format="csr") if parts else sp.csr_matrix(blocks.shape, dtype=np.int8)


def _block_decisions(
    a: int, block: NDArray[Any], t: NDArray[np.float64], at_least_one: bool
) -> sp.csr_matrix:
    return sp.csr_matrix(_decide(block, t, at_least_one).view(np.int8))


def _f1_from_counts(
    tp: NDArray[np.int64], fp: NDArray[np.int64], pos: NDArray[np.int64]
) -> NDArray[np.float64]:
    """F1 = 2TP / (2TP + FP + FN), 0 where nothing is true or predicted (sklearn zero_division=0)."""
    denom = tp + fp + pos
    return np.divide(2.0 * tp, denom, out=np.zeros(tp.shape), where=denom > 0)


def _prior_is_better(
    y: Positives,
    s: ScoreBlocks,
    thresholds: NDArray[np.float64],
    t_prior: NDArray[np.float64],
    cols: NDArray[np.intp],
    support: NDArray[np.int64],
) -> NDArray[np.bool_]:
    """Per column of ``cols``: whether ``t_prior`` gives it a higher validation F1 than ``thresholds``, or the
    same F1 with fewer predictions (labels are independent without the at-least-one rule). Equal rationals
    give equal floats, so the tie test is exact."""
    trial = thresholds.copy()
    trial[cols] = t_prior[cols]
    (tp_a, fp_a), (tp_b, fp_b) = _decision_counts(y, s, [thresholds, trial], at_least_one=False)
    f1_a, f1_b = _f1_from_counts(tp_a, fp_a, support)[cols], _f1_from_counts(tp_b, fp_b, support)[cols]
    fewer = (tp_b + fp_b)[cols] < (tp_a + fp_a)[cols]
    return (f1_b > f1_a) | ((f1_b == f1_a) & fewer)


def _micro_ge(tp_a: int, fp_a: int, tp_b: int, fp_b: int, pos: int) -> bool:
    """Exact micro-F1 comparison a >= b in integers (no float ties)."""
    return int(tp_a) * (int(tp_b) + int(fp_b) + pos) >= int(tp_b) * (int(tp_a) + int(fp_a) + pos)


def _summary(tp: NDArray[np.int64], fp: NDArray[np.int64], pos: NDArray[np.int64]) -> dict[str, float]:
    """Validation micro- and macro-F1 from per-label counts (macro over all labels, zero_division=0)."""
    micro = _f1_from_counts(np.array([tp.sum()]), np.array([fp.sum()]), np.array([pos.sum()]))[0]
    macro = float(_f1_from_counts(tp, fp, pos).mean()) if tp.size else 0.0
    return {"micro_f1": float(micro), "macro_f1": macro}


@dataclass
class ThresholdResult:
    """Fitted thresholds with their provenance (what ``thresholds.json`` stores).

    Attributes
    ----------
    labels : label names, in column order.
    thresholds : the threshold applied per label.
    support : validation positives per label.
    f1 : validation F1 per label at the applied threshold.
    source : per label ``"per_label"``, ``"global"``, ``"shrunk"``, ``"prior"`` or ``"blend"``.
    label_optimal_threshold, label_optimal_f1 : the unconstrained per-label optimum (NaN threshold: no
        positives), kept to show what the fallback and the micro-F1 guard gave up.
    global_threshold : the micro-F1-optimal single threshold.
    fallback : what low-support labels get: ``"global"``, ``"prior"`` (:func:`prior_matched_thresholds`),
        ``"best"`` or ``"blend"`` (see :func:`fit_thresholds`).
    fallback_labels : labels with too little validation support for a threshold of their own.
    reverted_labels : labels sent back to the global threshold by the micro-F1 guard.
    floor_action : ``"none"``, ``"greedy_revert"`` or ``"wholesale_global"``.
    validation : validation micro/macro-F1 for ``chosen``, ``global`` and ``fixed_0.5`` thresholds.
    """

    labels: list[str]
    thresholds: NDArray[np.float64]
    support: NDArray[np.int64]
    f1: NDArray[np.float64]
    source: list[str]
    label_optimal_threshold: NDArray[np.float64]
    label_optimal_f1: NDArray[np.float64]
    global_threshold: float
    strategy: str
    min_support: int
    shrinkage: float
    at_least_one: bool
    enforce_global_floor: bool
    fallback: str
    fallback_labels: list[str]
    reverted_labels: list[str]
    floor_action: str
    validation: dict[str, dict[str, float]]

    def apply(self, scores: ArrayLike) -> NDArray[np.int8]:
        """Decisions for new scores with the fitted thresholds and the fitted ``at_least_one`` setting."""
        return apply_thresholds(scores, self.thresholds, self.at_least_one)

    def to_json_dict(self) -> dict[str, Any]:
        """JSON-ready dict (python scalars only, NaN as null)."""

        def opt(x: float) -> float | None:
            return float(x) if math.isfinite(x) else None

        return {
            "schema_version": SCHEMA_VERSION,
            "strategy": self.strategy,
            "decision_rule": DECISION_RULE,
            "parameters": {
                "min_support": int(self.min_support),
                "shrinkage": float(self.shrinkage),
                "at_least_one": bool(self.at_least_one),
                "enforce_global_floor": bool(self.enforce_global_floor),
                "fallback": self.fallback,
            },
            "global_threshold": float(self.global_threshold),
            "labels": [
                {
                    "label": name,
                    "threshold": float(self.thresholds[i]),
                    "support": int(self.support[i]),
                    "f1": float(self.f1[i]),
                    "source": self.source[i],
                    "label_optimal_threshold": opt(float(self.label_optimal_threshold[i])),
                    "label_optimal_f1": float(self.label_optimal_f1[i]),
                }
                for i, name in enumerate(self.labels)
            ],
            "fallback_labels": list(self.fallback_labels),
            "reverted_labels": list(self.reverted_labels),
            "floor_action": self.floor_action,
            "validation": {k: {m: float(v) for m, v in d.items()} for k, d in self.validation.items()},
        }

    @classmethod
    def from_json_dict(cls, data: dict[str, Any]) -> ThresholdResult:
        """Inverse of :meth:`to_json_dict`."""
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"unsupported thresholds schema_version {data.get('schema_version')!r}")
        rows = data["labels"]
        params = data["parameters"]

        def nan(x: float | None) -> float:
            return float("nan") if x is None else float(x)

        return cls(
            labels=[r["label"] for r in rows],
            thresholds=np.array([r["threshold"] for r in rows], dtype=np.float64),
            support=np.array([r["support"] for r in rows], dtype=np.int64),
            f1=np.array([r["f1"] for r in rows], dtype=np.float64),
            source=[r["source"] for r in rows],
            label_optimal_threshold=np.array(
                [nan(r["label_optimal_threshold"]) for r in rows], dtype=np.float64
            ),
            label_optimal_f1=np.array([r["label_optimal_f1"] for r in rows], dtype=np.float64),
            global_threshold=float(data["global_threshold"]),
            strategy=data["strategy"],
            min_support=int(params["min_support"]),
            shrinkage=float(params["shrinkage"]),
            at_least_one=bool(params["at_least_one"]),
            enforce_global_floor=bool(params["enforce_global_floor"]),
            fallback=str(params.get("fallback", "global")),  # files written before the prior fallback
            fallback_labels=list(data["fallback_labels"]),
            reverted_labels=list(data["reverted_labels"]),
            floor_action=data["floor_action"],
            validation={k: dict(v) for k, v in data["validation"].items()},
        )


def _greedy_revert(
    y: Positives,
    thresholds: NDArray[np.float64],
    t_global: float,
    counts: list[tuple[NDArray[np.int64], NDArray[np.int64]]],
) -> tuple[NDArray[np.bool_], bool]:
    """Labels to send back to the global threshold until micro-F1 reaches the global threshold's.

    Each step reverts the label whose switch raises micro-F1 most (labels are independent under a fixed rule,
    so per-label TP/FP deltas are exact). Stops as soon as the floor is met, so as few per-label thresholds as
    possible are given up; returns ``(reverted mask, floor met)``. Without "at least one" greedy never stalls
    below the floor: F1 >= c is linear in (TP, FP), so if reverting all remaining labels beats the current
    F1, some single revert does too.
    """
    pos = int(y.rows.size)
    (tp_c, fp_c), (tp_g, fp_g) = counts
    tp_goal, fp_goal = int(tp_g.sum()), int(fp_g.sum())
    tp, fp = int(tp_c.sum()), int(fp_c.sum())
    d_tp, d_fp = tp_g - tp_c, fp_g - fp_c
    reverted = np.zeros(thresholds.shape[0], dtype=bool)
    candidate = thresholds != t_global
    while not _micro_ge(tp, fp, tp_goal, fp_goal, pos):
        if not candidate.any():
            break
        new_tp, new_fp = tp + d_tp, fp + d_fp
        denom = new_tp + new_fp + pos
        gain = np.divide(2.0 * new_tp, denom, out=np.zeros(denom.shape), where=denom > 0)
        gain[~candidate] = -np.inf
        j = int(np.argmax(gain))
        if _micro_ge(tp, fp, int(new_tp[j]), int(new_fp[j]), pos):
            break  # no single revert improves micro-F1: greedy is stuck
        tp, fp = int(new_tp[j]), int(new_fp[j])
        reverted[j] = True
        candidate[j] = False
    return reverted, _micro_ge(tp, fp, tp_goal, fp_goal, pos)


def fit_thresholds(
    y_true: Any,
    scores: ArrayLike,
    labels: list[str],
    strategy: str = DEFAULT_STRATEGY,
    min_support: int = DEFAULT_MIN_SUPPORT,
    shrinkage: float = DEFAULT_SHRINKAGE,
    at_least_one: bool = False,
    enforce_global_floor: bool = True,
    fallback: str = DEFAULT_FALLBACK,
    prior: ArrayLike | None = None,
) -> ThresholdResult:
    """Fit decision thresholds on validation.

    Parameters
    ----------
    y_true, scores : arrays of shape (n_samples, n_labels)
        Validation labels (0/1; a dense array or a scipy.sparse matrix, with identical results: pass CSR
        for large label sets) and scores: a dense array (float32 is used as is, without a float64 copy) or
        :class:`~pipeline.evaluation.blocks.ScoreBlocks`, read block by block.
    labels : list of str
        Label names in column order.
    strategy : {"global", "per_label", "per_label_with_fallback"}, default="per_label_with_fallback"
        ``global``: the micro-F1-optimal single threshold for every label. ``per_label``: each label's
        F1-optimal threshold wherever it has a validation positive (the naive strategy that over-predicts
        rare labels on test; kept for comparison). ``per_label_with_fallback``: per-label thresholds only for
        labels with at least ``min_support`` validation positives, the global threshold for the rest.
    min_support : int, default=5
        Fewest validation positives a per-label threshold may be fitted from. With 1-3 positives the optimum
        sits on those few scores and over-predicts on test (micro-F1 0.86 -> 0.62-0.69 was seen on Reuters);
        at 5 the F1 curve has at least five steps and one outlying positive moves the optimum less. Used by
        ``per_label_with_fallback`` only.
    shrinkage : float, default=0.0
        Pseudo-count k pulling per-label thresholds toward the global one,
        ``t = (s * t_label + k * t_global) / (s + k)`` with s the label's validation support: a label with
        s = k lands halfway, a well-supported label keeps nearly its own threshold. 0 disables it. Such labels
        get source ``"shrunk"``.
    at_least_one : bool, default=False
        Whether decisions (and therefore validation F1s and the micro-F1 guard) use the "at least one label
        per document" rule of :func:`apply_thresholds`.
    enforce_global_floor : bool, default=True
        Guarantee, on validation, micro-F1 at least that of the global threshold: labels are greedily
        reverted to the global threshold until the floor is met, and all of them if greedy cannot reach it.
        Off only to reproduce the naive per-label strategy.
    fallback : {"global", "prior", "best", "blend"}, default="global"
        Threshold of the labels ``per_label_with_fallback`` gives no threshold of their own. ``global``: the
        global threshold. ``prior``: :func:`prior_matched_thresholds` with ``prior`` (source ``"prior"``;
        labels whose prior is 0 or NaN keep the global one); the micro-F1 guard may still revert them.
        ``best``: each such label the prior-matched threshold where that gives it a higher validation F1
        than the global one, or the same F1 with fewer validation predictions, else the global one: a choice
        between two candidates, which a label's 1-4 validation positives can make where they cannot place
        an optimum of their own. ``blend``: halfway between the two, ``(t_global + t_prior) / 2`` (source
        ``"blend"``; prior 0 or NaN: the global one), as ``shrinkage`` pulls a per-label threshold toward
        the global one: the prior's threshold alone makes every rare label predict at least one validation
        document, which costs micro-F1, while the global one hardly ever predicts them.
    prior : array of shape (n_labels,), optional
        Each label's prevalence in training (training documents with the label / training documents).
        Required by ``fallback="prior"``, ``"best"`` and ``"blend"``.

    Returns
    -------
    ThresholdResult
    """
    y, s = checked_inputs(y_true, scores)
    n_labels = s.shape[1]
    if len(labels) != n_labels:
        raise ValueError(f"{len(labels)} label names for {n_labels} score columns")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if min_support < 1:
        raise ValueError("min_support must be >= 1")
    if shrinkage < 0:
        raise ValueError("shrinkage must be >= 0")
    if fallback not in FALLBACKS:
        raise ValueError(f"fallback must be one of {FALLBACKS}, got {fallback!r}")
    if fallback != "global":
        if prior is None:
            raise ValueError(f"fallback={fallback!r} needs the labels' training prevalences (prior)")
        if np.shape(prior) != (n_labels,):
            raise ValueError(f"prior must have shape ({n_labels},), got {np.shape(prior)}")

    support = y.per_label()
    gathered = gather(y.rows, y.cols, s)  # the positives' scores, read once for both searches
    t_label, f1_label = _best_cuts(label_cuts(y, s, gathered), support)
    t_global, _ = _global_optimum(y, s, gathered)
    has_optimum = np.isfinite(t_label)
    if strategy == "global":
        own = np.zeros(n_labels, dtype=bool)
    elif strategy == "per_label":
        own = has_optimum
    else:
        own = has_optimum & (support >= min_support)

    thresholds = np.full(n_labels, t_global)
    source = np.full(n_labels, "global", dtype=object)
    thresholds[own] = t_label[own]
    source[own] = "per_label"
    if shrinkage > 0:
        shrunk = (support * np.nan_to_num(t_label) + shrinkage * t_global) / (support + shrinkage)
        thresholds[own] = shrunk[own]
        source[own] = "shrunk"
    low_support = ~own if strategy == "per_label_with_fallback" else np.zeros(n_labels, dtype=bool)
    if fallback != "global" and low_support.any():
        q = np.asarray(prior, dtype=np.float64)
        cols = np.flatnonzero(low_support & (np.nan_to_num(q) > 0))
        t_prior = prior_matched_thresholds(s, q, cols)
        if fallback == "best" and cols.size:
            cols = cols[_prior_is_better(y, s, thresholds, t_prior, cols, support)]
        if fallback == "blend":
            thresholds[cols] = (thresholds[cols] + t_prior[cols]) / 2  # low-support labels hold t_global
            source[cols] = "blend"
        else:
            thresholds[cols] = t_prior[cols]
            source[cols] = "prior"
    fallback_mask = ~own if strategy != "global" else np.zeros(n_labels, dtype=bool)

    floor_action = "none"
    reverted = np.zeros(n_labels, dtype=bool)
    every_global, half = np.full(n_labels, t_global), np.full(n_labels, 0.5)
    final = None
    if enforce_global_floor and strategy != "global":
        pos = int(support.sum())
        # Per-label counts without "at least one" (labels independent, so a revert swaps a label's counts);
        # without that rule they are also the final counts, after the reverts: one pass for both.
        # (With the rule, the final counts come from a pass of their own: no 0.5 decisions here.)
        plain = _decision_counts(
            y, s, [thresholds, every_global] + ([] if at_least_one else [half]), at_least_one=False
        )
        reverted, met = _greedy_revert(y, thresholds, t_global, plain[:2])
        if not at_least_one:
            final = plain
        if reverted.any():
            floor_action = "greedy_revert"
        if met and at_least_one:
            # The forced labels couple the columns; check the floor on the real decisions.
            trial = np.where(reverted, t_global, thresholds)
            (tp_c, fp_c), (tp_g, fp_g) = _decision_counts(y, s, [trial, np.full(n_labels, t_global)], True)
            met = _micro_ge(int(tp_c.sum()), int(fp_c.sum()), int(tp_g.sum()), int(fp_g.sum()), pos)
        if not met:
            floor_action = "wholesale_global"
            reverted = thresholds != t_global
        thresholds[reverted] = t_global
        source[reverted] = "global"
        if final is not None:
            (tp_c, fp_c), (tp_g, fp_g), _ = final
            final[0] = (np.where(reverted, tp_g, tp_c), np.where(reverted, fp_g, fp_c))
    if final is None:
        final = _decision_counts(y, s, [thresholds, every_global, half], at_least_one)
    (tp, fp), (tp_g, fp_g), (tp_h, fp_h) = final
    names = list(labels)
    validation = {
        "chosen": _summary(tp, fp, support),
        "global": _summary(tp_g, fp_g, support),
        "fixed_0.5": _summary(tp_h, fp_h, support),
    }
    return ThresholdResult(
        labels=names,
        thresholds=thresholds,
        support=support,
        f1=_f1_from_counts(tp, fp, support),
        source=[str(x) for x in source],
        label_optimal_threshold=t_label,
        label_optimal_f1=f1_label,
        global_threshold=float(t_global),
        strategy=strategy,
        min_support=int(min_support),
        shrinkage=float(shrinkage),
        at_least_one=bool(at_least_one),
        enforce_global_floor=bool(enforce_global_floor),
        fallback=fallback,
        fallback_labels=[names[i] for i in np.flatnonzero(fallback_mask)],
        reverted_labels=[names[i] for i in np.flatnonzero(reverted)],
        floor_action=floor_action,
        validation=validation,
    )


def fit_thresholds_with(
    settings: Any, y_true: Any, scores: ArrayLike, labels: list[str], prior: ArrayLike | None = None
) -> ThresholdResult:
    """:func:`fit_thresholds` with the evaluate stage's settings.

    ``settings`` is the run's ``evaluate`` config (or anything with its fields ``threshold_strategy``,
    ``min_support``, ``shrinkage``, ``at_least_one`` and ``fallback``): the one place that maps those settings
    onto the fit, for the evaluate stage and the benchmarks that decide scores the same way.
    """
    return fit_thresholds(
        y_true,
        scores,
        labels,
        strategy=settings.threshold_strategy,
        min_support=settings.min_support,
        shrinkage=settings.shrinkage,
        at_least_one=settings.at_least_one,
        fallback=settings.fallback,
        prior=prior,
    )
