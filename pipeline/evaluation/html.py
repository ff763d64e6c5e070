"""The self-contained ``report/report.html``: inline CSS, plots as data URIs, no external resource.

``report.html`` stays readable at thousands of labels: the per-label table is complete only up to
``MAX_HTML_LABEL_ROWS`` labels (beyond, the most frequent ones, plus tables of the best and worst labels by F1
and by over-prediction), and the plots (:mod:`plots`) aggregate (binned by training frequency; per-label
scatters switch to small translucent markers).
"""

from __future__ import annotations

import base64
import json
from html import escape
from typing import Any

from pipeline.data.groups import GROUPS, ZERO_SHOT
from pipeline.evaluation.document import (
    HEADLINE,
    LOWER_IS_BETTER,
    NOT_A_SCORE,
    WITH_ZERO_SHOT,
    fmt,
    fmt_delta,
    has_zero_shot_labels,
    run_name,
    thresholds_by_label,
)
from pipeline.evaluation.plots import PLOTS

#: The HTML holds the per-label table in full up to this many labels (beyond it: the most frequent ones, plus
#: the best / worst tables below); every label is always in ``per_label.csv``.
MAX_HTML_LABEL_ROWS = 200
MAX_HTML_LIST = 300
#: Rows of each best / worst label table of the HTML (F1, over- and under-prediction).
HTML_EXTREMES = 20

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
    return escape(str(x), quote=True)


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


def _headline_html(doc: dict[str, Any], compare: tuple[str, dict[str, Any], Any] | None, this: str) -> str:
    ov = doc.get("overall", {})
    others = (compare[1],) if compare else ()
    shown = HEADLINE + (WITH_ZERO_SHOT if has_zero_shot_labels(doc, *others) else ())
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
    if z.get("scored_from_names"):
        return (
            f"<p>The {_e(ZERO_SHOT)} group holds the {_e(fmt(z.get('n_labels')))} test labels that never "
            f"occur in train, with {_e(fmt(z.get('n_positives')))} positives (test document x label pairs). "
            f"{_e(fmt(z.get('scored_labels')))} named labels outside the vocabulary were scored from their "
            f"names (evaluate.label_names): recall {_e(fmt(z.get('micro_recall')))} with "
            f"{_e(fmt(z.get('predicted_pairs')))} predicted pairs, P@5 among them "
            f"{_e(fmt(z.get('p_at_5')))}, recall@5 among all labels {_e(fmt(z.get('recall_at_5')))}. With "
            f"them counted, micro F1 goes from {_e(fmt(ov.get('micro_f1')))} to "
            f"{_e(fmt(ov.get('micro_f1_with_zero_shot')))}; no other figure of this report counts them.</p>"
        )
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
    groups = GROUPS + ((ZERO_SHOT,) if has_zero_shot_labels(doc, *others) else ())
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
    thr = thresholds_by_label(thresholds)
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
