"""Label statistics as a distributed aggregation: a partial per block, combined on the driver.

Only the partials (one small record per block) travel to the driver, never the rows.

Two passes over the prepared rows:

1. `block_partial`: per split, documents, label counts (an Arrow group-by of (split, label)), documents per
   number of labels, text lengths (a histogram of power-of-two bins), and the row issues with a few example
   ids; no Python per row or per label. `combine` merges the blocks' label counts once, with one group-by
   over all of them.
2. `block_pairs`: co-occurring label pairs of the train split, counted only among the `M` most frequent
   train labels (the candidates, known from pass 1) as a sparse `Y^T Y` per block. The driver sums the
   blocks into an `M x M` array, so memory is bounded by `M^2`, not by the vocabulary squared nor by the
   labels per row. `top_pairs` then takes the k largest counts; they are provably the exact top k of the
   whole vocabulary when the k-th count is at least the count of the most frequent label left out of the
   candidates (a pair is never more frequent than either of its labels).
"""

from __future__ import annotations

import pickle
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from pipeline.data.groups import GROUPS, ZERO_SHOT, assign_groups
from pipeline.data.labels import csr_from_arrow
from pipeline.data.sources import SPLITS

MAX_EXAMPLES = 5


def _add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Two histograms of different lengths summed."""
    out = np.zeros(max(len(a), len(b)), np.int64)
    out[: len(a)] += a
    out[: len(b)] += b
    return out


@dataclass
class SplitPartial:
    docs: int = 0
    label_counts: Counter = field(default_factory=Counter)
    cardinality_sum: int = 0
    #: Documents by number of labels (index k: documents with k labels).
    cardinality_hist: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    #: Documents by text length in characters, bin k = `length_bins` (0: empty; k >= 1: 2^(k-1) .. 2^k - 1).
    length_hist: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    length_sum: int = 0
    length_max: int = 0

    def merge(self, other: SplitPartial) -> None:
        self.docs += other.docs
        self.label_counts.update(other.label_counts)
        self.cardinality_sum += other.cardinality_sum
        self.cardinality_hist = _add(self.cardinality_hist, other.cardinality_hist)
        self.length_hist = _add(self.length_hist, other.length_hist)
        self.length_sum += other.length_sum
        self.length_max = max(self.length_max, other.length_max)


@dataclass
class Partial:
    splits: dict[str, SplitPartial] = field(default_factory=lambda: {s: SplitPartial() for s in SPLITS})
    #: issue -> split -> count, for rows dropped or kept as all-negative.
    issues: dict[str, Counter] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    #: A block's label counts not folded into `splits` yet: (split index in SPLITS, label, count) rows.
    counts: pa.Table | None = None

    def merge(self, other: Partial) -> None:
        for s in SPLITS:
            self.splits[s].merge(other.splits[s])
        for k, c in other.issues.items():
            self.issues.setdefault(k, Counter()).update(c)
        for k, ex in other.examples.items():
            mine = self.examples.setdefault(k, [])
            mine.extend(ex[: MAX_EXAMPLES - len(mine)])


_SPLIT_VALUES = pa.array(list(SPLITS), pa.string())


def split_mask(table: pa.Table, split: str) -> pa.ChunkedArray:
    """Kept rows of `split` (rows with a null split are never selected)."""
    return pc.fill_null(pc.and_(table.column("_keep"), pc.equal(table.column("split"), split)), False)


def _issue_partial(part: Partial, table: pa.Table) -> None:
    """Issue counts by (issue, split) with an Arrow group-by, and the first few ids of each issue: Python
    runs per distinct issue, not per row."""
    has_issue = pc.fill_null(pc.not_equal(table.column("_issue"), ""), False)
    if not pc.any(has_issue).as_py():
        return
    rows = table.filter(has_issue).select(["_issue", "split", "id"])
    grouped = rows.group_by(["_issue", "split"], use_threads=False).aggregate([([], "count_all")])
    columns = (grouped.column(c).to_pylist() for c in ("_issue", "split", "count_all"))
    for issue, split, n in zip(*columns, strict=True):
        part.issues.setdefault(issue, Counter())[split or "?"] += int(n)
    for issue in part.issues:
        ids = rows.filter(pc.equal(rows.column("_issue"), issue)).column("id").slice(0, MAX_EXAMPLES)
        part.examples[issue] = ids.to_pylist()


def length_bins(chars: np.ndarray) -> np.ndarray:
    """Each length's histogram bin: its bit length (0 for 0, k for 2^(k-1) .. 2^k - 1)."""
    return np.frexp(chars.astype(np.float64))[1].astype(np.int64)  # x = m * 2^e, 0.5 <= m < 1; exact < 2^53


def _lengths_partial(part: Partial, text: pa.Array | pa.ChunkedArray, rows: dict[str, np.ndarray]) -> None:
    """Text lengths (characters) per split of the rows in `rows` (split -> mask of its kept rows)."""
    chars = pc.fill_null(pc.utf8_length(text), 0).to_numpy(zero_copy_only=False)
    chars = chars.astype(np.int64)
    bins = length_bins(chars)
    for s, at in rows.items():
        sp = part.splits[s]
        sp.length_hist = np.bincount(bins[at]).astype(np.int64)
        sp.length_sum, sp.length_max = int(chars[at].sum()), int(chars[at].max())


def split_codes(split: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Each row's index in SPLITS (int64), -1 for a null or another value. A block of one split (the usual:
    a shard of a split folder) is one comparison, not a hash lookup per row."""
    if isinstance(split, pa.ChunkedArray):
        split = split.combine_chunks() if split.num_chunks else pa.array([], pa.string())
    if len(split) and not split.null_count and pc.all(pc.equal(split, split[0])).as_py():
        first = split[0].as_py()
        return np.full(len(split), SPLITS.index(first) if first in SPLITS else -1, np.int64)
    codes = pc.fill_null(pc.index_in(split, value_set=_SPLIT_VALUES), -1)
    return codes.to_numpy(zero_copy_only=False).astype(np.int64)  # a writable copy


def _rows_partial(part: Partial, codes: np.ndarray, lengths: np.ndarray, text: pa.Array | None) -> None:
    """Documents, labels per document and text lengths per split of the rows with a split code >= 0."""
    kept = codes >= 0
    docs = np.bincount(codes[kept], minlength=len(SPLITS))
    cardinality = np.bincount(codes[kept], weights=lengths[kept], minlength=len(SPLITS))
    rows = {}  # split -> mask of its kept rows, for the splits that have any
    for k, s in enumerate(SPLITS):
        part.splits[s].docs, part.splits[s].cardinality_sum = int(docs[k]), int(cardinality[k])
        if docs[k]:
            rows[s] = codes == k  # k >= 0: kept rows only
            part.splits[s].cardinality_hist = np.bincount(lengths[rows[s]]).astype(np.int64)
    if text is not None:
        _lengths_partial(part, text, rows)


def _blob(part: Partial) -> pa.Table:
    return pa.table({"partial": pa.array([pickle.dumps(part)], pa.binary())})


def coded_partial(
    codes: np.ndarray,
    lengths: np.ndarray,
    label_codes: np.ndarray,
    dictionary: pa.Array,
    text: pa.Array | None,
    issue_rows: pa.Table | None,
) -> pa.Table:
    """`block_partial`'s one-row table from a block's parts: each row's split code (-1: not counted), its
    number of labels, every label value's code in `dictionary` (row after row), the text, and the rows with
    an issue alone (`_issue`, `split`, `id`; None when there are none). Label counts are one bincount."""
    part = Partial()
    if issue_rows is not None:
        _issue_partial(part, issue_rows)
    _rows_partial(part, codes, lengths, text)
    d = len(dictionary)
    if len(codes) and codes.min() == codes.max() >= 0:  # every row kept, one split
        n = np.bincount(label_codes, minlength=d)
        split = np.full(d, codes[0])
    else:
        values = np.repeat(codes, lengths)
        at = values >= 0
        n = np.bincount(values[at] * d + label_codes[at], minlength=len(SPLITS) * d)
        split = np.repeat(np.arange(len(SPLITS)), d)
    nz = np.flatnonzero(n)
    part.counts = pa.table(
        {
            "split": pa.array(split[nz].astype(np.int8)),
            "label": dictionary.take(pa.array(nz % d if d else nz)),
            "count_all": pa.array(n[nz].astype(np.int64)),
        }
    )
    return _blob(part)


def block_partial(table: pa.Table) -> pa.Table:
    """Ray Data map_batches function (whole block, pyarrow): one row holding this block's pickled Partial.
    Counts are Arrow group-bys and numpy bincounts; no Python per row or per label."""
    part = Partial()
    _issue_partial(part, table)
    codes = split_codes(table.column("split"))
    codes[~pc.fill_null(table.column("_keep"), False).to_numpy(zero_copy_only=False)] = -1
    flat, lengths = flat_lists(table.column("labels"))
    _rows_partial(part, codes, lengths, table.column("text") if "text" in table.column_names else None)
    if len(codes) and codes.min() == codes.max() >= 0:  # every row kept, one split: a shard of a split folder
        counts = pa.table({"label": flat}).group_by("label", use_threads=False).aggregate([([], "count_all")])
        split = pa.array(np.full(counts.num_rows, codes[0], np.int8))
        part.counts = pa.table(
            {"split": split, "label": counts.column("label"), "count_all": counts.column(1)}
        )
    else:
        value_codes = np.repeat(codes, lengths)
        at = pa.array(value_codes >= 0)
        pairs = pa.table(
            {"split": pa.array(value_codes.astype(np.int8)).filter(at), "label": flat.filter(at)}
        )
        part.counts = pairs.group_by(["split", "label"], use_threads=False).aggregate([([], "count_all")])
    return _blob(part)


def combine(partials: list[bytes]) -> Partial:
    """The blocks' partials merged once: label counts by one Arrow group-by over all blocks' counts."""
    total = Partial()
    tables = []
    for blob in partials:
        part = pickle.loads(blob)
        if part.counts is not None and part.counts.num_rows:
            tables.append(part.counts)
        total.merge(part)
    if tables:
        counts = pa.concat_tables(tables).group_by(["split", "label"]).aggregate([("count_all", "sum")])
        columns = [counts.column(c).to_pylist() for c in ("split", "label", "count_all_sum")]
        for k, label, n in zip(*columns, strict=True):
            if label is not None:
                total.splits[SPLITS[k]].label_counts[label] = int(n)
    return total


def pair_candidates(label_counts: dict[str, int], limit: int) -> list[str]:
    """The `limit` most frequent labels (ties by name): the labels whose pairs `block_pairs` counts."""
    return sorted(label_counts, key=lambda lab: (-label_counts[lab], lab))[:limit]


def flat_lists(labels: pa.ChunkedArray | pa.Array) -> tuple[pa.Array, np.ndarray]:
    """(every list's values concatenated, each row's length): a null list counts as empty.

    (Not `pc.list_parent_indices`: it also counts the values a null list happens to span, which
    `pc.list_flatten` leaves out.)
    """
    if isinstance(labels, pa.ChunkedArray):
        labels = labels.combine_chunks() if labels.num_chunks else pa.array([], labels.type)
    lengths = pc.fill_null(pc.list_value_length(labels), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    return pc.list_flatten(labels), lengths


def candidate_matrix(labels: pa.ChunkedArray | pa.Array, candidates: list[str]) -> sp.csr_matrix:
    """rows x len(candidates) 0/1 matrix of the rows' labels that are candidates (others are left out)."""
    return csr_from_arrow(labels, candidates, ignore_unknown=True)


def pair_counts(y: sp.csr_matrix) -> sp.coo_matrix:
    """Upper triangle (i < j) of Y^T Y: documents holding both labels i and j."""
    y = y.astype(np.int32)
    return sp.triu(y.T @ y, k=1, format="coo")


def block_pairs(table: pa.Table, candidates: list[str]) -> pa.Table:
    """Ray Data map_batches function (whole block, pyarrow): this block's train pair counts among the
    candidates as one row (pickled row, column, count arrays of the upper triangle), and its rows."""
    labels = table.column("labels").filter(split_mask(table, "train"))
    if len(labels) == 0 or len(candidates) < 2:
        blob = (np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.int32))
    else:
        c = pair_counts(candidate_matrix(labels, candidates))
        idx = np.uint16 if len(candidates) <= 1 << 16 else np.int32
        blob = (c.row.astype(idx), c.col.astype(idx), c.data.astype(np.int32))
    return pa.table({"pairs": pa.array([pickle.dumps(blob)], pa.binary()), "rows": [table.num_rows]})


def combine_pairs(blobs: list[bytes], num_candidates: int) -> np.ndarray:
    """Sum the blocks' pair counts into a dense num_candidates x num_candidates (upper triangle) array."""
    total = np.zeros((num_candidates, num_candidates), dtype=np.int64)
    for blob in blobs:
        rows, cols, counts = pickle.loads(blob)
        np.add.at(total, (rows.astype(np.int64), cols.astype(np.int64)), counts.astype(np.int64))
    return total


def top_pairs(
    counts: np.ndarray, candidates: list[str], label_counts: dict[str, int], k: int
) -> tuple[list[dict], bool]:
    """(the k most frequent pairs as [{labels: [a, b] (sorted), count}], whether they are provably exact).

    Ties are broken by label names, so the list is deterministic. Exact: the k-th count (0 when fewer than k
    pairs co-occur) is at least the count of every label outside the candidates (ties at that count may
    order differently than a full count would; the counts themselves are the true top k).
    """
    if k <= 0:
        return [], True
    names = np.asarray(candidates, dtype=object)
    rank = np.empty(len(candidates), dtype=np.int64)
    rank[np.argsort(names, kind="stable")] = np.arange(len(candidates))
    i, j = np.nonzero(np.triu(counts, k=1))
    n = counts[i, j]
    # Each pair as (name-smaller, name-larger), then sort by count desc, names asc.
    a = np.where(rank[i] < rank[j], i, j)
    b = np.where(rank[i] < rank[j], j, i)
    order = np.lexsort((rank[b], rank[a], -n))[:k]
    out = [{"labels": [names[a[o]], names[b[o]]], "count": int(n[o])} for o in order]
    kth = out[k - 1]["count"] if len(out) >= k else 0
    chosen = set(candidates)
    outside = max((c for lab, c in label_counts.items() if lab not in chosen), default=0)
    return out, bool(kth >= outside)


def _length_summary(sp: SplitPartial) -> dict:
    """Text length in characters: mean, max, the upper bounds of the bins holding the 50th, 90th and 99th
    percentiles, and the histogram (bins of `length_bins`, empty ones left out)."""
    hist = sp.length_hist
    n = int(hist.sum())
    bounds = [(1 << k) - 1 for k in range(len(hist))]  # bin 0 holds 0 = 2^0 - 1
    cum = np.cumsum(hist)

    def at_most(q: float) -> int | None:
        return int(bounds[int(np.searchsorted(cum, q * n))]) if n else None

    return {
        "mean": sp.length_sum / n if n else 0.0,
        "max": sp.length_max,
        **{f"p{round(q * 100)}_at_most": at_most(q) for q in (0.5, 0.9, 0.99)},
        "histogram": [
            {"at_most": int(b), "documents": int(c)} for b, c in zip(bounds, hist, strict=True) if c
        ],
    }


def label_stats(
    total: Partial,
    head_min: int,
    tail_max: int,
    pairs: list[dict] | None = None,
    pairs_exact: bool = True,
) -> dict:
    """The `label_stats.json` document (schema in README) from the combined partial and the top pairs.

    The vocabulary is the train labels; labels found only in validation / test (kept by prepare's
    `zero-shot` policy) are listed apart under `zero_shot_labels` and assigned the zero-shot group, so the
    vocabulary's counts, groups and sizes are the same with or without them.
    """
    train = total.splits["train"]
    vocab = sorted(train.label_counts)
    counts = np.array([train.label_counts[lab] for lab in vocab], dtype=np.int64)
    groups = assign_groups(counts, head_min, tail_max)

    def by_split(lab: str) -> dict[str, int]:
        return {s: int(total.splits[s].label_counts.get(lab, 0)) for s in SPLITS}

    per_label = {lab: by_split(lab) for lab in vocab}
    zero_shot = sorted(set().union(*(total.splits[s].label_counts for s in SPLITS)) - set(vocab))
    docs = {s: total.splits[s].docs for s in SPLITS}
    cardinality = {s: (total.splits[s].cardinality_sum / docs[s] if docs[s] else 0.0) for s in SPLITS}
    return {
        "schema_version": 1,
        "labels": vocab,
        "num_labels": len(vocab),
        "documents": docs,
        "label_counts": per_label,
        "cardinality": cardinality,
        "density": {s: (c / len(vocab) if vocab else 0.0) for s, c in cardinality.items()},
        "documents_by_label_count": {s: total.splits[s].cardinality_hist.tolist() for s in SPLITS},
        "text_length": {s: _length_summary(total.splits[s]) for s in SPLITS},
        "groups": {
            "head_min": head_min,
            "tail_max": tail_max,
            "assignment": {
                **{lab: str(g) for lab, g in zip(vocab, groups, strict=True)},
                **dict.fromkeys(zero_shot, ZERO_SHOT),
            },
            "sizes": {g: int((groups == g).sum()) for g in GROUPS},
        },
        "zero_shot_labels": {lab: by_split(lab) for lab in zero_shot},
        "top_pairs": list(pairs or []),
        "top_pairs_exact": bool(pairs_exact),
        "row_issues": {
            issue: {
                "by_split": dict(c),
                "total": int(sum(c.values())),
                "examples": total.examples.get(issue, []),
            }
            for issue, c in sorted(total.issues.items())
        },
    }
