"""Report artefacts: metrics.json document, per-label CSV, PNG plots, self-contained HTML, summary table."""

from __future__ import annotations

import base64
import io
import json
import re
from typing import Any

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from pipeline.data.groups import GROUPS, ZERO_SHOT
from pipeline.evaluation.document import (
    CSV_COLUMNS,
    build_metrics_document,
    fmt,
    fmt_delta,
    per_label_csv,
    summary_table,
)
from pipeline.evaluation.html import HTML_EXTREMES, MAX_HTML_LABEL_ROWS, extreme_labels, render_html
from pipeline.evaluation.metrics import evaluate
from pipeline.evaluation.plots import PLOTS, frequency_bins, render_plots
from pipeline.evaluation.thresholds import fit_thresholds

LABELS = ["earn", "acq", "a<b&c", "crude", "trade", "ship", "grain", "rare\"one'", "zinc", "tin", "gold", "x"]
TRAIN_COUNTS = np.array([500, 200, 90, 40, 35, 20, 12, 9, 8, 5, 2, 1])  # 5 head, 3 medium, 4 tail
ODD = "a<b&c"


def _data(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels with prevalence following the training counts; scores separating them noisily."""
    prev = np.clip(TRAIN_COUNTS / TRAIN_COUNTS.max() * 0.4, 0.04, None)
    y = (rng.random((n, len(LABELS))) < prev).astype(np.int64)
    y[:, -1] = 0  # one label absent from the set: labels_without_positives, AP undefined
    s = np.clip(0.25 * rng.random(y.shape) + 0.5 * y * rng.random(y.shape) + 0.1 * rng.random(y.shape), 0, 1)
    return y, s


def _stats() -> dict[str, Any]:
    groups = dict(zip(LABELS, ["head"] * 5 + ["medium"] * 3 + ["tail"] * 4, strict=True))
    return {
        "schema_version": 1,
        "labels": LABELS,
        "num_labels": len(LABELS),
        "documents": {"train": 1000, "validation": 150, "test": 200},
        "label_counts": {
            lab: {"train": int(c), "validation": 3, "test": 4}
            for lab, c in zip(LABELS, TRAIN_COUNTS, strict=True)
        },
        "cardinality": {"train": 1.3, "validation": 1.2, "test": 1.25},
        "groups": {
            "head_min": 35,
            "tail_max": 8,
            "assignment": groups,
            "sizes": {"head": 5, "medium": 3, "tail": 4},
        },
        "top_pairs": [{"labels": ["acq", "earn"], "count": 7}],
        "row_issues": {
            "empty_text": {"by_split": {"train": 2, "test": 1}, "total": 3, "examples": ["d<1>", "d2"]}
        },
        "split": {"method": "iterative", "ratios": [0.85, 0.15], "seed": 0},
    }


def _run(seed: int, cut: float | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(ev, thresholds dict) of one synthetic run; ``cut`` replaces the fitted thresholds by a fixed one."""
    rng = np.random.default_rng(seed)
    y_val, s_val = _data(rng, 150)
    thr = fit_thresholds(y_val, s_val, LABELS)
    y_test, s_test = _data(rng, 200)
    pred = thr.apply(s_test) if cut is None else (s_test >= cut).astype(np.int64)
    return evaluate(y_test, pred, s_test, LABELS, TRAIN_COUNTS), thr.to_json_dict()


@pytest.fixture(scope="module")
def run_a() -> dict[str, Any]:
    ev, thr = _run(0)
    prov = {"run": "bce-run", "created": "2025-01-01T00:00:00+00:00", "model": {"loss": "bce"}}
    doc = build_metrics_document(ev, thr, _stats(), prov, extra={"test_at_0.5": {"micro_f1": 0.5}})
    return {"ev": ev, "thr": thr, "doc": doc, "plots": render_plots(ev, thr, _stats())}


@pytest.fixture(scope="module")
def run_b() -> dict[str, Any]:
    ev, thr = _run(1, cut=0.5)
    doc = build_metrics_document(ev, thr, _stats(), {"run": "db-run"})
    return {"ev": ev, "thr": thr, "doc": doc}


def test_fixture_spans_groups_and_edge_cases(run_a: dict[str, Any]) -> None:
    ev = run_a["ev"]
    assert {r["group"] for r in ev["per_label"]} == set(GROUPS)
    assert ev["labels_without_positives"] == ["x"]


def test_metrics_document_is_strict_json_with_headline(run_a: dict[str, Any]) -> None:
    doc, ev, thr = run_a["doc"], run_a["ev"], run_a["thr"]
    back = json.loads(json.dumps(doc, allow_nan=False))
    assert back["schema_version"] == 1
    assert back["overall"] == ev["overall"]
    assert back["groups"] == ev["groups"]
    assert back["never_correct"] == ev["never_correct"]
    assert back["labels_with_f1_gt_0"] == ev["labels_with_f1_gt_0"]
    assert back["conventions"] == ev["conventions"]
    assert "per_label" not in back
    assert back["data"]["documents"] == {"train": 1000, "validation": 150, "test": 200}
    assert back["data"]["groups"]["sizes"] == {"head": 5, "medium": 3, "tail": 4}
    assert back["data"]["row_issues"]["empty_text"]["total"] == 3
    t = back["thresholds"]
    assert t["strategy"] == thr["strategy"] and t["global_threshold"] == thr["global_threshold"]
    assert t["fallback_labels"] == len(thr["fallback_labels"])
    assert sum(t["sources"].values()) == len(LABELS)
    assert t["validation"] == thr["validation"]
    assert back["extra"] == {"test_at_0.5": {"micro_f1": 0.5}}
    assert back["provenance"]["run"] == "bce-run"


def test_metrics_document_sanitises_provenance(run_a: dict[str, Any]) -> None:
    from pathlib import Path

    prov = {
        "run": "r",
        "path": Path("/tmp/x"),
        "nan": float("nan"),
        "n": np.int64(3),
        "config": {"storage": {"secret_key": "s3cr3t", "access_key": "AK", "endpoint_override": None}},
    }
    doc = build_metrics_document(run_a["ev"], run_a["thr"], _stats(), prov)
    text = json.dumps(doc, allow_nan=False)
    assert "s3cr3t" not in text and '"AK"' not in text
    p = doc["provenance"]
    assert p["path"] == "/tmp/x" and p["nan"] is None and p["n"] == 3
    assert p["config"]["storage"]["endpoint_override"] is None  # None is not a secret to hide


def test_per_label_csv(run_a: dict[str, Any]) -> None:
    ev, thr = run_a["ev"], run_a["thr"]
    df = pd.read_csv(io.StringIO(per_label_csv(ev, thr)), keep_default_na=False, na_values=[""])
    assert list(df.columns) == list(CSV_COLUMNS)
    assert df["label"].tolist() == LABELS
    np.testing.assert_allclose(df["f1"], [r["f1"] for r in ev["per_label"]], rtol=0, atol=1e-12)
    np.testing.assert_allclose(df["threshold"], [r["threshold"] for r in thr["labels"]], rtol=0, atol=1e-12)
    assert df["threshold_source"].tolist() == [r["source"] for r in thr["labels"]]
    assert df["predicted_count"].tolist() == [r["predicted_count"] for r in ev["per_label"]]
    last = df.iloc[-1]  # label "x": no test positives, AP and over-prediction undefined
    assert np.isnan(last["ap"]) and np.isnan(last["over_prediction"])


def test_plots_are_png(run_a: dict[str, Any]) -> None:
    plots = run_a["plots"]
    assert set(plots) == set(PLOTS)
    for name, png in plots.items():
        assert png.startswith(b"\x89PNG\r\n\x1a\n"), name
        assert len(png) > 5_000, name
        img = imread(io.BytesIO(png))
        assert img.shape[0] >= 300 and img.shape[1] >= 400, name
        assert img[..., :3].std() > 0.01, f"{name} is blank"
        assert b"http" not in png, name


def test_html_is_self_contained_and_complete(run_a: dict[str, Any]) -> None:
    doc, ev, plots = run_a["doc"], run_a["ev"], run_a["plots"]
    page = render_html(doc, ev, plots, thresholds=run_a["thr"])
    for name, png in plots.items():
        assert f"data:image/png;base64,{base64.b64encode(png).decode()}" in page, name
    ov = ev["overall"]
    for key in ("micro_f1", "macro_f1", "macro_ap", "p_at_1"):
        assert f"<td>{ov[key]:.4f}</td>" in page, key
    for g in GROUPS:
        assert f"<th>{g}</th>" in page
        assert f"{ev['groups'][g]['macro_f1']:.4f}" in page
    assert "a&lt;b&amp;c" in page and "a<b&c" not in page
    assert "rare&quot;one&#x27;" in page
    assert "bce-run" in page
    stripped = re.sub(r"base64,[A-Za-z0-9+/=]+", "base64,", page)
    assert "http" not in stripped.lower()
    targets = re.findall(r"""\b(?:src|href)\s*=\s*["']?([^"'\s>]*)""", stripped, flags=re.IGNORECASE)
    assert len(targets) == len(plots) and all(t == "data:image/png;base64," for t in targets), targets
    assert "url(" not in stripped and "@import" not in stripped
    for label in ev["never_correct"]:
        assert label.replace("<", "&lt;") in page


def test_html_escapes_provenance_and_limits_rows(run_a: dict[str, Any]) -> None:
    prov = {"run": "<script>alert(1)</script>", "config": {"note": "</pre><b>x</b>"}}
    doc = build_metrics_document(run_a["ev"], run_a["thr"], _stats(), prov)
    page = render_html(doc, run_a["ev"], {}, max_label_rows=3)
    assert "<script>" not in page and "<b>x</b>" not in page
    assert "&lt;script&gt;" in page
    body = page.split("<h2>Per label</h2>")[1].split("<h2>")[0]
    assert body.count("<tr>") == 1 + 3  # header + the 3 most frequent labels
    assert '<td class="l">earn</td>' in body and "per_label.csv" in body


def test_html_compare(run_a: dict[str, Any], run_b: dict[str, Any]) -> None:
    a, b = run_a["doc"], run_b["doc"]
    page = render_html(a, run_a["ev"], run_a["plots"], compare=("db-run", b, run_b["ev"]))
    assert "bce-run" in page and "db-run" in page
    assert "<th>delta</th>" in page
    d = fmt_delta(a["overall"]["micro_f1"], b["overall"]["micro_f1"])
    assert d != "n/a" and d in page
    for g in GROUPS:
        assert f"{g}: delta" in page
        assert fmt_delta(a["groups"][g]["macro_f1"], b["groups"][g]["macro_f1"]) in page
    assert "F1 db-run" in page  # per-label comparison when the other run's ev is given
    # The evaluate job passes the other run's metrics document as its ev (no per-label rows): still works.
    page2 = render_html(a, run_a["ev"], {}, compare=("db-run", b, b))
    assert d in page2 and "F1 db-run" not in page2


def test_summary_table(run_a: dict[str, Any], run_b: dict[str, Any]) -> None:
    a, b = run_a["doc"], run_b["doc"]
    text = summary_table(a)
    for key in ("micro_f1", "macro_f1", "macro_ap", "p_at_1"):
        assert f"{a['overall'][key]:.4f}" in text
    assert f"{a['overall']['labels_with_f1_gt_0']}/{len(LABELS)}" in text
    for g in GROUPS:
        assert f"{g} macro F1" in text and f"{a['groups'][g]['macro_f1']:.4f}" in text
    lines = text.splitlines()
    assert (
        len({len(line.rstrip()) for line in lines[2:]} | {len(lines[0])}) == 1
    )  # fixed width, right-aligned
    both = summary_table(a, b)
    assert "bce-run" in both and "db-run" in both and "delta" in both
    assert f"{b['overall']['micro_f1']:.4f}" in both
    assert fmt_delta(a["overall"]["macro_f1"], b["overall"]["macro_f1"]) in both


def test_formatting() -> None:
    assert fmt(None) == "n/a" and fmt(3) == "3" and fmt(0.123456) == "0.1235"
    assert fmt(float("nan")) == "n/a"
    assert fmt_delta(0.5, 0.25) == "+0.2500" and fmt_delta(2, 5) == "-3"
    assert fmt_delta(None, 0.1) == "n/a"


# ------------------------------------------------------------------------------- thousands of labels

WIDE_LABELS = 7900


def _section(page: str, title: str) -> str:
    return page.split(f"<h2>{title}</h2>")[1].split("<h2>")[0]


@pytest.fixture(scope="module")
def wide_run() -> dict[str, Any]:
    """A 7,900-label evaluation from sparse ground truth, as the evaluate stage builds it."""
    import scipy.sparse as sp

    rng = np.random.default_rng(11)
    prevalence = 0.3 / (np.arange(WIDE_LABELS) + 3.0) ** 0.6  # long tail, ~15 labels per document
    labels = [f"topic_{j:04d}" for j in range(WIDE_LABELS)]
    train_counts = rng.binomial(2000, np.minimum(prevalence * 2, 1))

    def split(n: int) -> tuple[sp.csr_matrix, np.ndarray]:
        y = rng.random((n, WIDE_LABELS)) < prevalence
        s = 0.55 * rng.random(y.shape, dtype=np.float32) + 0.45 * y * rng.random(y.shape, dtype=np.float32)
        return sp.csr_matrix(y, dtype=np.int8), s

    y_val, s_val = split(300)
    y_test, s_test = split(300)
    thr = fit_thresholds(y_val, s_val, labels)
    ev = evaluate(y_test, thr.apply(s_test), s_test, labels, train_counts)
    stats = {
        "labels": labels,
        "num_labels": WIDE_LABELS,
        "documents": {"train": 2000, "validation": 300, "test": 300},
        "label_counts": {lab: {"train": int(c)} for lab, c in zip(labels, train_counts, strict=True)},
        "groups": {"head_min": 35, "tail_max": 8},
    }
    thr_doc = thr.to_json_dict()
    doc = build_metrics_document(ev, thr_doc, stats, {"run": "wide-run"})
    plots = render_plots(ev, thr_doc, stats)
    page = render_html(doc, ev, plots, thresholds=thr_doc)
    return {"ev": ev, "thr": thr_doc, "plots": plots, "page": page, "csv": per_label_csv(ev, thr_doc)}


def test_wide_report_has_every_group_and_the_csv_every_label(wide_run: dict[str, Any]) -> None:
    ev = wide_run["ev"]
    assert {g: ev["groups"][g]["n_labels"] > 0 for g in GROUPS} == dict.fromkeys(GROUPS, True)
    df = pd.read_csv(io.StringIO(wide_run["csv"]), keep_default_na=False, na_values=[""])
    assert len(df) == WIDE_LABELS and df["label"].tolist() == [r["label"] for r in ev["per_label"]]
    assert df["threshold"].notna().all()


def test_wide_report_html_stays_short(wide_run: dict[str, Any]) -> None:
    page = wide_run["page"]
    assert len(page) < 3_000_000  # plots included
    per_label = _section(page, "Per label")
    assert per_label.count("<tr>") == 1 + MAX_HTML_LABEL_ROWS
    assert f"The {MAX_HTML_LABEL_ROWS} most frequent of {WIDE_LABELS} labels" in per_label
    extremes = _section(page, "Best and worst labels")
    tables = extremes.split("<h3")[1:]
    assert len(tables) == 4
    for key, table in zip(extreme_labels(wide_run["ev"]), tables, strict=True):
        assert f'id="labels-{key.replace("_", "-")}"' in table
        assert table.count("<tr>") == 1 + HTML_EXTREMES
    assert page.count("<tr>") < 2 * MAX_HTML_LABEL_ROWS  # no full per-label table anywhere


def test_wide_report_extreme_tables_are_ordered(wide_run: dict[str, Any]) -> None:
    ext = extreme_labels(wide_run["ev"])
    with_pos = [r for r in wide_run["ev"]["per_label"] if r["true_count"] > 0]
    f1s = sorted(r["f1"] for r in with_pos)
    assert [r["f1"] for r in ext["highest_f1"]] == f1s[::-1][:HTML_EXTREMES]
    assert [r["f1"] for r in ext["lowest_f1"]] == f1s[:HTML_EXTREMES]
    ratios = sorted(r["over_prediction"] for r in with_pos)
    assert [r["over_prediction"] for r in ext["most_over_predicted"]] == ratios[::-1][:HTML_EXTREMES]
    assert [r["over_prediction"] for r in ext["most_under_predicted"]] == ratios[:HTML_EXTREMES]
    page = wide_run["page"]
    for r in ext["most_over_predicted"]:
        assert f'<td class="l">{r["label"]}</td>' in page


def test_wide_report_plots(wide_run: dict[str, Any]) -> None:
    plots = wide_run["plots"]
    assert set(plots) == set(PLOTS)
    for name, png in plots.items():
        img = imread(io.BytesIO(png))
        assert img.shape[0] >= 300 and img.shape[1] >= 400, name
        assert img[..., :3].std() > 0.01, f"{name} is blank"
        assert len(png) < 400_000, name


def test_small_report_keeps_the_full_table(run_a: dict[str, Any]) -> None:
    page = render_html(run_a["doc"], run_a["ev"], run_a["plots"], thresholds=run_a["thr"])
    assert "Best and worst labels" not in page
    assert _section(page, "Per label").count("<tr>") == 1 + len(LABELS)
    assert "most frequent of" not in page
    cut = render_html(run_a["doc"], run_a["ev"], {}, max_label_rows=3)
    extremes = _section(cut, "Best and worst labels")
    assert extremes.count("<h3") == 4 and extremes.count("<tr>") == 4 * (1 + 3)
    assert "a&lt;b&amp;c" in cut and "a<b&c" not in cut


def test_frequency_bins() -> None:
    counts = np.array([5, 1, 1, 1, 1, 1, 1, 2, 3, 100, 40, 7, 7, 7])
    bins = frequency_bins(counts, max_bins=4)
    assert 1 <= len(bins) <= 4
    members = np.concatenate([idx for _, idx in bins])
    assert sorted(members.tolist()) == list(range(counts.size))
    # An edge inside a run of equal counts moves to the run start: the six 1s and the three 7s stay together.
    assert bins[0][0] == "1-2" and set(bins[0][1].tolist()) == {1, 2, 3, 4, 5, 6, 7}
    assert any(set(idx.tolist()) >= {11, 12, 13} for _, idx in bins)
    tops = [counts[idx].max() for _, idx in bins]
    lows = [counts[idx].min() for _, idx in bins]
    assert all(hi < lo for hi, lo in zip(tops[:-1], lows[1:], strict=True))  # ordered, disjoint ranges
    assert bins[-1][0] == f"{lows[-1]}-100"
    assert frequency_bins([]) == []
    assert [name for name, _ in frequency_bins([4, 4, 4])] == ["4"]


# ------------------------------------------------------------------------------- zero-shot labels


def test_zero_shot_group_counts_and_micro_figures() -> None:
    """Test labels never seen in train: a group of their own, the vocabulary figures untouched."""
    y = np.array([[1, 0], [1, 1], [0, 1]])
    p = np.array([[1, 0], [0, 1], [1, 0]])  # tp 2 (a in doc 0, b in doc 1), 4 true, 3 predicted
    s = np.array([[0.9, 0.1], [0.4, 0.8], [0.7, 0.3]])
    labels, counts = ["a", "b"], np.array([50, 3])
    plain = evaluate(y, p, s, labels, counts)
    ev = evaluate(y, p, s, labels, counts, zero_shot={"new1": 2, "new2": 1, "only_in_validation": 0})
    z = ev["groups"][ZERO_SHOT]
    assert z == {
        "n_labels": 2,
        "n_docs": 3,
        "n_positives": 3,
        "true_positives": 0,
        "micro_recall": 0.0,
        "macro_recall": 0.0,
        "micro_f1": 0.0,
        "macro_f1": 0.0,
        "labels_with_f1_gt_0": 0,
        "scored_from_names": False,
        "scored_labels": 0,
        "predicted_pairs": 0,
        "p_at_5": 0.0,  # a closed vocabulary never ranks them
        "recall_at_5": 0.0,
    }
    ov = ev["overall"]
    assert ov["micro_f1"] == pytest.approx(4 / 7) and ov["micro_recall"] == 0.5 and ov["n_positives"] == 4
    assert ov["micro_f1_with_zero_shot"] == pytest.approx(2 * 2 / (4 + 3 + 3))
    assert ov["micro_recall_with_zero_shot"] == pytest.approx(2 / 7)
    # Every vocabulary figure is what it is without zero-shot labels.
    for key in ("micro_f1_with_zero_shot", "micro_recall_with_zero_shot"):
        assert plain["overall"].pop(key) == plain["overall"]["micro_" + key.split("_")[1]]
        ov.pop(key)
    assert ov == plain["overall"] and ev["per_label"] == plain["per_label"]
    assert {g: ev["groups"][g] for g in GROUPS} == {g: plain["groups"][g] for g in GROUPS}
    assert plain["groups"][ZERO_SHOT]["n_labels"] == 0 and plain["groups"][ZERO_SHOT]["micro_recall"] is None
    assert [(r["label"], r["group"], r["support"], r["recall"]) for r in ev["zero_shot_labels"]] == [
        ("new1", ZERO_SHOT, 2, 0.0),
        ("new2", ZERO_SHOT, 1, 0.0),
    ]
    with pytest.raises(ValueError, match="outside the vocabulary"):
        evaluate(y, p, s, labels, counts, zero_shot={"a": 1})


def test_zero_shot_group_in_document_csv_and_html(run_a: dict[str, Any]) -> None:
    rng = np.random.default_rng(0)
    y_val, s_val = _data(rng, 150)
    thr = fit_thresholds(y_val, s_val, LABELS)
    y_test, s_test = _data(rng, 200)
    ev = evaluate(
        y_test, thr.apply(s_test), s_test, LABELS, TRAIN_COUNTS, zero_shot={"brand<new>": 7, "z": 5}
    )
    thr_doc = thr.to_json_dict()
    doc = build_metrics_document(ev, thr_doc, _stats(), {"run": "zs-run"})
    back = json.loads(json.dumps(doc, allow_nan=False))
    assert back["groups"][ZERO_SHOT]["n_labels"] == 2 and back["groups"][ZERO_SHOT]["n_positives"] == 12
    assert back["groups"][ZERO_SHOT]["micro_recall"] == 0.0
    assert back["overall"]["micro_f1_with_zero_shot"] < back["overall"]["micro_f1"]

    df = pd.read_csv(io.StringIO(per_label_csv(ev, thr_doc)), keep_default_na=False, na_values=[""])
    assert df["label"].tolist() == [*LABELS, "brand<new>", "z"]
    tail = df.iloc[-2:]
    assert tail["group"].tolist() == [ZERO_SHOT] * 2 and tail["support"].tolist() == [7, 5]
    assert tail["threshold"].isna().all() and (tail["recall"] == 0).all()

    page = render_html(doc, ev, {}, thresholds=thr_doc)
    groups = page.split("<h2>Per frequency group</h2>")[1].split("<h2>")[0]
    assert f"<th>{ZERO_SHOT}</th>" in groups
    table = groups.split("</table>")[0]
    labels_row = table.split('<td class="l">Labels</td>')[1].split("</tr>")[0]
    positives_row = table.split('<td class="l">Positives (document x label)</td>')[1].split("</tr>")[0]
    assert labels_row.endswith("<td>2</td>") and positives_row.endswith("<td>12</td>")
    assert (
        "The zero-shot group holds the 2 test labels that never occur in train, with 12 positives" in groups
    )
    assert f"{doc['overall']['micro_f1_with_zero_shot']:.4f}" in groups
    assert "Micro F1 with zero-shot labels" in page
    # A run without zero-shot labels has no such column, one sentence saying so.
    plain = render_html(run_a["doc"], run_a["ev"], {})
    assert f"<th>{ZERO_SHOT}</th>" not in plain and "there are no zero-shot labels" in plain
    assert "Micro F1 with zero-shot labels" not in plain
    assert "micro F1 with zero-shot (2)" in summary_table(doc)
