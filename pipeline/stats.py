"""Label statistics as a distributed aggregation: a partial per block, combined on the driver.

Only the partials (one small record per block) travel to the driver, never the rows.
"""

from __future__ import annotations

import itertools
import pickle
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from pipeline.dataset import SPLITS
from pipeline.metrics import assign_groups

MAX_EXAMPLES = 5


@dataclass
class SplitPartial:
    docs: int = 0
    label_counts: Counter = field(default_factory=Counter)
    cardinality_sum: int = 0
    pairs: Counter = field(default_factory=Counter)

    def merge(self, other: SplitPartial) -> None:
        self.docs += other.docs
        self.label_counts.update(other.label_counts)
        self.cardinality_sum += other.cardinality_sum
        self.pairs.update(other.pairs)


@dataclass
class Partial:
    splits: dict[str, SplitPartial] = field(default_factory=lambda: {s: SplitPartial() for s in SPLITS})
    #: issue -> split -> count, for rows dropped or kept as all-negative.
    issues: dict[str, Counter] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def merge(self, other: Partial) -> None:
        for s in SPLITS:
            self.splits[s].merge(other.splits[s])
        for k, c in other.issues.items():
            self.issues.setdefault(k, Counter()).update(c)
        for k, ex in other.examples.items():
            mine = self.examples.setdefault(k, [])
            mine.extend(ex[: MAX_EXAMPLES - len(mine)])


def block_partial(table: pa.Table, pair_max_labels: int = 64) -> pa.Table:
    """Ray Data map_batches function (whole block, pyarrow): one row holding this block's pickled Partial.

    Pairs are counted only for rows with at most `pair_max_labels` labels: pair counting is quadratic in the
    row's label count.
    """
    part = Partial()
    splits = table.column("split").to_pylist()
    labels = table.column("labels").to_pylist()
    issues = table.column("_issue").to_pylist()
    ids = table.column("id").to_pylist()
    keep = table.column("_keep").to_pylist()
    for split, labs, issue, rid, kept in zip(splits, labels, issues, ids, keep, strict=True):
        if issue:
            part.issues.setdefault(issue, Counter())[split or "?"] += 1
            ex = part.examples.setdefault(issue, [])
            if len(ex) < MAX_EXAMPLES:
                ex.append(rid)
        if not kept or split not in part.splits:
            continue
        sp = part.splits[split]
        sp.docs += 1
        sp.cardinality_sum += len(labs)
        sp.label_counts.update(labs)
        if split == "train" and 1 < len(labs) <= pair_max_labels:
            sp.pairs.update(itertools.combinations(sorted(labs), 2))
    return pa.table({"partial": pa.array([pickle.dumps(part)], pa.binary())})


def combine(partials: list[bytes]) -> Partial:
    total = Partial()
    for blob in partials:
        total.merge(pickle.loads(blob))
    return total


def label_stats(total: Partial, head_min: int, tail_max: int, top_pairs: int) -> dict:
    """The `label_stats.json` document (schema in README) from the combined partial."""
    train = total.splits["train"]
    vocab = sorted(train.label_counts)
    counts = np.array([train.label_counts[lab] for lab in vocab], dtype=np.int64)
    groups = assign_groups(counts, head_min, tail_max)
    per_label = {lab: {s: int(total.splits[s].label_counts.get(lab, 0)) for s in SPLITS} for lab in vocab}
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
        "groups": {
            "head_min": head_min,
            "tail_max": tail_max,
            "assignment": {lab: str(g) for lab, g in zip(vocab, groups, strict=True)},
            "sizes": {g: int((groups == g).sum()) for g in ("head", "medium", "tail")},
        },
        "top_pairs": [
            {"labels": list(pair), "count": int(n)} for pair, n in train.pairs.most_common(top_pairs)
        ],
        "row_issues": {
            issue: {
                "by_split": dict(c),
                "total": int(sum(c.values())),
                "examples": total.examples.get(issue, []),
            }
            for issue, c in sorted(total.issues.items())
        },
    }
