"""Multi-label evaluation metrics, overall and per label-frequency group.

Micro-F1 is dominated by head labels, so on a long-tailed label set it hides a model that never predicts the
tail; the report therefore also gives macro figures over the whole training vocabulary, the same metrics per
frequency group (head / medium / tail by training count), per-label predicted-vs-true counts (over-prediction)
and the labels the model never gets right. Output is JSON-ready (python scalars, ``None`` for undefined
values).

Ground truth may be a dense 0/1 array or a ``scipy.sparse`` matrix (CSR from the pipeline: an 8,000 x 7,900
split with 130 labels per document is 1M positives, not 63M cells), and both give bit-identical results: every
function first reduces a label matrix to the coordinates of its positives (:func:`label_positives`) and
computes from counts. Scores are read in row blocks (``pipeline.evaluation.blocks``: a dense array or the
scored dataset, never gathered whole), float32 is kept as float32. The definitions
are scikit-learn's (``precision_recall_fscore_support`` with ``zero_division=0``, ``hamming_loss``,
``accuracy_score``, ``average_precision_score``), computed without it: its per-column calls and dense
``(n, labels)`` temporaries took minutes and gigabytes at thousands of labels. Count-based figures are
bit-identical to scikit-learn's; average precision differs from it by float summation order only (~1e-16).

The ranking figures are the extreme multi-label (XMC) literature's, as napkinXC 0.7.2 (``napkinxc.metrics``)
computes them: P@k, nDCG@k, and their propensity-scored forms PSP@k and PSnDCG@k, which weight a hit on label
l by its inverse propensity 1 / p_l (Jain et al., KDD 2016) so that finding rare labels counts for more. They
agree with napkinXC to float summation order (~1e-15).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike, NDArray

from pipeline.data.groups import DEFAULT_HEAD_MIN, DEFAULT_TAIL_MAX, GROUPS, ZERO_SHOT, assign_groups
from pipeline.evaluation.blocks import ScoreBlocks, as_blocks, gather, row_ranges

AVERAGES: tuple[str, ...] = ("micro", "macro", "weighted", "samples")
TOP_K: tuple[int, ...] = (1, 3)
#: Cut-offs of the overall ranking figures (P@k, nDCG@k, PSP@k, PSnDCG@k); groups keep :data:`TOP_K`.
RANKING_K: tuple[int, ...] = (1, 3, 5)
#: Jain et al. (2016)'s propensity constants for a data set without fitted ones (napkinXC's defaults too).
DEFAULT_PROPENSITY_A = 0.55
DEFAULT_PROPENSITY_B = 1.5
DECISION_RULE = (
    "a label is predicted iff its score >= its threshold (pipeline.evaluation.thresholds.apply_thresholds)"
)
# Bound on the score cells handled at once by row-chunked passes (top-k selection), to keep memory flat.
_CHUNK_CELLS = 4_000_000


# ------------------------------------------------------------------------------------------ inputs


class Positives(NamedTuple):
    """The 1-cells of a 0/1 label matrix: row and column of each, in row-major order (row, then column)."""

    rows: NDArray[np.int64]
    cols: NDArray[np.int64]
    shape: tuple[int, int]

    def per_label(self) -> NDArray[np.int64]:
        """Positives per column."""
        return np.bincount(self.cols, minlength=self.shape[1]).astype(np.int64, copy=False)

    def keys(self) -> NDArray[np.int64]:
        """``row * n_labels + col`` of each positive: ascending, so membership is a binary search."""
        return self.rows * self.shape[1] + self.cols


def label_positives(y: Any, name: str = "y_true") -> Positives:
    """Positions of the ones of a 2-D 0/1 label matrix, dense (array-like) or ``scipy.sparse``.

    Explicit zeros and the storage order of a sparse matrix do not matter: a dense matrix and any sparse form
    of it give the same :class:`Positives`. Raises ``ValueError`` for anything but 0 and 1 (duplicate sparse
    entries are summed first, so a duplicated 1 is a 2). Positives are returned as they are.
    """
    if isinstance(y, Positives):
        return y
    if sp.issparse(y):
        if len(y.shape) != 2:
            raise ValueError(f"{name} must be 2-D, got shape {y.shape}")
        m = y.tocsr()
        if not m.has_canonical_format:
            m = m.copy()  # never reorder the caller's matrix in place
            m.sum_duplicates()
        n, c = (int(v) for v in m.shape)
        data = m.data
        if data.size and not np.isin(data, (0, 1)).all():
            raise ValueError(f"{name} must contain only 0 and 1")
        rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(m.indptr))
        cols = m.indices.astype(np.int64)
        keep = data != 0
        if not keep.all():
            rows, cols = rows[keep], cols[keep]
        return Positives(rows, cols, (n, c))
    a = np.asarray(y)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {a.shape}")
    if a.size and not np.isin(a, (0, 1)).all():
        raise ValueError(f"{name} must contain only 0 and 1")
    rows, cols = np.nonzero(a)
    return Positives(rows.astype(np.int64, copy=False), cols.astype(np.int64, copy=False), a.shape)


def checked_inputs(y_true: Any, scores: ArrayLike | ScoreBlocks) -> tuple[Positives, ScoreBlocks]:
    """Positives of a 0/1 label matrix (dense or scipy.sparse) and the scores as checked row blocks, of one
    2-D shape."""
    pos = label_positives(y_true)
    s = as_blocks(scores)
    if pos.shape != s.shape:
        raise ValueError(f"y_true and scores must be 2-D of one shape, got {pos.shape} and {s.shape}")
    return pos, s


def _divide(num: ArrayLike, den: ArrayLike) -> NDArray[np.float64]:
    """``num / den`` in float64, 0 where ``den`` is 0 (scikit-learn's ``zero_division=0``)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den != 0)


# ------------------------------------------------------------------------------------------ ranking


class ScoreCuts(NamedTuple):
    """For every label, every distinct score of its positives as a cut-off ``score >= cut``, highest first.

    The ``i``-th cut belongs to label ``label[i]``; a label's cuts are ``ptr[j]:ptr[j + 1]``. ``tp`` counts
    the label's positives scoring >= the cut, ``predicted`` all its scores >= the cut, and ``lower`` is the
    next lower distinct score in the label's column (NaN if none). Precision, recall, F1 and AP only change
    value at these cuts, so they are all a label needs: O(positives) values instead of O(documents).
    """

    label: NDArray[np.int64]
    cut: NDArray[np.float64]
    tp: NDArray[np.int64]
    predicted: NDArray[np.int64]
    lower: NDArray[np.float64]
    ptr: NDArray[np.int64]


def _positive_cuts(
    pos_cols: NDArray[np.int64], pos_scores: NDArray[Any], n_labels: int
) -> tuple[NDArray[np.int64], NDArray[Any], NDArray[np.int64], NDArray[np.int64]]:
    """(label, cut, tp, ptr) of :class:`ScoreCuts` from the positives' columns and scores alone."""
    order = np.lexsort((-pos_scores, pos_cols))
    c, v = pos_cols[order], pos_scores[order]
    last = np.ones(c.size, dtype=bool)
    if c.size > 1:
        last[:-1] = (c[1:] != c[:-1]) | (v[1:] != v[:-1])
    first = np.searchsorted(c, np.arange(n_labels))
    idx = np.flatnonzero(last)
    label = c[idx]
    tp = (idx - first[label] + 1).astype(np.int64)
    ptr = np.searchsorted(label, np.arange(n_labels + 1)).astype(np.int64)
    return label, v[idx], tp, ptr


def _below(
    cut: NDArray[Any], ptr: NDArray[np.int64], sorted_rows: NDArray[Any]
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Per cut of label j (``ptr[j]:ptr[j + 1]``): the scores of ``sorted_rows[j]`` (ascending) below it, and
    the largest of them (NaN if none)."""
    left = np.zeros(cut.size, dtype=np.int64)
    for j in np.flatnonzero(ptr[1:] > ptr[:-1]):
        a, b = ptr[j], ptr[j + 1]
        left[a:b] = np.searchsorted(sorted_rows[j], cut[a:b], side="left")
    lower = np.full(cut.size, np.nan)
    has_lower = left > 0
    label = np.repeat(np.arange(ptr.size - 1), np.diff(ptr))
    lower[has_lower] = sorted_rows[label[has_lower], left[has_lower] - 1]
    return left, lower


def _streamed_cuts(
    pos_cols: NDArray[np.int64],
    pos_scores: NDArray[Any],
    n_labels: int,
    blocks: ScoreBlocks,
    sorted_block: Any,
) -> ScoreCuts:
    """:class:`ScoreCuts` of ``n_labels`` labels from their positives (column, score) and one pass over
    ``blocks``: ``sorted_block(block)`` gives each label's scores of that block, one ascending row per label.
    Counts below a cut add up over blocks and the next lower score is the largest of the blocks'."""
    label, cut, tp, ptr = _positive_cuts(pos_cols, pos_scores, n_labels)
    # (scores per label row: documents, or all pooled cells for a pooled ranking; scores below each cut;
    # the next lower score)
    sums = blocks.fold(_block_below, _merge_below, sorted_block, cut, ptr) if cut.size else None
    cells, left, lower = sums or (0, np.zeros(cut.size, dtype=np.int64), np.full(cut.size, np.nan))
    return ScoreCuts(label, cut.astype(np.float64), tp, cells - left, lower, ptr)


def _block_below(
    a: int, block: NDArray[Any], sorted_block: Any, cut: NDArray[Any], ptr: NDArray[np.int64]
) -> tuple[int, NDArray[np.int64], NDArray[np.float64]]:
    srt = sorted_block(block)
    left, lower = _below(cut, ptr, srt)
    return srt.shape[1], left.astype(np.int64), lower


def _merge_below(x: tuple[Any, Any, Any], y: tuple[Any, Any, Any]) -> tuple[Any, Any, Any]:
    """Counts below a cut add up over blocks and the next lower score is the largest of the blocks'."""
    return x[0] + y[0], x[1] + y[1], np.fmax(x[2], y[2])


def sorted_label_scores(s: NDArray[Any], labels: NDArray[np.intp] | None = None) -> NDArray[Any]:
    """Scores of the given label columns (all if None), one contiguous row per label, sorted ascending."""
    rows = np.array(s.T, order="C") if labels is None else s.T[labels]  # a copy: blocks may be read-only
    rows.sort(axis=1)
    return rows


def label_cuts(pos: Positives, s: ArrayLike | ScoreBlocks, gathered: NDArray[Any] | None = None) -> ScoreCuts:
    """Per-label :class:`ScoreCuts` of the label matrix ``pos`` against the scores ``s`` (one pass over its
    blocks after gathering the positives' scores, unless ``gathered`` holds them: memory is a block and the
    positives)."""
    blocks = as_blocks(s)
    n_labels = blocks.shape[1]
    with_pos = np.flatnonzero(pos.per_label() > 0)
    if with_pos.size == 0:
        empty_i, empty_f = np.zeros(0, dtype=np.int64), np.zeros(0)
        return ScoreCuts(empty_i, empty_f, empty_i, empty_i, empty_f, np.zeros(n_labels + 1, dtype=np.int64))
    # Only labels with positives have cuts: sort just those columns, renumbered 0..k-1, then map back.
    slot = np.full(n_labels, -1, dtype=np.int64)
    slot[with_pos] = np.arange(with_pos.size)
    cuts = _streamed_cuts(
        slot[pos.cols],
        gather(pos.rows, pos.cols, blocks) if gathered is None else gathered,
        with_pos.size,
        blocks,
        functools.partial(sorted_label_scores, labels=with_pos),
    )
    counts = np.zeros(n_labels, dtype=np.int64)
    counts[with_pos] = np.diff(cuts.ptr)
    ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return cuts._replace(label=with_pos[cuts.label], ptr=ptr)


def pooled_cuts(
    pos: Positives,
    s: ArrayLike | ScoreBlocks,
    cols: NDArray[np.intp] | None = None,
    gathered: NDArray[Any] | None = None,
) -> ScoreCuts:
    """:class:`ScoreCuts` of all (document, label) cells of the columns ``cols`` (all if None) pooled;
    ``gathered``: the scores of all of ``pos``'s positives when already read (saves a pass)."""
    blocks = as_blocks(s)
    if cols is None:
        rows, cols_, keep = pos.rows, pos.cols, slice(None)
    else:
        in_cols = np.zeros(blocks.shape[1], dtype=bool)
        in_cols[cols] = True
        keep = in_cols[pos.cols]
        rows, cols_ = pos.rows[keep], pos.cols[keep]
    scores = gather(rows, cols_, blocks) if gathered is None else gathered[keep]
    flat = functools.partial(_sorted_cells, cols=cols)
    return _streamed_cuts(np.zeros(rows.size, dtype=np.int64), scores, 1, blocks, flat)


def _sorted_cells(block: NDArray[Any], cols: NDArray[np.intp] | None) -> NDArray[Any]:
    """[1, cells]: the block's scores of the columns ``cols`` (all if None), pooled and sorted."""
    if cols is None:
        return np.sort(block, axis=None)[None, :]
    out = block[:, cols].reshape(-1)
    out.sort()
    return out[None, :]


def cut_f1(cuts: ScoreCuts, support: NDArray[np.int64]) -> NDArray[np.float64]:
    """F1 = 2 TP / (predicted + positives) at every cut."""
    return 2.0 * cuts.tp / (cuts.predicted + support[cuts.label])


def cut_ap(cuts: ScoreCuts, support: NDArray[np.int64]) -> NDArray[np.float64]:
    """scikit-learn's (uninterpolated) average precision per label, NaN for labels without cuts.

    AP = sum over cuts of (recall - previous recall) * precision, which is ``average_precision_score``: its
    other thresholds leave recall unchanged and add zero terms.
    """
    n_labels = cuts.ptr.size - 1
    ap = np.full(n_labels, np.nan)
    if cuts.label.size == 0:
        return ap
    pos = support[cuts.label].astype(np.float64)
    recall = cuts.tp / pos
    prev_tp = np.empty_like(cuts.tp)
    prev_tp[1:] = cuts.tp[:-1]
    starts = cuts.ptr[:-1][cuts.ptr[1:] > cuts.ptr[:-1]]
    prev_tp[starts] = 0
    terms = (recall - prev_tp / pos) * (cuts.tp / cuts.predicted)
    ap[cuts.label[starts]] = np.add.reduceat(terms, starts)
    return ap


# ------------------------------------------------------------------------------------------ metrics


def _top_k(sub: NDArray[Any], k: int) -> NDArray[np.bool_]:
    """Mask of each row's k top-scored cells, ties going to the lower column (a stable descending sort)."""
    m = sub.shape[1]
    if k >= m:
        return np.ones(sub.shape, dtype=bool)
    kth = np.partition(sub, m - k, axis=1)[:, m - k : m - k + 1]  # each row's k-th largest score
    top = sub > kth
    need = k - top.sum(axis=1)  # >= 1: cells equal to the k-th largest still to take
    eq = sub == kth
    tied = np.flatnonzero(eq.sum(axis=1) > need)
    if tied.size:
        e = eq[tied]
        eq[tied] = e & (np.cumsum(e, axis=1) <= need[tied, None])
    return top | eq


def _positive_ranks(
    pos: Positives, s: ArrayLike | ScoreBlocks, depth: int, cols: NDArray[np.intp] | None = None
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """(row, column, rank) of every positive in the columns ``cols`` (all if None; columns renumbered 0.. in
    that order): rank is its 1-based place in its row's ranking of those columns if within the top ``depth``,
    else 0. Ties go to the lower column (:func:`_top_k`, then a stable sort of the top cells by score).

    Rows are ranked block by block, in chunks of :data:`_CHUNK_CELLS` cells; only ``depth`` columns per row
    outlive a chunk.
    """
    blocks = as_blocks(s)
    n, n_labels = blocks.shape
    if cols is None:
        rows, local, m = pos.rows, pos.cols, n_labels
    else:
        slot = np.full(n_labels, -1, dtype=np.int64)
        slot[cols] = np.arange(cols.size)
        local = slot[pos.cols]
        keep = local >= 0
        rows, local, m = pos.rows[keep], local[keep], cols.size
    rank = np.zeros(rows.size, dtype=np.int64)
    depth = min(depth, m)
    if depth == 0 or rows.size == 0:
        return rows, local, rank
    row_ptr = row_ranges(rows, n)
    for start, part in blocks.each(_block_ranks, rows, local, row_ptr, cols, depth):
        lo = row_ptr[start]
        rank[lo : lo + part.size] = part
    return rows, local, rank


def _block_ranks(
    start: int,
    block: NDArray[Any],
    rows: NDArray[np.int64],
    local: NDArray[np.int64],
    row_ptr: NDArray[np.int64],
    cols: NDArray[np.intp] | None,
    depth: int,
) -> NDArray[np.int64]:
    """The ranks (:func:`_positive_ranks`) of the positives in the block's rows."""
    step = max(1, _CHUNK_CELLS // (block.shape[1] if cols is None else cols.size))
    base = row_ptr[start]
    rank = np.zeros(row_ptr[start + block.shape[0]] - base, dtype=np.int64)
    for a0 in range(0, block.shape[0], step):
        a, b = start + a0, min(start + block.shape[0], start + a0 + step)
        lo, hi = row_ptr[a], row_ptr[b]
        if lo == hi:
            continue  # no positive in these rows: their ranking cannot score
        sub = block[a0 : a0 + (b - a)]
        sub = sub if cols is None else sub[:, cols]
        top = np.nonzero(_top_k(sub, depth))[1].reshape(b - a, depth)  # each row's top columns, ascending
        order = np.argsort(-np.take_along_axis(sub, top, axis=1), axis=1, kind="stable")
        ranked = np.take_along_axis(top, order, axis=1)  # best first; equal scores: lower column first
        match = ranked[rows[lo:hi] - a] == local[lo:hi, None]
        rank[lo - base : hi - base] = np.where(match.any(axis=1), match.argmax(axis=1) + 1, 0)
    return rank


def _hits(rows: NDArray[np.int64], rank: NDArray[np.int64], k: int, n: int) -> NDArray[np.int64]:
    """Per row: its positives ranked within the top k."""
    return np.bincount(rows[(rank > 0) & (rank <= k)], minlength=n)


def _precision_at_ks(
    pos: Positives, s: ScoreBlocks, ks: tuple[int, ...], cols: NDArray[np.intp] | None = None
) -> dict[int, float]:
    """:func:`precision_at_k` for each k, ranking only the columns ``cols`` (all if None), in row chunks."""
    n = s.shape[0]
    if n == 0:
        return dict.fromkeys(ks, 0.0)
    rows, _, rank = _positive_ranks(pos, s, max(ks), cols)
    return {k: float(_hits(rows, rank, k, n).mean() / k) for k in ks}


def precision_at_k(y_true: Any, scores: ArrayLike, k: int) -> float:
    """Mean over rows of (true labels among the k top-scored labels) / k.

    LibMultiLabel's definition: the denominator is always k, also when a row has fewer than k true labels or
    the label set has fewer than k labels, and rows without true labels count (as 0). Ties in score go to the
    lower label index. ``y_true`` is dense or ``scipy.sparse``.
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    pos, s = checked_inputs(y_true, scores)
    return _precision_at_ks(pos, s, (k,))[k]


def inverse_propensities(
    train_counts: ArrayLike,
    n_train: int,
    a: float = DEFAULT_PROPENSITY_A,
    b: float = DEFAULT_PROPENSITY_B,
) -> NDArray[np.float64]:
    """Jain et al. (2016)'s inverse propensity 1 / p_l = 1 + C (N_l + B)^-A of each label, where
    C = (ln N - 1)(B + 1)^A.

    ``train_counts`` holds N_l (training documents of each label), ``n_train`` is N (training documents). The
    same arithmetic as napkinXC's ``Jain_et_al_inverse_propensity``, which takes the training label matrix
    instead of its counts. A label's weight falls from 1 + C (B + 1)^A / B^A at N_l = 0 towards 1 for
    frequent labels.
    """
    counts = np.asarray(train_counts, dtype=np.float64)
    if counts.ndim != 1 or not np.isfinite(counts).all() or (counts < 0).any():
        raise ValueError("train_counts must be a 1-D array of counts >= 0")
    if n_train < 1:
        raise ValueError(f"n_train must be >= 1, got {n_train}")
    if not (math.isfinite(a) and math.isfinite(b) and b > 0):
        raise ValueError(f"propensity constants must be finite with B > 0, got A={a}, B={b}")
    c = (math.log(n_train) - 1.0) * (b + 1.0) ** a
    return 1.0 + c * (counts + b) ** -a


def propensities(
    train_counts: ArrayLike,
    n_train: int,
    a: float = DEFAULT_PROPENSITY_A,
    b: float = DEFAULT_PROPENSITY_B,
) -> NDArray[np.float64]:
    """Jain et al. (2016)'s propensity p_l = 1 / (1 + C e^(-A ln(N_l + B))) of each label, the chance that a
    relevant label is observed in the ground truth; see :func:`inverse_propensities`."""
    return 1.0 / inverse_propensities(train_counts, n_train, a, b)


def _ranking(
    pos: Positives, s: ScoreBlocks, ks: tuple[int, ...], inv_ps: NDArray[np.float64] | None
) -> dict[str, float]:
    """The figures of :func:`ranking_metrics` from one chunked ranking pass to depth ``max(ks)``."""
    if not ks or min(ks) < 1:
        raise ValueError(f"every k must be >= 1, got {ks}")
    n = s.shape[0]
    depth = max(ks)
    rows, cols, rank = _positive_ranks(pos, s, depth)
    discount = 1.0 / np.log2(np.arange(2, depth + 2))  # DCG gain of places 1..depth
    ideal = np.concatenate([[0.0], np.cumsum(discount)])  # best DCG of a row with j positives (j <= depth)
    found = rank > 0
    gain = np.zeros(rank.size)
    gain[found] = discount[rank[found] - 1]
    n_true = np.bincount(rows, minlength=n)
    if inv_ps is not None:
        w = inv_ps[cols]
        # Each row's best ranking puts its positives in order of weight: place = 0-based rank among them.
        by_w = np.lexsort((-w, rows))
        row_ptr = np.searchsorted(rows, np.arange(n + 1))
        place = np.empty(rows.size, dtype=np.int64)
        place[by_w] = np.arange(rows.size) - row_ptr[rows[by_w]]
    out: dict[str, float] = {}
    for k in ks:
        top = found & (rank <= k)
        out[f"p_at_{k}"] = float(_hits(rows, rank, k, n).mean() / k) if n else 0.0
        z_k = ideal[np.minimum(n_true, k)]  # 0 for a row without positives: it scores 0
        dcg = np.bincount(rows[top], weights=gain[top], minlength=n)
        out[f"ndcg_at_{k}"] = float(_divide(dcg, z_k).mean()) if n else 0.0
        if inv_ps is None:
            continue
        best = place < k
        out[f"psp_at_{k}"] = _ratio(w[top].sum(), w[best].sum())
        ps_dcg = np.bincount(rows[top], weights=w[top] * gain[top], minlength=n)
        ps_best = np.bincount(rows[best], weights=w[best] * discount[place[best]], minlength=n)
        out[f"psndcg_at_{k}"] = _ratio(_divide(ps_dcg, z_k).sum(), _divide(ps_best, z_k).sum())
    names = ("p", "ndcg") if inv_ps is None else ("p", "ndcg", "psp", "psndcg")
    return {f"{m}_at_{k}": out[f"{m}_at_{k}"] for m in names for k in ks}  # grouped by metric, then k


def _ratio(num: float, den: float) -> float:
    """``num / den`` as a python float, NaN when ``den`` is 0 (no positive to find)."""
    return float(num / den) if den else math.nan


def ranking_metrics(
    y_true: Any,
    scores: ArrayLike | ScoreBlocks,
    ks: tuple[int, ...] = RANKING_K,
    inv_propensity: ArrayLike | None = None,
) -> dict[str, float]:
    """P@k and nDCG@k for each k in ``ks`` and, given inverse propensities, PSP@k and PSnDCG@k.

    Keys ``p_at_{k}``, ``ndcg_at_{k}``, ``psp_at_{k}``, ``psndcg_at_{k}``. The definitions are napkinXC's
    (``napkinxc.metrics``, v0.7.2), row by row over the ranking of all labels by score (ties to the lower
    label index), ``q_l`` the inverse propensity of label l (:func:`inverse_propensities`):

    - P@k: hits in the top k / k, averaged over all rows (rows without positives count 0), as
      :func:`precision_at_k`.
    - nDCG@k: DCG@k = sum of 1 / log2(place + 1) over the hits in the top k, over the DCG of a perfect
      ranking, whose min(k, positives) hits fill the first places; averaged over all rows, rows without
      positives counting 0 (napkinXC's ``zero_division=0``).
    - PSP@k: the summed propensity-scored precision of all rows over that of each row's best ranking
      (its positives in order of weight): sum_d sum_{hits l in top k} q_l / sum_d sum_{top min(k, |y_d|)} q_l.
      This is napkinXC's ``psprecision_at_k(..., normalize=True)``, its default, and the normalisation of the
      XMC literature's tables (the Extreme Classification Repository, pyxclib): a ratio of sums, so in
      [0, 1] and comparable across data sets and propensity constants, where the unnormalised mean
      (``normalize=False``) scales with C; a mean of per-row ratios would be undefined for rows without
      positives.
    - PSnDCG@k: likewise, sum_d PSDCG_d@k / Z_d over sum_d bestPSDCG_d@k / Z_d, with PSDCG the DCG of
      weights q_l and Z_d the nDCG normaliser of row d (napkinXC's ``psndcg_at_k``, ``normalize=True``).

    PS figures are NaN when no row has a positive. ``y_true`` is dense or ``scipy.sparse``; rows are
    ranked in chunks, so memory stays flat in the number of rows.
    """
    pos, s = checked_inputs(y_true, scores)
    inv_ps = None
    if inv_propensity is not None:
        inv_ps = np.asarray(inv_propensity, dtype=np.float64)
        if inv_ps.shape != (s.shape[1],) or not np.isfinite(inv_ps).all():
            raise ValueError(f"inv_propensity must be {s.shape[1]} finite values, got shape {inv_ps.shape}")
    return _ranking(pos, s, tuple(ks), inv_ps)


def ndcg_at_k(y_true: Any, scores: ArrayLike, k: int) -> float:
    """nDCG@k, see :func:`ranking_metrics`."""
    return ranking_metrics(y_true, scores, (k,))[f"ndcg_at_{k}"]


def psp_at_k(y_true: Any, scores: ArrayLike, k: int, inv_propensity: ArrayLike) -> float:
    """PSP@k normalised by the best achievable PSP@k of the same rows, see :func:`ranking_metrics`."""
    return ranking_metrics(y_true, scores, (k,), inv_propensity)[f"psp_at_{k}"]


def psndcg_at_k(y_true: Any, scores: ArrayLike, k: int, inv_propensity: ArrayLike) -> float:
    """PSnDCG@k normalised by the best achievable PSnDCG@k of the same rows, see :func:`ranking_metrics`."""
    return ranking_metrics(y_true, scores, (k,), inv_propensity)[f"psndcg_at_{k}"]


def _opt(x: float) -> float | None:
    """Python float, or None when undefined (NaN)."""
    return float(x) if math.isfinite(x) else None


def per_label_ap(y_true: Any, scores: ArrayLike) -> NDArray[np.float64]:
    """Average precision per label (scikit-learn's definition); NaN for labels without positives.

    ``y_true`` is dense or ``scipy.sparse``. One sort of the scores of the labels with positives, then
    O(positives) work: no per-label scikit-learn call.
    """
    pos, s = checked_inputs(y_true, scores)
    return cut_ap(label_cuts(pos, s), pos.per_label())


class _Counts(NamedTuple):
    """What every figure is computed from: the positives of truth and prediction, and per-label counts."""

    true: Positives
    pred: Positives
    hit: NDArray[np.bool_]  # per true positive: also predicted
    true_count: NDArray[np.int64]
    pred_count: NDArray[np.int64]
    tp: NDArray[np.int64]


def _weighted(values: NDArray[np.float64], weights: NDArray[np.int64]) -> float:
    """scikit-learn's weighted average: by true count, plain mean when every weight is zero."""
    try:
        return float(np.average(values, weights=weights))
    except ZeroDivisionError:
        return float(np.mean(values))


def _headline(
    cnt: _Counts,
    scores: ScoreBlocks,
    cols: NDArray[np.intp],
    ap: NDArray[np.float64],
    f1_label: NDArray[np.float64],
    ranked: Mapping[str, Any],
) -> dict[str, Any]:
    """All headline metrics restricted to the label columns ``cols`` (all columns for the overall figures);
    ``ranked``: their score figures (:func:`_column_score_figures`)."""
    n, n_labels = scores.shape
    out: dict[str, Any] = {
        "n_labels": int(cols.size),
        "n_docs": int(n),
        "n_positives": int(cnt.true_count[cols].sum()),
    }
    names = [f"{a}_{m}" for a in AVERAGES for m in ("precision", "recall", "f1")]
    names += ["hamming_loss", "subset_accuracy", "macro_ap", "micro_auprc"] + [f"p_at_{k}" for k in TOP_K]
    if cols.size == 0 or n == 0:
        out.update(dict.fromkeys(names))
        out.update(macro_ap_n_labels=0, macro_ap_n_excluded=int(cols.size), labels_with_f1_gt_0=0)
        return out
    in_cols = np.zeros(n_labels, dtype=bool)
    in_cols[cols] = True
    t_in, p_in = in_cols[cnt.true.cols], in_cols[cnt.pred.cols]
    tp, pred, true = cnt.tp[cols], cnt.pred_count[cols], cnt.true_count[cols]

    # Same arithmetic as scikit-learn's precision_recall_fscore_support (zero_division=0), average by average.
    per_label = {
        "precision": _divide(tp, pred),
        "recall": _divide(tp, true),
        "f1": _divide(2.0 * tp, true + pred),
    }
    tp_s, pred_s, true_s = tp.sum(), pred.sum(), true.sum()
    micro = {
        "precision": _divide(tp_s, pred_s),
        "recall": _divide(tp_s, true_s),
        "f1": _divide(2.0 * tp_s, true_s + pred_s),
    }
    row_true = np.bincount(cnt.true.rows[t_in], minlength=n)
    row_pred = np.bincount(cnt.pred.rows[p_in], minlength=n)
    row_tp = np.bincount(cnt.true.rows[t_in & cnt.hit], minlength=n)
    per_doc = {
        "precision": _divide(row_tp, row_pred),
        "recall": _divide(row_tp, row_true),
        "f1": _divide(2.0 * row_tp, row_true + row_pred),
    }
    for m in ("precision", "recall", "f1"):
        out[f"micro_{m}"] = float(micro[m])
        out[f"macro_{m}"] = float(np.mean(per_label[m]))
        out[f"weighted_{m}"] = _weighted(per_label[m], true)
        out[f"samples_{m}"] = float(np.mean(per_doc[m]))
    differences = int(row_true.sum()) + int(row_pred.sum()) - 2 * int(row_tp.sum())
    out["hamming_loss"] = float(differences) / (n * cols.size * 1.0)
    out["subset_accuracy"] = float(np.mean((row_true == row_tp) & (row_pred == row_tp)))
    ap_sub = ap[cols]
    defined = np.isfinite(ap_sub)
    out["macro_ap"] = float(ap_sub[defined].mean()) if defined.any() else None
    out["macro_ap_n_labels"] = int(defined.sum())
    out["macro_ap_n_excluded"] = int((~defined).sum())
    out["micro_auprc"] = ranked["micro_auprc"]
    for k in TOP_K:
        out[f"p_at_{k}"] = ranked["p_at"][k]
    out["labels_with_f1_gt_0"] = int((f1_label[cols] > 0).sum())
    return out


class ScoreFigures(NamedTuple):
    """The figures of :func:`evaluate` that read only truth and scores, not the decisions: computed once and
    passed to every :func:`evaluate` of the same truth and scores under other decisions (a report's figures
    at 0.5 beside those at the fitted thresholds), which then reads the scores once, for nothing else."""

    shape: tuple[int, int]
    ap: NDArray[np.float64]
    ranking: dict[str, float | None]
    #: "overall" and each group -> micro_auprc and P@k (of TOP_K) over those columns.
    columns: dict[str, dict[str, Any]]


def _column_score_figures(
    pos: Positives,
    s: ScoreBlocks,
    cols: NDArray[np.intp],
    p_at: Mapping[int, float] | None,
    gathered: NDArray[Any],
) -> dict[str, Any]:
    if cols.size == 0 or s.shape[0] == 0:
        return {"micro_auprc": None, "p_at": dict.fromkeys(TOP_K)}
    every = cols.size == s.shape[1]
    true_s = int(pos.per_label()[cols].sum())
    auprc = None
    if true_s:
        pooled = pooled_cuts(pos, s, None if every else cols, gathered)
        auprc = float(cut_ap(pooled, np.array([true_s], dtype=np.int64))[0])
    if p_at is None:
        p_at = _precision_at_ks(pos, s, TOP_K, None if every else cols)
    return {"micro_auprc": auprc, "p_at": dict(p_at)}


def score_figures(
    y_true: Any,
    scores: ArrayLike,
    train_counts: ArrayLike,
    head_min: int = DEFAULT_HEAD_MIN,
    tail_max: int = DEFAULT_TAIL_MAX,
    n_train_docs: int | None = None,
    propensity_a: float = DEFAULT_PROPENSITY_A,
    propensity_b: float = DEFAULT_PROPENSITY_B,
    rank_scores: ArrayLike | None = None,
) -> ScoreFigures:
    """Per-label AP, the ranking figures (of ``rank_scores`` when given) and, overall and per group, the
    pooled AUPRC and P@k: see :func:`evaluate`, whose arguments these are."""
    pos, s = checked_inputs(y_true, scores)
    counts = np.asarray(train_counts, dtype=np.int64)
    n, n_labels = s.shape
    if counts.shape != (n_labels,):
        raise ValueError(f"train_counts {counts.shape}: expected {n_labels} labels")
    gathered = gather(pos.rows, pos.cols, s)
    ap = cut_ap(label_cuts(pos, s, gathered), pos.per_label())
    inv_ps = None
    if n_train_docs is not None:
        inv_ps = inverse_propensities(counts, n_train_docs, propensity_a, propensity_b)
    rs = s if rank_scores is None else as_blocks(rank_scores, "rank_scores")
    if rs.shape != s.shape:
        raise ValueError(f"rank_scores must have the shape of scores {s.shape}, got {rs.shape}")
    ranking: dict[str, float | None] = dict(_ranking(pos, rs, RANKING_K, inv_ps))
    if inv_ps is None:
        ranking.update({f"{m}_at_{k}": None for m in ("psp", "psndcg") for k in RANKING_K})
    if n == 0 or n_labels == 0:
        ranking = dict.fromkeys(ranking)  # undefined, as the other overall figures
    p_at = {k: float(ranking[f"p_at_{k}"]) for k in TOP_K} if n and n_labels else None
    groups = assign_groups(counts, head_min, tail_max)
    columns = {"overall": _column_score_figures(pos, s, np.arange(n_labels), p_at, gathered)}
    for g in GROUPS:
        cols = np.flatnonzero(groups == g)
        every = cols.size == n_labels
        columns[g] = columns["overall"] if every else _column_score_figures(pos, s, cols, None, gathered)
    return ScoreFigures((n, n_labels), ap, ranking, columns)


def _zero_shot(
    positives: Mapping[str, int],
    labels: list[str],
    cnt: _Counts,
    overall: dict[str, Any],
    scored: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, float | None]]:
    """(the zero-shot group, its per-label rows, the overall micro figures with its pairs added) from each
    zero-shot label's test positives and, when they were scored from their names, ``scored``.

    The counts are kept apart from the vocabulary columns so the vocabulary figures stay what they were;
    the ``*_with_zero_shot`` figures say how far the model falls short of the whole test set.
    """
    known = sorted(set(positives) & set(labels))
    if known:
        raise ValueError(f"zero-shot labels must be outside the vocabulary, got {known[:10]}")
    if any(int(c) < 0 for c in positives.values()):
        raise ValueError("zero-shot positive counts must be >= 0")
    scored = scored or {"predicted": {}, "hits": {}, "ranking": {}}
    predicted_of, hits_of = scored["predicted"], scored["hits"]
    if any(int(hits_of.get(lab, 0)) > int(positives.get(lab, 0)) for lab in hits_of):
        raise ValueError("zero-shot hits must not exceed the label's positives")
    names = sorted((lab for lab, c in positives.items() if c), key=lambda lab: (-int(positives[lab]), lab))
    pos = np.array([int(positives[lab]) for lab in names], dtype=np.int64)
    # Without names nothing predicts a label outside the vocabulary: none of these positives is hit.
    predicted = np.array([int(predicted_of.get(lab, 0)) for lab in names], dtype=np.int64)
    hits = np.array([int(hits_of.get(lab, 0)) for lab in names], dtype=np.int64)
    recall, f1 = _divide(hits, pos), _divide(2.0 * hits, pos + predicted)
    # Predictions of scored labels without a test positive are false positives of the group too.
    n_pos, n_hit, n_pred = int(pos.sum()), int(hits.sum()), int(sum(int(v) for v in predicted_of.values()))
    ranking = scored["ranking"]
    group = {
        "n_labels": len(names),
        "n_docs": overall["n_docs"],
        "n_positives": n_pos,
        "true_positives": n_hit,
        "micro_recall": float(_divide(n_hit, n_pos)) if names else None,
        "macro_recall": float(recall.mean()) if names else None,
        "micro_f1": float(_divide(2.0 * n_hit, n_pos + n_pred)) if names else None,
        "macro_f1": float(f1.mean()) if names else None,
        "labels_with_f1_gt_0": int((f1 > 0).sum()),
        "scored_from_names": bool(predicted_of),
        "scored_labels": len(predicted_of),
        "predicted_pairs": n_pred,
        # A closed vocabulary never ranks these labels: 0 unless they were scored.
        **{k: (ranking.get(k, 0.0) if names else None) for k in ("p_at_5", "recall_at_5")},
    }
    rows = [
        {
            "label": lab,
            "group": ZERO_SHOT,
            "train_count": 0,
            "support": int(pos[i]),
            "true_count": int(pos[i]),
            "predicted_count": int(predicted[i]),
            "true_positives": int(hits[i]),
            "over_prediction": float(predicted[i] / pos[i]),
            "precision": float(_divide(hits[i], predicted[i])),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "ap": None,
        }
        for i, lab in enumerate(names)
    ]
    tp = int(cnt.tp.sum()) + n_hit
    true = int(cnt.true_count.sum()) + n_pos
    pred = int(cnt.pred_count.sum()) + n_pred
    defined = overall["micro_f1"] is not None
    micro = {
        "micro_recall_with_zero_shot": float(_divide(tp, true)) if defined else None,
        "micro_f1_with_zero_shot": float(_divide(2.0 * tp, true + pred)) if defined else None,
    }
    return group, rows, micro


def evaluate(
    y_true: Any,
    y_pred: Any,
    scores: ArrayLike,
    labels: list[str],
    train_counts: ArrayLike,
    head_min: int = DEFAULT_HEAD_MIN,
    tail_max: int = DEFAULT_TAIL_MAX,
    decision_rule: str = DECISION_RULE,
    zero_shot: Mapping[str, int] | None = None,
    n_train_docs: int | None = None,
    propensity_a: float = DEFAULT_PROPENSITY_A,
    propensity_b: float = DEFAULT_PROPENSITY_B,
    rank_scores: ArrayLike | None = None,
    zero_shot_scored: Mapping[str, Mapping[str, Any]] | None = None,
    scored: ScoreFigures | None = None,
) -> dict[str, Any]:
    """Every evaluation metric of the report, overall, per frequency group and per label.

    Parameters
    ----------
    y_true, y_pred : arrays or scipy.sparse matrices of shape (n_samples, n_labels)
        0/1 true and predicted labels; the columns are the whole training vocabulary. Dense and sparse
        inputs give identical results; pass CSR for large label sets.
    scores : array of shape (n_samples, n_labels), or :class:`~pipeline.evaluation.blocks.ScoreBlocks`
        Scores the predictions were thresholded from (for AP, AUPRC and P@k); read in row blocks.
    labels : list of str
        Label names in column order.
    train_counts : array of shape (n_labels,)
        Training documents per label, for the frequency groups.
    head_min, tail_max : int
        Group cut-offs, see :func:`assign_groups`.
    decision_rule : str
        How ``y_pred`` was obtained, recorded in ``conventions``.
    zero_shot : mapping of str to int, optional
        Test positives (documents) of each label outside ``labels`` (seen only outside train). They form the
        :data:`ZERO_SHOT` group and the overall ``*_with_zero_shot`` micro figures; every other figure is
        over ``labels`` only, as without them.
    n_train_docs : int, optional
        Training documents (N of the propensity model, with ``train_counts`` as N_l). Without it the
        propensity-scored figures are null.
    propensity_a, propensity_b : float
        Jain et al. (2016)'s constants A and B of :func:`inverse_propensities`.
    rank_scores : array or ScoreBlocks of shape (n_samples, n_labels), optional
        Scores the ranking metrics (P@k, nDCG@k, PSP@k, PSnDCG@k) read instead of ``scores``: a logit-adjusted
        ranking (``pipeline.evaluation.rank_adjust``).
    zero_shot_scored : mapping, optional
        When labels outside ``labels`` were scored from their names (``pipeline.evaluation.label_names``):
        ``predicted`` and ``hits`` (documents per scored label) and ``ranking`` (``p_at_5``,
        ``recall_at_5``), counted into the zero-shot group and the ``*_with_zero_shot`` figures.
    scored : ScoreFigures, optional
        :func:`score_figures` of the same ``y_true``, ``scores``, ``train_counts`` and settings (and
        ``rank_scores``, which is then not read): only the decision figures are computed here.

    Returns
    -------
    dict with keys ``overall``, ``groups`` (head / medium / tail: the overall metrics on that group's
    columns; ``zero-shot``: label, positive and hit counts and recall of the labels of ``zero_shot``;
    ``overall`` alone also has P@k, nDCG@k, PSP@k and PSnDCG@k for k in :data:`RANKING_K`),
    ``per_label``, ``zero_shot_labels`` (per-label rows of the zero-shot group, most positives first),
    ``labels_with_f1_gt_0``, ``never_correct``, ``labels_without_positives``, ``conventions``.
    """
    s = as_blocks(scores)
    yt = label_positives(y_true, "y_true")
    yp = label_positives(y_pred, "y_pred")
    counts = np.asarray(train_counts, dtype=np.int64)
    if yt.shape != yp.shape or yt.shape != s.shape:
        raise ValueError(f"y_true, y_pred, scores must be 2-D of one shape: {yt.shape} {yp.shape} {s.shape}")
    n_labels = s.shape[1]
    if len(labels) != n_labels or counts.shape != (n_labels,):
        raise ValueError(f"labels ({len(labels)}), train_counts {counts.shape}: expected {n_labels} labels")
    groups = assign_groups(counts, head_min, tail_max)

    keys_p = yp.keys()
    keys_t = yt.keys()
    at = np.minimum(np.searchsorted(keys_p, keys_t), max(keys_p.size - 1, 0))
    hit = keys_p[at] == keys_t if keys_p.size else np.zeros(keys_t.size, dtype=bool)
    true_count, pred_count = yt.per_label(), yp.per_label()
    tp = np.bincount(yt.cols[hit], minlength=n_labels).astype(np.int64, copy=False)
    cnt = _Counts(yt, yp, hit, true_count, pred_count, tp)
    prec, rec = _divide(tp, pred_count), _divide(tp, true_count)
    f1 = _divide(2.0 * tp, true_count + pred_count)
    if scored is None:
        scored = score_figures(
            yt, s, counts, head_min, tail_max, n_train_docs, propensity_a, propensity_b, rank_scores
        )
    elif scored.shape != s.shape:
        raise ValueError(f"scored figures are of shape {scored.shape}, scores {s.shape}")
    ap, ranking = scored.ap, scored.ranking

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
    overall = _headline(cnt, s, np.arange(n_labels), ap, f1, scored.columns["overall"])
    by_group = {}
    for g in GROUPS:
        cols = np.flatnonzero(groups == g)
        # A group holding every label (all head, say) is the overall set: skip recomputing it.
        by_group[g] = (
            dict(overall) if cols.size == n_labels else _headline(cnt, s, cols, ap, f1, scored.columns[g])
        )
    by_group[ZERO_SHOT], zero_shot_rows, with_zero_shot = _zero_shot(
        zero_shot or {}, labels, cnt, overall, zero_shot_scored
    )
    overall.update(with_zero_shot)
    # After the groups: an all-label group copies the overall figures, and groups have no ranking figures.
    overall.update({key: value if value is None else _opt(value) for key, value in ranking.items()})
    order = np.argsort(-counts, kind="stable")
    return {
        "overall": overall,
        "groups": by_group,
        "per_label": per_label,
        "zero_shot_labels": zero_shot_rows,
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
            "ndcg_at_k": "DCG of the k top-scored labels (gain 1 / log2(place + 1)) over that of a perfect "
            "ranking, averaged over all documents (a document without true labels scores 0); overall only",
            "propensity_scored": "psp_at_k, psndcg_at_k: P@k and DCG@k with each hit on label l weighted by "
            "1 / p_l, p_l = 1 / (1 + C (N_l + B)^-A), C = (ln N - 1)(B + 1)^A (Jain et al. 2016), N_l the "
            f"label's training documents, N = {'not given' if n_train_docs is None else n_train_docs} "
            f"training documents, A = {propensity_a}, B = {propensity_b}; normalised by the same sums "
            "for each document's best ranking (napkinXC normalize=True); null without N; overall only",
            "ties": "ranking figures break equal scores in favour of the lower label index",
            "groups": f"head: train_count >= {head_min}; tail: train_count <= {tail_max}; medium: otherwise; "
            "group metrics use only that group's label columns",
            "never_correct": "labels with >= 1 positive in the evaluated set and no true positive, most "
            "frequent in training first",
            "over_prediction": "predicted_count / true_count (null when true_count is 0)",
            "zero_shot": f"{ZERO_SHOT}: labels with test positives that never occur in train, so outside "
            "the model's vocabulary; n_positives counts their (document, label) pairs, which no vocabulary "
            "figure includes; micro_*_with_zero_shot add them (missed unless scored from label names: then "
            "their predictions too, scored labels without test positives included); p_at_5: positives among "
            "the 5 top-scored zero-shot labels / 5 and recall_at_5: their share among the 5 top-scored "
            "labels of all, over the documents holding one (0 when not scored)",
        },
    }
