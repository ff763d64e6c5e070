"""The report's documents: ``report/metrics.json``, ``report/per_label.csv`` and the summary table.

A headline micro-F1 hides a long-tailed model that never predicts its tail, so every artefact here puts the
per-group figures, the labels never predicted correctly and the per-label over-prediction next to it. The
module only builds documents and text (plots in :mod:`plots`, the page in :mod:`html`); the caller writes
them atomically to storage.

``report/metrics.json`` schema (``schema_version`` 1)
-----------------------------------------------------
- ``schema_version``: 1.
- ``provenance``: the caller's free-form dict (run name under ``run``, ``run_uri``, ``created``,
  ``data_source``, ``model``, ``config``, ...), made JSON-safe; values of secret-looking keys (``secret_key``,
  ``access_key``, ``password``, ``token``, ...) are replaced by ``"<redacted>"``.
- ``data``: from ``label_stats.json`` of the prepare stage: ``documents`` {train, validation, test},
  ``num_labels``, ``cardinality`` {split: mean labels per document}, ``groups`` {head_min, tail_max, sizes
  {head, medium, tail}}, ``row_issues`` {issue: {by_split, total, examples}}, ``split`` (method, ratios, seed;
  null if absent).
- ``thresholds``: summary of ``thresholds.json``: ``strategy``, ``decision_rule``, ``parameters``,
  ``global_threshold``, ``sources`` {per_label | shrunk | prior | blend | global: number of labels},
  ``fallback_labels`` and ``reverted_labels`` (counts; the names are in ``thresholds.json``),
  ``floor_action``, ``validation`` {chosen | global | fixed_0.5: {micro_f1, macro_f1}} (validation F1 of the
  applied thresholds, of the single global threshold and of 0.5).
- ``overall``: test metrics of :func:`metrics.evaluate` (``micro_f1``, ``macro_f1``, ``macro_ap``,
  ``p_at_1``, ``labels_with_f1_gt_0``, ``n_positives``, ... ; null where undefined), over the training
  vocabulary, plus ``micro_f1_with_zero_shot`` and ``micro_recall_with_zero_shot``: the same micro figures
  with the zero-shot positives counted as missed.
- ``groups``: the same metrics per frequency group, ``{"head": {...}, "medium": {...}, "tail": {...}}``, and
  ``"zero-shot"``: the test labels never seen in train (``n_labels``, ``n_positives``: document x label
  pairs, ``true_positives``, ``micro_recall``, ``macro_recall``, ``micro_f1``, ``macro_f1``; recall and F1
  null when the group is empty).
- ``labels_with_f1_gt_0``: {overall, head, medium, tail}.
- ``never_correct``: labels with test positives and no true positive, most frequent in training first.
- ``labels_without_positives``: labels absent from the test set (their F1 is 0 by convention).
- ``conventions``: how every figure is defined (macro averages over the whole training vocabulary,
  zero_division=0, the decision rule, ...).
- ``extra``: caller-supplied additions (for example test metrics at a fixed 0.5 cut-off), ``{}`` if none.

Per-label rows are not in the JSON (thousands of labels would bury the headline); they are in
``per_label.csv``: label, group, train_count, support, true_count, predicted_count, true_positives,
over_prediction, precision, recall, f1, ap, threshold, threshold_source, validation_support, validation_f1,
in vocabulary (model column) order, then the zero-shot labels (group ``zero-shot``, most test positives
first, no threshold); empty cells where a value is undefined.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
from collections import Counter
from pathlib import PurePath
from typing import Any

import numpy as np

from pipeline.data.groups import GROUPS, ZERO_SHOT

SCHEMA_VERSION = 1

#: (key in ``overall``/``groups``, display name), in table order.
HEADLINE: tuple[tuple[str, str], ...] = (
    ("micro_f1", "Micro F1"),
    ("macro_f1", "Macro F1"),
    ("weighted_f1", "Weighted F1"),
    ("samples_f1", "Samples F1"),
    ("micro_precision", "Micro precision"),
    ("micro_recall", "Micro recall"),
    ("macro_precision", "Macro precision"),
    ("macro_recall", "Macro recall"),
    ("macro_ap", "Macro AP (mAP)"),
    ("micro_auprc", "Micro AUPRC"),
    ("p_at_1", "P@1"),
    ("p_at_3", "P@3"),
    ("hamming_loss", "Hamming loss"),
    ("subset_accuracy", "Subset accuracy"),
    ("labels_with_f1_gt_0", "Labels with F1 > 0"),
    ("n_labels", "Labels"),
    ("n_docs", "Documents"),
    ("n_positives", "Positives (document x label)"),
)
#: Overall figures that count the zero-shot group's positives as missed; shown when there are any.
WITH_ZERO_SHOT: tuple[tuple[str, str], ...] = (
    ("micro_f1_with_zero_shot", "Micro F1 with zero-shot labels"),
    ("micro_recall_with_zero_shot", "Micro recall with zero-shot labels"),
)
LOWER_IS_BETTER = frozenset({"hamming_loss"})
#: Counts describing the data, not the model: a delta there means the runs are not comparable, not better.
NOT_A_SCORE = frozenset({"n_labels", "n_docs", "n_positives"})
_SECRET_HINTS = (
    "secret",
    "password",
    "passwd",
    "token",
    "access_key",
    "credential",
    "api_key",
    "private_key",
)
CSV_COLUMNS: tuple[str, ...] = (
    "label",
    "group",
    "train_count",
    "support",
    "true_count",
    "predicted_count",
    "true_positives",
    "over_prediction",
    "precision",
    "recall",
    "f1",
    "ap",
    "threshold",
    "threshold_source",
    "validation_support",
    "validation_f1",
)


# ------------------------------------------------------------------------------------------ metrics.json


def _jsonable(x: Any, redact: bool = False) -> Any:
    """Strict-JSON copy: numpy scalars to python, NaN/inf to None, paths/dates/other objects to strings.

    Provenance is free-form (a config dump may hold paths, dates or storage credentials); the document must
    still serialise with ``allow_nan=False`` and never carry a secret.
    """
    if isinstance(x, dict):
        out = {}
        for k, v in x.items():
            key = str(k)
            secret = redact and v is not None and any(h in key.lower() for h in _SECRET_HINTS)
            out[key] = "<redacted>" if secret else _jsonable(v, redact)
        return out
    if isinstance(x, list | tuple | set | frozenset):
        return [_jsonable(v, redact) for v in x]
    if isinstance(x, np.ndarray):
        return [_jsonable(v, redact) for v in x.tolist()]
    if isinstance(x, np.generic):
        x = x.item()
    if x is None or isinstance(x, bool | int | str):
        return x
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dt.datetime | dt.date):
        return x.isoformat()
    if isinstance(x, PurePath):
        return str(x)
    return str(x)


def _thresholds_summary(thresholds: dict[str, Any]) -> dict[str, Any]:
    """The few threshold facts a reader of the headline needs; per-label values go to the CSV."""
    rows = thresholds.get("labels", [])
    return {
        "strategy": thresholds.get("strategy"),
        "decision_rule": thresholds.get("decision_rule"),
        "parameters": thresholds.get("parameters", {}),
        "global_threshold": thresholds.get("global_threshold"),
        "sources": dict(sorted(Counter(r.get("source", "unknown") for r in rows).items())),
        "fallback_labels": len(thresholds.get("fallback_labels", [])),
        "reverted_labels": len(thresholds.get("reverted_labels", [])),
        "floor_action": thresholds.get("floor_action"),
        "validation": thresholds.get("validation", {}),
    }


def _data_summary(label_stats: dict[str, Any]) -> dict[str, Any]:
    groups = label_stats.get("groups", {})
    return {
        "documents": label_stats.get("documents", {}),
        "num_labels": label_stats.get("num_labels", len(label_stats.get("labels", []))),
        "cardinality": label_stats.get("cardinality", {}),
        "groups": {
            "head_min": groups.get("head_min"),
            "tail_max": groups.get("tail_max"),
            "sizes": groups.get("sizes", {}),
        },
        "row_issues": label_stats.get("row_issues", {}),
        "split": label_stats.get("split"),
    }


def build_metrics_document(
    ev: dict[str, Any],
    thresholds: dict[str, Any],
    label_stats: dict[str, Any],
    provenance: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``report/metrics.json`` document (schema in the module docstring); strict-JSON-safe, no I/O.

    ``ev`` is :func:`metrics.evaluate`'s output, ``thresholds`` ``ThresholdResult.to_json_dict()``,
    ``label_stats`` the prepare stage's ``label_stats.json``.
    """
    doc = {
        "schema_version": SCHEMA_VERSION,
        "provenance": _jsonable(provenance, redact=True),
        "data": _data_summary(label_stats),
        "thresholds": _thresholds_summary(thresholds),
        "overall": ev["overall"],
        "groups": ev["groups"],
        "labels_with_f1_gt_0": ev["labels_with_f1_gt_0"],
        "never_correct": ev["never_correct"],
        "labels_without_positives": ev["labels_without_positives"],
        "conventions": ev["conventions"],
        "extra": _jsonable(extra or {}, redact=True),
    }
    return _jsonable(doc)


def run_name(doc: dict[str, Any], default: str = "this run") -> str:
    """The run's name from its provenance (``run``, ``run_name`` or ``name``)."""
    prov = doc.get("provenance") or {}
    for key in ("run", "run_name", "name"):
        if isinstance(prov.get(key), str) and prov[key]:
            return prov[key]
    return default


def has_zero_shot_labels(*docs: dict[str, Any]) -> bool:
    """Whether any of the metrics documents has zero-shot labels (older documents have no such group)."""
    return any(((d.get("groups") or {}).get(ZERO_SHOT) or {}).get("n_labels") for d in docs)


# ------------------------------------------------------------------------------------------ per_label.csv


def thresholds_by_label(thresholds: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """label -> its row of the ``thresholds.json`` dict (none for ``None``)."""
    return {r["label"]: r for r in (thresholds or {}).get("labels", [])}


def per_label_csv(ev: dict[str, Any], thresholds: dict[str, Any] | None) -> str:
    """``report/per_label.csv`` text: one row per label of ``ev``, joined with its threshold by label name.

    Returned as text so the caller can write it atomically; undefined values (AP or over-prediction of a
    label without test positives, a label missing from ``thresholds``) are empty cells.
    """
    thr = thresholds_by_label(thresholds)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in [*ev["per_label"], *ev.get("zero_shot_labels", [])]:
        t = thr.get(row["label"], {})
        merged = {
            **row,
            "threshold": t.get("threshold"),
            "threshold_source": t.get("source"),
            "validation_support": t.get("support"),
            "validation_f1": t.get("f1"),
        }
        writer.writerow(["" if merged.get(c) is None else merged[c] for c in CSV_COLUMNS])
    return buf.getvalue()


# ------------------------------------------------------------------------------------------ summary table


def fmt(value: Any, digits: int = 4) -> str:
    """One number as the report shows it: floats to ``digits`` decimals, ints as is, None as ``n/a``."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else "n/a"
    return str(value)


def fmt_delta(this: Any, other: Any, digits: int = 4) -> str:
    """``this - other`` with its sign; ``n/a`` when either side is undefined."""
    numeric = (int, float)
    if not isinstance(this, numeric) or not isinstance(other, numeric) or isinstance(this, bool):
        return "n/a"
    if isinstance(this, int) and isinstance(other, int):
        return f"{this - other:+d}"
    d = float(this) - float(other)
    return f"{d:+.{digits}f}" if math.isfinite(d) else "n/a"


def summary_table(doc: dict[str, Any], compare_doc: dict[str, Any] | None = None) -> str:
    """Fixed-width summary printed at the end of the evaluate job, optionally beside another run."""
    rows: list[tuple[str, Any, Any]] = []

    def metric(d: dict[str, Any] | None, *path: str) -> Any:
        cur: Any = d
        for p in path:
            cur = cur.get(p) if isinstance(cur, dict) else None
        return cur

    for key, name in (("micro_f1", "micro F1"), ("macro_f1", "macro F1"), ("macro_ap", "macro AP")):
        rows.append((name, metric(doc, "overall", key), metric(compare_doc, "overall", key)))
    rows.append(("P@1", metric(doc, "overall", "p_at_1"), metric(compare_doc, "overall", "p_at_1")))
    rows.append(
        (
            "labels F1>0",
            metric(doc, "overall", "labels_with_f1_gt_0"),
            metric(compare_doc, "overall", "labels_with_f1_gt_0"),
        )
    )
    for g in GROUPS:
        n = metric(doc, "groups", g, "n_labels")
        rows.append(
            (
                f"{g} macro F1 ({n})",
                metric(doc, "groups", g, "macro_f1"),
                metric(compare_doc, "groups", g, "macro_f1"),
            )
        )
    if has_zero_shot_labels(doc, *([compare_doc] if compare_doc else [])):
        n = metric(doc, "groups", ZERO_SHOT, "n_labels")
        rows.append(
            (
                f"micro F1 with {ZERO_SHOT} ({n})",
                metric(doc, "overall", "micro_f1_with_zero_shot"),
                metric(compare_doc, "overall", "micro_f1_with_zero_shot"),
            )
        )

    n_labels = metric(doc, "overall", "n_labels")
    this_name = run_name(doc)
    header = ["metric", this_name]
    table = []
    for name, a, b in rows:
        cell_a = f"{fmt(a)}/{n_labels}" if name == "labels F1>0" and n_labels is not None else fmt(a)
        if compare_doc is None:
            table.append([name, cell_a])
        else:
            cell_b = (
                f"{fmt(b)}/{metric(compare_doc, 'overall', 'n_labels')}" if name == "labels F1>0" else fmt(b)
            )
            table.append([name, cell_a, cell_b, fmt_delta(a, b)])
    if compare_doc is not None:
        header += [run_name(compare_doc, "other run"), "delta"]
    widths = [max(len(r[i]) for r in [header, *table]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    rule = "-" * len(line(header))
    return "\n".join([line(header), rule, *(line(r) for r in table)])
