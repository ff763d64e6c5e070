"""The evaluation report: ``report/metrics.json``, ``report/per_label.csv``, plots and a self-contained HTML.

A headline micro-F1 hides a long-tailed model that never predicts its tail, so every artefact here puts the
per-group figures, the labels never predicted correctly and the per-label over-prediction next to it. The
module only builds documents, text and PNG bytes; the caller writes them atomically to storage.

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
  ``global_threshold``, ``sources`` {per_label | shrunk | global: number of labels}, ``fallback_labels`` and
  ``reverted_labels`` (counts; the names are in ``thresholds.json``), ``floor_action``, ``validation``
  {chosen | global | fixed_0.5: {micro_f1, macro_f1}} (validation F1 of the applied thresholds, of the single
  global threshold and of 0.5).
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

``report.html`` stays readable at thousands of labels: the per-label table is complete only up to
``MAX_HTML_LABEL_ROWS`` labels (beyond, the most frequent ones, plus tables of the best and worst labels by F1
and by over-prediction), and the plots aggregate (binned by training frequency; per-label scatters switch to
small translucent markers).
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import html
import io
import json
import math
from collections import Counter
from pathlib import PurePath
from typing import Any

import numpy as np

from pipeline.data.groups import DEFAULT_HEAD_MIN, DEFAULT_TAIL_MAX, GROUPS, ZERO_SHOT

SCHEMA_VERSION = 1
#: The HTML holds the per-label table in full up to this many labels (beyond it: the most frequent ones, plus
#: the best / worst tables below); every label is always in ``per_label.csv``.
MAX_HTML_LABEL_ROWS = 200
MAX_HTML_LIST = 300
#: Rows of each best / worst label table of the HTML (F1, over- and under-prediction).
HTML_EXTREMES = 20
#: Above this many labels the per-label scatter plots switch to small translucent markers.
DENSE_PLOT_LABELS = 500
#: Training-frequency bins of the binned plots (fewer when training counts tie across bin edges).
FREQUENCY_BINS = 10

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

#: Plot keys returned by :func:`render_plots` (also the PNG file stems), with their HTML captions.
PLOTS: dict[str, str] = {
    "label_frequency": "Training documents per label, most frequent first (log scale); dashed lines are the "
    "head / tail cut-offs.",
    "f1_vs_frequency": "Test F1 per label against its training frequency; crosses are labels without test "
    "positives (F1 0 by convention).",
    "group_metrics": "Micro F1, macro F1 and macro AP per frequency group.",
    "predicted_vs_true": "Predicted against true test count per label (log-log); points above the diagonal "
    "are over-predicted, at y = 0 never predicted.",
    "threshold_distribution": "Decision thresholds per label, by source (own F1-optimal threshold, shrunk, "
    "or the global fallback).",
    "f1_by_frequency_bin": "Test F1 of the labels with test positives, by training-frequency bin (labels "
    "ordered by training documents, cut into bins of about equal size): macro F1 (bars), median and "
    "interquartile range, and the share of labels with F1 > 0.",
    "counts_by_frequency_bin": "Test label assignments per training-frequency bin: true against predicted, "
    "summed over the bin's labels; the figure above each pair is predicted / true (over-prediction when "
    "above 1).",
}
GROUP_COLOURS = {"head": "#1f77b4", "medium": "#ff7f0e", "tail": "#2ca02c"}
SOURCE_COLOURS = {"per_label": "#1f77b4", "shrunk": "#9467bd", "global": "#7f7f7f"}
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


# ------------------------------------------------------------------------------------------ per_label.csv


def _thresholds_by_label(thresholds: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    return {r["label"]: r for r in (thresholds or {}).get("labels", [])}


def per_label_csv(ev: dict[str, Any], thresholds: dict[str, Any] | None) -> str:
    """``report/per_label.csv`` text: one row per label of ``ev``, joined with its threshold by label name.

    Returned as text so the caller can write it atomically; undefined values (AP or over-prediction of a
    label without test positives, a label missing from ``thresholds``) are empty cells.
    """
    thr = _thresholds_by_label(thresholds)
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


# ------------------------------------------------------------------------------------------ plots


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    # No "Software" chunk: it carries a matplotlib URL, and the report must not mention external resources.
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


def _cutoffs(label_stats: dict[str, Any]) -> tuple[int, int]:
    groups = label_stats.get("groups") or {}
    head_min = groups.get("head_min")
    tail_max = groups.get("tail_max")
    return (
        DEFAULT_HEAD_MIN if head_min is None else int(head_min),
        DEFAULT_TAIL_MAX if tail_max is None else int(tail_max),
    )


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def render_plots(
    ev: dict[str, Any], thresholds: dict[str, Any], label_stats: dict[str, Any]
) -> dict[str, bytes]:
    """PNG bytes for each plot of :data:`PLOTS`, keyed by plot name (use the key as the file stem).

    Uses matplotlib's object API on an explicit Agg canvas, never pyplot: headless without
    ``matplotlib.use("Agg")`` (which would switch the caller's process-wide backend), and no global figure
    registry to leak figures into. Log axes are symlog with a
    linear part below 1 so labels with zero counts (never predicted, absent from test) stay visible.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    def figure(width: float = 7.0, height: float = 4.2) -> tuple[Any, Any]:
        fig = Figure(figsize=(width, height), layout="constrained")
        FigureCanvasAgg(fig)
        return fig, fig.add_subplot()

    rows = ev["per_label"]
    head_min, tail_max = _cutoffs(label_stats)
    groups = np.array([r["group"] for r in rows], dtype=object)
    train = np.array([r["train_count"] for r in rows], dtype=np.float64)
    f1 = np.array([r["f1"] for r in rows], dtype=np.float64)
    true_c = np.array([r["true_count"] for r in rows], dtype=np.float64)
    pred_c = np.array([r["predicted_count"] for r in rows], dtype=np.float64)
    many = len(rows) > DENSE_PLOT_LABELS
    # Thousands of labels: small translucent, rasterised markers so the density shows, not a blot.
    dot: dict[str, Any] = {"s": 3, "alpha": 0.35, "linewidths": 0, "rasterized": True} if many else {}
    out: dict[str, bytes] = {}

    # Label frequency curve: the long tail at a glance.
    fig, ax = figure()
    counts_by_label = label_stats.get("label_counts") or {}
    if counts_by_label:
        group_of = (label_stats.get("groups") or {}).get("assignment") or {
            r["label"]: r["group"] for r in rows
        }
        freq = sorted(
            ((int(c.get("train", 0)), group_of.get(lab, "")) for lab, c in counts_by_label.items()),
            key=lambda t: -t[0],
        )
    else:
        freq = sorted(((int(r["train_count"]), r["group"]) for r in rows), key=lambda t: -t[0])
    if freq:
        y = np.array([c for c, _ in freq], dtype=np.float64)
        x = np.arange(1, y.size + 1)
        ax.plot(x, y, color="#bbbbbb", linewidth=1, zorder=1)
        for g in GROUPS:
            m = np.array([gg == g for _, gg in freq])
            if m.any():
                ax.scatter(
                    x[m],
                    y[m],
                    s=2 if many else 12,
                    color=GROUP_COLOURS[g],
                    label=f"{g} ({int(m.sum())})",
                    zorder=2,
                    rasterized=many,
                )
        ax.axhline(head_min, color=GROUP_COLOURS["head"], linestyle="--", linewidth=1)
        ax.axhline(tail_max, color=GROUP_COLOURS["tail"], linestyle="--", linewidth=1)
        ax.set_yscale("symlog", linthresh=1, linscale=0.3)
        ax.set_ylim(-0.2, max(float(y.max()), float(head_min)) * 1.6)
        ax.set_xlabel("label rank by training frequency")
        ax.set_ylabel("training documents")
        ax.legend(loc="upper right", fontsize=8, markerscale=4 if many else 1)
    else:
        _empty(ax, "no labels")
    ax.set_title(f"Label frequency (head >= {head_min}, tail <= {tail_max} training docs)")
    out["label_frequency"] = _png(fig)

    # F1 against training frequency: does the model learn the tail at all?
    fig, ax = figure()
    if rows:
        no_pos = true_c == 0
        for g in GROUPS:
            m = (groups == g) & ~no_pos
            if m.any():
                ax.scatter(
                    train[m], f1[m], **({"s": 16, "alpha": 0.8} | dot), color=GROUP_COLOURS[g], label=g
                )
        if no_pos.any():
            ax.scatter(
                train[no_pos],
                f1[no_pos],
                s=6 if many else 20,
                marker="x",
                color="#444444",
                label="no test positives",
                rasterized=many,
            )
        ax.axvline(head_min, color=GROUP_COLOURS["head"], linestyle="--", linewidth=1)
        ax.axvline(tail_max, color=GROUP_COLOURS["tail"], linestyle="--", linewidth=1)
        ax.set_xscale("symlog", linthresh=1, linscale=0.3)
        ax.set_xlim(-0.2, max(float(train.max()), float(head_min)) * 1.6)
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("training documents (log scale)")
        ax.set_ylabel("test F1")
        ax.legend(loc="lower right", fontsize=8, markerscale=4 if many else 1)
    else:
        _empty(ax, "no labels")
    ax.set_title("F1 per label against training frequency")
    out["f1_vs_frequency"] = _png(fig)

    # Metrics per group: the gap between head and tail.
    fig, ax = figure()
    metrics = (("micro_f1", "micro F1"), ("macro_f1", "macro F1"), ("macro_ap", "macro AP"))
    xg = np.arange(len(GROUPS))
    width = 0.26
    for i, (key, name) in enumerate(metrics):
        vals = [ev["groups"].get(g, {}).get(key) for g in GROUPS]
        heights = [np.nan if v is None else v for v in vals]
        bars = ax.bar(xg + (i - 1) * width, heights, width, label=name)
        ax.bar_label(bars, labels=["n/a" if v is None else f"{v:.2f}" for v in vals], fontsize=7, padding=2)
    ax.set_xticks(xg, [f"{g} ({ev['groups'].get(g, {}).get('n_labels', 0)} labels)" for g in GROUPS])
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("score")
    ax.legend(loc="upper right", fontsize=8, ncols=3)
    ax.set_title("Metrics per frequency group (test)")
    out["group_metrics"] = _png(fig)

    # Predicted vs true counts: over-prediction shows above the diagonal.
    fig, ax = figure(6.0, 5.0)
    if rows:
        for g in GROUPS:
            m = groups == g
            if m.any():
                ax.scatter(
                    true_c[m], pred_c[m], **({"s": 16, "alpha": 0.8} | dot), color=GROUP_COLOURS[g], label=g
                )
        top = max(float(true_c.max()), float(pred_c.max()), 1.0) * 1.5
        ax.plot([0, top], [0, top], color="#444444", linewidth=1, label="predicted = true")
        ax.set_xscale("symlog", linthresh=1, linscale=0.3)
        ax.set_yscale("symlog", linthresh=1, linscale=0.3)
        ax.set_xlim(-0.2, top)
        ax.set_ylim(-0.2, top)
        ax.text(0.04, 0.94, "over-predicted", transform=ax.transAxes, fontsize=8, color="#a00000")
        ax.text(0.70, 0.04, "under-predicted", transform=ax.transAxes, fontsize=8, color="#a00000")
        ax.set_xlabel("true test documents")
        ax.set_ylabel("predicted test documents")
        ax.legend(loc="lower right", fontsize=8, markerscale=4 if many else 1, bbox_to_anchor=(1.0, 0.08))
    else:
        _empty(ax, "no labels")
    ax.set_title("Predicted vs true label counts (test)")
    out["predicted_vs_true"] = _png(fig)

    # Threshold distribution, by where each threshold came from.
    fig, ax = figure()
    thr_rows = thresholds.get("labels", [])
    values = np.array([r["threshold"] for r in thr_rows], dtype=np.float64)
    if values.size:
        lo, hi = float(values.min()), float(values.max())
        if hi - lo < 1e-9:
            lo, hi = lo - 0.05, hi + 0.05
        bins = np.linspace(lo, hi, 26)
        sources = [s for s in SOURCE_COLOURS if any(r["source"] == s for r in thr_rows)]
        sources += sorted({r["source"] for r in thr_rows} - set(sources))
        data = [values[[r["source"] == s for r in thr_rows]] for s in sources]
        colours = [SOURCE_COLOURS.get(s, "#d62728") for s in sources]
        ax.hist(
            data,
            bins=bins,
            stacked=True,
            color=colours,
            label=[f"{s} ({len(d)})" for s, d in zip(sources, data, strict=True)],
        )
        gt = thresholds.get("global_threshold")
        if gt is not None:
            ax.axvline(gt, color="#000000", linestyle="--", linewidth=1, label=f"global = {gt:.3f}")
        ax.set_xlabel("threshold (predict iff score >= threshold)")
        ax.set_ylabel("labels")
        ax.legend(loc="upper right", fontsize=8)
    else:
        _empty(ax, "no thresholds")
    ax.set_title(f"Threshold distribution (strategy: {thresholds.get('strategy', 'n/a')})")
    out["threshold_distribution"] = _png(fig)

    # Binned by training frequency: readable at any label count.
    bins = frequency_bins(train.astype(np.int64))
    names = [f"{name}\n({idx.size})" for name, idx in bins]
    colours = [GROUP_COLOURS.get(_majority(groups[idx]), "#7f7f7f") for _, idx in bins]
    xb = np.arange(len(bins))

    fig, ax = figure(8.0, 4.6)
    has_pos = true_c > 0
    stats = []
    for _, idx in bins:
        v = f1[idx[has_pos[idx]]]
        stats.append(
            (float(v.mean()), *np.percentile(v, [25, 50, 75]), float((v > 0).mean()))
            if v.size
            else (np.nan,) * 5
        )
    if bins and any(np.isfinite(st[0]) for st in stats):
        mean, q25, q50, q75, share = (np.array(col, dtype=np.float64) for col in zip(*stats, strict=True))
        ax.bar(xb, mean, 0.6, color=colours, alpha=0.55, label="macro F1 (mean)")
        ok = np.isfinite(q50)
        ax.errorbar(
            xb[ok],
            q50[ok],
            yerr=[q50[ok] - q25[ok], q75[ok] - q50[ok]],
            fmt="o",
            color="#222222",
            markersize=4,
            capsize=3,
            label="median, interquartile range",
        )
        ax.plot(xb[ok], share[ok], color="#d62728", marker="s", markersize=4, label="share with F1 > 0")
        ax.set_xticks(xb, names, fontsize=7)
        ax.set_ylim(0, 1.22)
        ax.set_yticks(np.linspace(0, 1, 6))
        ax.set_xlabel("training documents per label (labels in bin)")
        ax.set_ylabel("test F1 / share")
        ax.legend(loc="upper center", fontsize=8, ncols=3)
    else:
        _empty(ax, "no labels with test positives")
    ax.set_title("Test F1 by training-frequency bin")
    out["f1_by_frequency_bin"] = _png(fig)

    fig, ax = figure(8.0, 4.6)
    if bins:
        true_sum = np.array([true_c[idx].sum() for _, idx in bins])
        pred_sum = np.array([pred_c[idx].sum() for _, idx in bins])
        ax.bar(xb - 0.2, true_sum, 0.4, color="#7f7f7f", label="true")
        ax.bar(xb + 0.2, pred_sum, 0.4, color=colours, label="predicted (coloured by group)")
        ratio = [
            f"{p / t:.2f}" if t else ("n/a" if not p else "inf")
            for t, p in zip(true_sum, pred_sum, strict=True)
        ]
        for x_, top, text in zip(xb, np.maximum(true_sum, pred_sum), ratio, strict=True):
            ax.annotate(text, (x_, top), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=7)
        both = np.concatenate([true_sum, pred_sum])
        if (both > 0).all():
            ax.set_yscale("log")
            ax.set_ylim(float(both.min()) / 2, float(both.max()) * 3)
        else:  # a zero bar (a bin never predicted) stays visible on a linear part below 1
            ax.set_yscale("symlog", linthresh=1, linscale=0.3)
            ax.set_ylim(0, max(float(both.max()), 1.0) * 3)
        ax.set_xticks(xb, names, fontsize=7)
        ax.set_xlabel("training documents per label (labels in bin)")
        ax.set_ylabel("test label assignments (log scale)")
        ax.legend(loc="upper left", fontsize=8)
    else:
        _empty(ax, "no labels")
    ax.set_title("True vs predicted test counts by training-frequency bin")
    out["counts_by_frequency_bin"] = _png(fig)
    return out


def _majority(values: np.ndarray) -> str:
    """Most common value (first in :data:`GROUPS` order on ties); ``""`` for none."""
    counts = Counter(str(v) for v in values)
    return max(GROUPS, key=lambda g: counts.get(g, 0)) if counts else ""


def frequency_bins(train_counts: Any, max_bins: int = FREQUENCY_BINS) -> list[tuple[str, np.ndarray]]:
    """Labels cut into at most ``max_bins`` bins of about equal size by training count, rarest first.

    Labels with one training count always share a bin (a bin edge falling inside a run of equal counts
    moves to the run's start), so bins can be fewer and uneven. Returns ``(name, label indices)`` per bin,
    the name being the bin's training-count range (``"3-8"``, or ``"5"`` when all are equal).
    """
    counts = np.asarray(train_counts)
    n = counts.size
    if n == 0:
        return []
    order = np.argsort(counts, kind="stable")
    ranked = counts[order]
    edges = {
        int(np.searchsorted(ranked, ranked[(i * n) // max_bins], side="left")) for i in range(1, max_bins)
    }
    bounds = sorted({0, n} | {e for e in edges if 0 < e < n})
    out = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=False):
        lo, hi = ranked[a], ranked[b - 1]
        out.append((str(lo) if lo == hi else f"{lo}-{hi}", order[a:b]))
    return out


# ------------------------------------------------------------------------------------------ text formatting


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
    if _zero_shot_labels(doc, *([compare_doc] if compare_doc else [])):
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


# ------------------------------------------------------------------------------------------ HTML

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;
color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:right;vertical-align:top}
th{background:#f3f3f3}td.l,th.l{text-align:left}
tr:nth-child(even) td{background:#fafafa}
.pos{color:#17803d}.neg{color:#b42318}.muted{color:#777}
pre{background:#f6f6f6;padding:.6em;overflow:auto;max-height:24em;font-size:.8em}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.85em;color:#555}
.labels{font-size:.85em;column-width:16em}
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _table(header: list[str], rows: list[list[str]], left: int = 1) -> str:
    """HTML table from already-escaped cells; the first ``left`` columns are left-aligned."""

    def cls(i: int) -> str:
        return ' class="l"' if i < left else ""

    head = "".join(f"<th{cls(i)}>{h}</th>" for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f"<td{cls(i)}>{c}</td>" for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _delta_cell(key: str, this: Any, other: Any) -> str:
    text = fmt_delta(this, other)
    if text == "n/a" or key in NOT_A_SCORE or text.strip("+-0.") == "":
        return _e(text)
    better = text.startswith("+") != (key in LOWER_IS_BETTER)
    return f'<span class="{"pos" if better else "neg"}">{_e(text)}</span>'


def _name_list(names: list[str], limit: int = MAX_HTML_LIST) -> str:
    if not names:
        return '<p class="muted">none</p>'
    shown = ", ".join(_e(n) for n in names[:limit])
    more = f' <span class="muted">... and {len(names) - limit} more</span>' if len(names) > limit else ""
    return f'<p class="labels">{shown}{more}</p>'


def _provenance_html(prov: dict[str, Any]) -> str:
    rows = []
    for k, v in prov.items():
        if isinstance(v, dict | list):
            cell = f"<pre>{_e(json.dumps(v, indent=2, sort_keys=True, default=str))}</pre>"
        else:
            cell = _e(fmt(v))
        rows.append([_e(k), cell])
    return _table(["field", "value"], rows, left=2) if rows else '<p class="muted">none</p>'


def _zero_shot_labels(*docs: dict[str, Any]) -> bool:
    """Whether any of the metrics documents has zero-shot labels (older documents have no such group)."""
    return any(((d.get("groups") or {}).get(ZERO_SHOT) or {}).get("n_labels") for d in docs)


def _headline_html(doc: dict[str, Any], compare: tuple[str, dict[str, Any], Any] | None, this: str) -> str:
    ov = doc.get("overall", {})
    others = (compare[1],) if compare else ()
    shown = HEADLINE + (WITH_ZERO_SHOT if _zero_shot_labels(doc, *others) else ())
    if compare is None:
        return _table(["metric", _e(this)], [[_e(name), _e(fmt(ov.get(k)))] for k, name in shown])
    other_name, other_doc = compare[0], compare[1]
    ov2 = other_doc.get("overall", {})
    rows = [
        [_e(name), _e(fmt(ov.get(k))), _e(fmt(ov2.get(k))), _delta_cell(k, ov.get(k), ov2.get(k))]
        for k, name in shown
    ]
    return _table(["metric", _e(this), _e(other_name), "delta"], rows)


def _zero_shot_html(doc: dict[str, Any]) -> str:
    """One sentence on the zero-shot group: what it is and what it costs the micro figures."""
    z = (doc.get("groups") or {}).get(ZERO_SHOT)
    if not isinstance(z, dict):
        return ""
    if not z.get("n_labels"):
        return "<p>Every test label occurs in train: there are no zero-shot labels.</p>"
    ov = doc.get("overall", {})
    return (
        f"<p>The {_e(ZERO_SHOT)} group holds the {_e(fmt(z.get('n_labels')))} test labels that never occur "
        f"in train, with {_e(fmt(z.get('n_positives')))} positives (test document x label pairs). They are "
        "outside the model's vocabulary, so the model cannot predict them (recall "
        f"{_e(fmt(z.get('micro_recall')))}), and no other figure of this report counts them. Counted as "
        f"missed, they take micro F1 from {_e(fmt(ov.get('micro_f1')))} to "
        f"{_e(fmt(ov.get('micro_f1_with_zero_shot')))} and micro recall from "
        f"{_e(fmt(ov.get('micro_recall')))} to {_e(fmt(ov.get('micro_recall_with_zero_shot')))}.</p>"
    )


def _groups_html(doc: dict[str, Any], compare: tuple[str, dict[str, Any], Any] | None, this: str) -> str:
    gs = doc.get("groups", {})
    # The zero-shot column only where some run has zero-shot labels: elsewhere it would be all n/a.
    others = (compare[1],) if compare else ()
    groups = GROUPS + ((ZERO_SHOT,) if _zero_shot_labels(doc, *others) else ())
    if compare is None:
        header = ["metric"] + [_e(g) for g in groups]
        rows = [[_e(name)] + [_e(fmt(gs.get(g, {}).get(k))) for g in groups] for k, name in HEADLINE]
        return _table(header, rows) + _zero_shot_html(doc)
    other_name, other_doc = compare[0], compare[1]
    gs2 = other_doc.get("groups", {})
    header = ["metric"]
    for g in groups:
        header += [f"{_e(g)}: {_e(this)}", f"{_e(g)}: {_e(other_name)}", f"{_e(g)}: delta"]
    rows = []
    for k, name in HEADLINE:
        row = [_e(name)]
        for g in groups:
            a, b = gs.get(g, {}).get(k), gs2.get(g, {}).get(k)
            row += [_e(fmt(a)), _e(fmt(b)), _delta_cell(k, a, b)]
        rows.append(row)
    return _table(header, rows) + _zero_shot_html(doc)


def _thresholds_html(t: dict[str, Any]) -> str:
    facts = [
        ["strategy", _e(fmt(t.get("strategy")))],
        ["decision rule", _e(fmt(t.get("decision_rule")))],
        ["global threshold", _e(fmt(t.get("global_threshold")))],
        ["labels by source", _e(", ".join(f"{k}: {v}" for k, v in t.get("sources", {}).items()) or "n/a")],
        ["low-support fallback labels", _e(fmt(t.get("fallback_labels")))],
        ["reverted by the micro-F1 guard", _e(fmt(t.get("reverted_labels")))],
        ["floor action", _e(fmt(t.get("floor_action")))],
        ["parameters", _e(", ".join(f"{k}={v}" for k, v in t.get("parameters", {}).items()) or "n/a")],
    ]
    out = _table(["", "value"], facts, left=2)
    val = t.get("validation", {})
    if val:
        rows = [[_e(k), _e(fmt(v.get("micro_f1"))), _e(fmt(v.get("macro_f1")))] for k, v in val.items()]
        out += "<p>Validation F1 of the applied thresholds, one global threshold and a fixed 0.5:</p>"
        out += _table(["thresholds", "micro F1", "macro F1"], rows)
    return out


def _data_html(d: dict[str, Any]) -> str:
    docs = d.get("documents", {})
    card = d.get("cardinality", {})
    splits = list(docs) or list(card)
    rows = [[_e(s), _e(fmt(docs.get(s))), _e(fmt(card.get(s), 3))] for s in splits]
    out = _table(["split", "documents", "labels per document"], rows)
    g = d.get("groups", {})
    sizes = g.get("sizes", {})
    out += (
        f"<p>{_e(fmt(d.get('num_labels')))} labels in the training vocabulary: "
        + ", ".join(f"{_e(k)} {_e(fmt(sizes.get(k)))}" for k in GROUPS)
        + f" (head: at least {_e(fmt(g.get('head_min')))} training documents, tail: at most "
        f"{_e(fmt(g.get('tail_max')))}).</p>"
    )
    issues = d.get("row_issues", {})
    if issues:
        rows = [
            [
                _e(name),
                _e(fmt(v.get("total"))),
                _e(", ".join(f"{s}: {n}" for s, n in (v.get("by_split") or {}).items())),
                _e(", ".join(str(x) for x in v.get("examples") or [])),
            ]
            for name, v in issues.items()
        ]
        out += "<p>Row issues found by the prepare stage:</p>"
        out += _table(["issue", "rows", "by split", "example ids"], rows, left=1)
    else:
        out += "<p>No row issues were found by the prepare stage.</p>"
    split = d.get("split")
    if split:
        out += f"<p>Split: {_e(json.dumps(split, sort_keys=True, default=str))}</p>"
    return out


def _label_table(
    rows_in: list[dict[str, Any]],
    thresholds: dict[str, Any] | None,
    compare: tuple[str, dict[str, Any], Any] | None,
) -> str:
    """HTML table of the given per-label rows of ``ev``, in the given order."""
    thr = _thresholds_by_label(thresholds)
    other: dict[str, dict[str, Any]] = {}
    if compare is not None and isinstance(compare[2], dict):
        other = {r["label"]: r for r in compare[2].get("per_label", [])}
    header = [
        "label",
        "group",
        "train",
        "test support",
        "predicted",
        "over-prediction",
        "precision",
        "recall",
        "F1",
    ]
    if other:
        header += [f"F1 {_e(compare[0])}", "F1 delta"]
    header += ["AP"]
    if thr:
        header += ["threshold", "source"]
    rows = []
    for r in rows_in:
        row = [_e(r["label"]), _e(r["group"])]
        row += [_e(fmt(r[k])) for k in ("train_count", "support", "predicted_count")]
        row += [_e(fmt(r["over_prediction"], 2))]
        row += [_e(fmt(r[k], 3)) for k in ("precision", "recall", "f1")]
        if other:
            o = other.get(r["label"], {}).get("f1")
            row += [_e(fmt(o, 3)), _delta_cell("f1", r["f1"], o)]
        row += [_e(fmt(r["ap"], 3))]
        if thr:
            t = thr.get(r["label"], {})
            row += [_e(fmt(t.get("threshold"), 3)), _e(fmt(t.get("source")))]
        rows.append(row)
    return _table(header, rows, left=2)


def _per_label_html(
    ev: dict[str, Any],
    thresholds: dict[str, Any] | None,
    compare: tuple[str, dict[str, Any], Any] | None,
    max_rows: int,
) -> str:
    rows_in = sorted(ev["per_label"], key=lambda r: -r["train_count"])  # stable: vocabulary order on ties
    note = ""
    if len(rows_in) > max_rows:
        note = (
            f'<p class="muted">The {max_rows} most frequent of {len(rows_in)} labels; every label is in '
            "per_label.csv.</p>"
        )
    return note + _label_table(rows_in[:max_rows], thresholds, compare)


def extreme_labels(ev: dict[str, Any], n: int = HTML_EXTREMES) -> dict[str, list[dict[str, Any]]]:
    """The ``n`` best and worst labels of ``ev`` by test F1 and by over-prediction (predicted / true).

    Only labels with test positives take part (F1 and the ratio are undefined or 0 by convention otherwise).
    Keys: ``highest_f1`` (ties: more test positives first), ``lowest_f1`` (ties: more training documents
    first, the most surprising failures), ``most_over_predicted`` (ties: more predictions first),
    ``most_under_predicted`` (never predicted first; ties: more test positives first).
    """
    rows = [r for r in ev["per_label"] if r["true_count"] > 0]
    return {
        "highest_f1": sorted(rows, key=lambda r: (-r["f1"], -r["true_count"]))[:n],
        "lowest_f1": sorted(rows, key=lambda r: (r["f1"], -r["train_count"]))[:n],
        "most_over_predicted": sorted(rows, key=lambda r: (-r["over_prediction"], -r["predicted_count"]))[:n],
        "most_under_predicted": sorted(rows, key=lambda r: (r["over_prediction"], -r["true_count"]))[:n],
    }


_EXTREME_TITLES = {
    "highest_f1": "Highest test F1",
    "lowest_f1": "Lowest test F1 (most training documents first among ties)",
    "most_over_predicted": "Most over-predicted (predicted / true test documents)",
    "most_under_predicted": "Most under-predicted (never predicted first)",
}


def _extremes_html(
    ev: dict[str, Any],
    thresholds: dict[str, Any] | None,
    compare: tuple[str, dict[str, Any], Any] | None,
    n: int,
) -> str:
    rows = ev["per_label"]
    with_pos = sum(1 for r in rows if r["true_count"] > 0)
    phantom = [r for r in rows if r["true_count"] == 0 and r["predicted_count"] > 0]
    parts = [
        f"<p>{len(rows)} labels, {with_pos} with test positives; the {n} best and worst of those by F1 and "
        "by over-prediction. Every label is in per_label.csv.</p>"
    ]
    if phantom:
        parts.append(
            f"<p>{len(phantom)} labels without test positives are predicted anyway "
            f"({sum(r['predicted_count'] for r in phantom)} predictions, all false).</p>"
        )
    for key, chosen in extreme_labels(ev, n).items():
        parts.append(f'<h3 id="labels-{key.replace("_", "-")}">{_e(_EXTREME_TITLES[key])}</h3>')
        parts.append(_label_table(chosen, thresholds, compare) if chosen else '<p class="muted">none</p>')
    return "\n".join(parts)


def render_html(
    doc: dict[str, Any],
    ev: dict[str, Any],
    plots: dict[str, bytes],
    compare: tuple[str, dict[str, Any], dict[str, Any]] | None = None,
    thresholds: dict[str, Any] | None = None,
    max_label_rows: int = MAX_HTML_LABEL_ROWS,
    extremes: int = HTML_EXTREMES,
) -> str:
    """Self-contained ``report/report.html``: inline CSS, plots as base64 data URIs, no external resource.

    ``compare=(other_run_name, other_doc, other_ev)`` adds this run / other run / delta columns for every
    headline metric, overall and per group; ``other_ev`` may be the other run's metrics document (its
    per-label F1 then does not appear, as the document has no per-label rows). ``thresholds`` (the
    ``thresholds.json`` dict) adds each label's threshold and its source to the per-label table. All text
    from data (label names, provenance) is HTML-escaped.

    Up to ``max_label_rows`` labels the per-label table is complete. Beyond, it keeps the ``max_label_rows``
    most frequent labels and a "Best and worst labels" section adds the ``extremes`` highest and lowest
    labels by F1 and by over-prediction (:func:`extreme_labels`); ``per_label.csv`` has every label.
    """
    this = run_name(doc)
    title = f"Evaluation report: {this}" + (f" vs {compare[0]}" if compare else "")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="muted">metrics.json schema version {_e(doc.get("schema_version"))}. Test-set figures; '
        "macro averages run over every label of the training vocabulary (zero_division=0).</p>",
        "<h2>Headline metrics (test)</h2>",
        _headline_html(doc, compare, this),
    ]
    extra = doc.get("extra") or {}
    at_half = extra.get("test_at_0.5")
    if isinstance(at_half, dict):
        parts.append(
            "<p>For reference, a single 0.5 cut-off on test gives micro F1 "
            f"{_e(fmt(at_half.get('micro_f1')))} and macro F1 {_e(fmt(at_half.get('macro_f1')))}.</p>"
        )
    parts += ["<h2>Per frequency group</h2>", _groups_html(doc, compare, this)]
    never = doc.get("never_correct", [])
    parts += [
        f"<h2>Labels never predicted correctly ({len(never)})</h2>",
        "<p>Labels with test positives and no true positive, most frequent in training first.</p>",
        _name_list(never),
    ]
    absent = doc.get("labels_without_positives", [])
    parts += [f"<h2>Labels without test positives ({len(absent)})</h2>", _name_list(absent)]
    parts.append("<h2>Plots</h2>")
    for name in [*PLOTS, *(k for k in plots if k not in PLOTS)]:
        png = plots.get(name)
        if png is None:
            continue
        b64 = base64.b64encode(png).decode("ascii")
        caption = PLOTS.get(name, name)
        parts.append(
            f'<figure id="plot-{_e(name)}"><img alt="{_e(name)}" src="data:image/png;base64,{b64}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>"
        )
    parts += ["<h2>Thresholds</h2>", _thresholds_html(doc.get("thresholds", {}))]
    parts += ["<h2>Data</h2>", _data_html(doc.get("data", {}))]
    if len(ev["per_label"]) > max_label_rows:
        parts += [
            "<h2>Best and worst labels</h2>",
            _extremes_html(ev, thresholds, compare, min(extremes, max_label_rows)),
        ]
    parts += ["<h2>Per label</h2>", _per_label_html(ev, thresholds, compare, max_label_rows)]
    conv = doc.get("conventions", {})
    if conv:
        parts += [
            "<h2>Conventions</h2>",
            _table(["", "definition"], [[_e(k), _e(v)] for k, v in conv.items()], 2),
        ]
    parts += ["<h2>Provenance</h2>", _provenance_html(doc.get("provenance", {}))]
    parts.append("</body></html>")
    return "\n".join(parts)
