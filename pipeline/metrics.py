"""Multi-label evaluation metrics, overall and per label-frequency group.

Micro-F1 is dominated by head labels, so on a long-tailed label set it hides a model that never predicts the
tail; the report therefore also gives macro figures over the whole training vocabulary, the same metrics per
frequency group (head / medium / tail by training count), per-label predicted-vs-true counts (over-prediction)
and the labels the model never gets right. scikit-learn computes every metric it has; precision@k is by hand.
Output is JSON-ready (python scalars, ``None`` for undefined values).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    hamming_loss,
    precision_recall_fscore_support,
)

GROUPS: tuple[str, ...] = ("head", "medium", "tail")
DEFAULT_HEAD_MIN = 35
DEFAULT_TAIL_MAX = 8
AVERAGES: tuple[str, ...] = ("micro", "macro", "weighted", "samples")
TOP_K: tuple[int, ...] = (1, 3)
DECISION_RULE = "a label is predicted iff its score >= its threshold (pipeline.thresholds.apply_thresholds)"


def assign_groups(
    train_counts: ArrayLike, head_min: int = DEFAULT_HEAD_MIN, tail_max: int = DEFAULT_TAIL_MAX
) -> NDArray[np.str_]:
    """Frequency group of each label from its number of training documents.

    ``head`` if count >= head_min, ``tail`` if count <= tail_max, ``medium`` otherwise. The defaults (35, 8)
    are the published Reuters-21578 split, so group figures compare with the literature.
    """
    counts = np.asarray(train_counts)
    if counts.ndim != 1:
        raise ValueError(f"train_counts must be 1-D, got shape {counts.shape}")
    if tail_max >= head_min:
        raise ValueError(f"tail_max ({tail_max}) must be below head_min ({head_min})")
    return np.where(counts >= head_min, "head", np.where(counts <= tail_max, "tail", "medium")).astype("<U6")


def precision_at_k(y_true: ArrayLike, scores: ArrayLike, k: int) -> float:
    """Mean over rows of (true labels among the k top-scored labels) / k.

    LibMultiLabel's definition: the denominator is always k, also when a row has fewer than k true labels or
    the label set has fewer than k labels, and rows without true labels count (as 0). Ties in score go to the
    lower label index.
    """
    y = np.asarray(y_true)
    s = np.asarray(scores, dtype=np.float64)
    if k < 1:
        raise ValueError("k must be >= 1")
    if y.shape != s.shape or y.ndim != 2:
        raise ValueError(f"y_true and scores must be 2-D of one shape, got {y.shape} and {s.shape}")
    if y.shape[0] == 0:
        return 0.0
    top = np.argsort(-s, axis=1, kind="stable")[:, :k]
    hits = np.take_along_axis(y, top, axis=1).sum(axis=1)
    return float(hits.mean() / k)


def _opt(x: float) -> float | None:
    """Python float, or None when undefined (NaN)."""
    return float(x) if math.isfinite(x) else None


def per_label_ap(y_true: NDArray[Any], scores: NDArray[np.float64]) -> NDArray[np.float64]:
    """sklearn average precision per label; NaN for labels without positives (AP is undefined there)."""
    ap = np.full(y_true.shape[1], np.nan)
    for j in np.flatnonzero(y_true.sum(axis=0) > 0):
        ap[j] = average_precision_score(y_true[:, j], scores[:, j])
    return ap


def _prf(
    y_true: NDArray[np.int8], y_pred: NDArray[np.int8], cols: NDArray[np.intp], average: str | None
) -> tuple[Any, Any, Any]:
    """sklearn precision, recall, F1 (zero_division=0) over the label columns ``cols``.

    sklearn reads a single-column matrix as a binary target; a zero pad column keeps it multilabel, and
    ``labels=cols`` restricts every average to ``cols``, so the pad never counts.
    """
    if y_true.shape[1] == 1:
        pad = np.zeros((y_true.shape[0], 1), dtype=y_true.dtype)
        y_true, y_pred = np.hstack([y_true, pad]), np.hstack([y_pred, pad])
    p, r, f, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=cols, average=average, zero_division=0
    )
    return p, r, f


def _headline(
    y_true: NDArray[np.int8],
    y_pred: NDArray[np.int8],
    scores: NDArray[np.float64],
    cols: NDArray[np.intp],
    ap: NDArray[np.float64],
    f1_label: NDArray[np.float64],
) -> dict[str, Any]:
    """All headline metrics restricted to the label columns ``cols`` (all columns for the overall figures)."""
    out: dict[str, Any] = {"n_labels": int(cols.size), "n_docs": int(y_true.shape[0])}
    names = [f"{a}_{m}" for a in AVERAGES for m in ("precision", "recall", "f1")]
    names += ["hamming_loss", "subset_accuracy", "macro_ap", "micro_auprc"] + [f"p_at_{k}" for k in TOP_K]
    if cols.size == 0 or y_true.shape[0] == 0:
        out.update(dict.fromkeys(names))
        out.update(macro_ap_n_labels=0, macro_ap_n_excluded=int(cols.size), labels_with_f1_gt_0=0)
        return out
    for avg in AVERAGES:
        p, r, f = _prf(y_true, y_pred, cols, avg)
        out[f"{avg}_precision"], out[f"{avg}_recall"], out[f"{avg}_f1"] = float(p), float(r), float(f)
    t_sub, p_sub, s_sub = y_true[:, cols], y_pred[:, cols], scores[:, cols]
    out["hamming_loss"] = float(hamming_loss(t_sub, p_sub))
    out["subset_accuracy"] = float(accuracy_score(t_sub, p_sub))
    ap_sub = ap[cols]
    defined = np.isfinite(ap_sub)
    out["macro_ap"] = float(ap_sub[defined].mean()) if defined.any() else None
    out["macro_ap_n_labels"] = int(defined.sum())
    out["macro_ap_n_excluded"] = int((~defined).sum())
    out["micro_auprc"] = float(average_precision_score(t_sub.ravel(), s_sub.ravel())) if t_sub.any() else None
    for k in TOP_K:
        out[f"p_at_{k}"] = precision_at_k(t_sub, s_sub, k)
    out["labels_with_f1_gt_0"] = int((f1_label[cols] > 0).sum())
    return out


def evaluate(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    scores: ArrayLike,
    labels: list[str],
    train_counts: ArrayLike,
    head_min: int = DEFAULT_HEAD_MIN,
    tail_max: int = DEFAULT_TAIL_MAX,
    decision_rule: str = DECISION_RULE,
) -> dict[str, Any]:
    """Every evaluation metric of the report, overall, per frequency group and per label.

    Parameters
    ----------
    y_true, y_pred : arrays of shape (n_samples, n_labels)
        0/1 true and predicted labels; the columns are the whole training vocabulary.
    scores : array of shape (n_samples, n_labels)
        Scores the predictions were thresholded from (for AP, AUPRC and P@k).
    labels : list of str
        Label names in column order.
    train_counts : array of shape (n_labels,)
        Training documents per label, for the frequency groups.
    head_min, tail_max : int
        Group cut-offs, see :func:`assign_groups`.
    decision_rule : str
        How ``y_pred`` was obtained, recorded in ``conventions``.

    Returns
    -------
    dict with keys ``overall``, ``groups`` (head / medium / tail: the overall metrics on that group's
    columns), ``per_label``, ``labels_with_f1_gt_0``, ``never_correct``, ``labels_without_positives``,
    ``conventions``.
    """
    yt = np.asarray(y_true)
    yp = np.asarray(y_pred)
    s = np.asarray(scores, dtype=np.float64)
    counts = np.asarray(train_counts, dtype=np.int64)
    if yt.ndim != 2 or yt.shape != yp.shape or yt.shape != s.shape:
        raise ValueError(f"y_true, y_pred, scores must be 2-D of one shape: {yt.shape} {yp.shape} {s.shape}")
    n_labels = yt.shape[1]
    if len(labels) != n_labels or counts.shape != (n_labels,):
        raise ValueError(f"labels ({len(labels)}), train_counts {counts.shape}: expected {n_labels} labels")
    for name, m in (("y_true", yt), ("y_pred", yp)):
        if m.size and not np.isin(m, (0, 1)).all():
            raise ValueError(f"{name} must contain only 0 and 1")
    yt, yp = yt.astype(np.int8), yp.astype(np.int8)
    groups = assign_groups(counts, head_min, tail_max)

    all_cols = np.arange(n_labels)
    if yt.shape[0] and n_labels:
        prec, rec, f1 = _prf(yt, yp, all_cols, None)
    else:
        prec = rec = f1 = np.zeros(n_labels)
    ap = per_label_ap(yt, s)
    true_count = yt.sum(axis=0, dtype=np.int64)
    pred_count = yp.sum(axis=0, dtype=np.int64)
    tp = (yt & yp).sum(axis=0, dtype=np.int64)

    per_label = [
        {
            "label": labels[j],
            "group": str(groups[j]),
            "train_count": int(counts[j]),
            "support": int(true_count[j]),
            "true_count": int(true_count[j]),
            "predicted_count": int(pred_count[j]),
            "true_positives": int(tp[j]),
            "over_prediction": float(pred_count[j] / true_count[j]) if true_count[j] else None,
            "precision": float(prec[j]),
            "recall": float(rec[j]),
            "f1": float(f1[j]),
            "ap": _opt(float(ap[j])),
        }
        for j in range(n_labels)
    ]
    overall = _headline(yt, yp, s, all_cols, ap, f1)
    by_group = {g: _headline(yt, yp, s, np.flatnonzero(groups == g), ap, f1) for g in GROUPS}
    order = np.argsort(-counts, kind="stable")
    return {
        "overall": overall,
        "groups": by_group,
        "per_label": per_label,
        "labels_with_f1_gt_0": {
            "overall": overall["labels_with_f1_gt_0"],
            **{g: by_group[g]["labels_with_f1_gt_0"] for g in GROUPS},
        },
        "never_correct": [labels[j] for j in order if true_count[j] > 0 and tp[j] == 0],
        "labels_without_positives": [labels[j] for j in order if true_count[j] == 0],
        "conventions": {
            "macro_average": "unweighted mean over every label of the training vocabulary, including labels "
            "absent from the evaluated set (scikit-learn, zero_division=0: such a label scores 0)",
            "zero_division": 0,
            "decision_rule": decision_rule,
            "weighted_average": "mean over labels weighted by true count in the evaluated set",
            "samples_average": "mean over documents; a document with no true and no predicted label scores 0",
            "macro_ap": "mean scikit-learn average precision over labels with >= 1 positive in the evaluated "
            "set; macro_ap_n_excluded labels have none (AP undefined)",
            "micro_auprc": "scikit-learn average precision of all (document, label) scores pooled",
            "precision_at_k": "true labels among the k top-scored labels / k, averaged over all documents "
            "(LibMultiLabel); within a group, ranking among that group's labels only",
            "groups": f"head: train_count >= {head_min}; tail: train_count <= {tail_max}; medium: otherwise; "
            "group metrics use only that group's label columns",
            "never_correct": "labels with >= 1 positive in the evaluated set and no true positive, most "
            "frequent in training first",
            "over_prediction": "predicted_count / true_count (null when true_count is 0)",
        },
    }
