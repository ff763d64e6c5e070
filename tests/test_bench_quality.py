"""benchmarks/quality: configs, table, targets, the LibMultiLabel adapter, the --smoke run end to end."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from benchmarks.common.libmultilabel import LabelCountsCSC
from benchmarks.quality import config as bench
from benchmarks.quality import driver, peer, report
from tests.conftest import missing_tool

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["reuters21578", "goemotions", "smoke"])
def test_configs_load(name, tmp_path):
    bc = bench.load_bench_config(bench.CONFIGS / f"{name}.yaml", tmp_path, tmp_path / "data", [])
    assert bc.cfg.run.output == str(tmp_path)
    assert bc.cfg.tune.mode == "embeddings"
    assert bc.head_grid and all(set(c) <= {"epochs", "lr", "batch_size"} for c in bc.head_grid)
    if name == "smoke":
        assert bc.dataset is None and bc.cfg.data.source == "synthetic"
    else:
        assert bc.cfg.model.encoder == "minilm"
        assert bc.cfg.data.source == str(tmp_path / "data" / name)
        assert bc.targets


def test_config_rejects_unknown_bench_keys(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("bench:\n  datasets: oops\n")
    with pytest.raises(ValueError, match="unknown keys in bench"):
        bench.load_bench_config(path, tmp_path, tmp_path, [])


def _row(micro, macro, tail):
    return {
        "micro_f1": micro,
        "macro_f1": macro,
        "macro_ap": 0.5,
        "head_f1": 0.9,
        "medium_f1": 0.4,
        "tail_f1": tail,
    }


def test_table_and_targets():
    rows = {name: _row(0.8, 0.5, 0.1) for name in bench.ALL_ROWS}
    rows["db"] = _row(0.85, 0.62, 0.3)
    rows["libmultilabel-thresholding"] = _row(0.95, 0.9, 0.9)  # a peer row never counts for our targets
    stats = {"groups": {"head_min": 35, "tail_max": 8, "sizes": {"head": 3, "medium": 4, "tail": 5}}}
    table = report.markdown_table("x", rows, stats)
    assert table.count("\n| ") == len(bench.ALL_ROWS) + 2  # header, separator, one line per row
    assert "tail F1 (5)" in table and "| db | 0.850 | 0.620 |" in table
    checks = report.check_targets("x", {"rows": rows}, {"micro_f1": 0.89, "macro_f1": 0.60})
    by_target = {c["target"]: c for c in checks}
    assert not by_target["micro_f1 >= 0.89 (best of our rows)"]["met"]
    assert by_target["macro_f1 >= 0.6 (best of our rows)"]["met"]
    assert by_target["macro_f1 >= 0.6 (best of our rows)"]["row"] == "db"
    assert by_target["db above bce on macro_f1"]["met"] and by_target["db above bce on tail_f1"]["met"]
    rows["db"]["tail_f1"] = rows["bce"]["tail_f1"] = None  # an empty group: not met, with the reason
    tail = {c["target"]: c for c in report.check_targets("x", {"rows": rows}, {})}["db above bce on tail_f1"]
    assert not tail["met"] and "note" in tail


def test_label_count_adapter_keeps_the_matrix():
    y = sp.csr_matrix(np.array([[1, 0, 1], [0, 0, 1], [1, 1, 1]], dtype=float))
    a = LabelCountsCSC(y)
    assert np.array_equal(np.asarray(np.sum(a, 2)).ravel(), [2, 1, 3])  # libmultilabel's call: column sums
    assert np.array_equal(np.asarray(a.sum(axis=1)).ravel(), [2, 1, 3])
    assert a.tocsc() is a and np.array_equal(a[:, 1].toarray().ravel(), [0, 0, 1])


def test_libmultilabel_thresholding_runs_through_the_adapter():
    if peer.libmultilabel_available() is not None:
        missing_tool(peer.libmultilabel_available())
    import libmultilabel.linear as linear

    texts = ["alpha beta", "beta gamma", "gamma delta", "alpha delta", "delta omega", "beta beta"] * 8
    labels = [["x"], ["y"], ["x", "y"], ["z"], ["z", "x"], ["y"]] * 8
    data = linear.Preprocessor().fit_transform(
        {"data_format": "txt", "classes": ["x", "y", "z"], "train": {"x": texts, "y": labels}}
    )
    np.random.seed(0)
    model = linear.train_thresholding(
        LabelCountsCSC(data["train"]["y"]), data["train"]["x"], options="", verbose=False
    )
    assert linear.predict_values(model, data["train"]["x"]).shape == (len(texts), 3)


@pytest.fixture(scope="module")
def smoke_run(ray_session, tmp_path_factory) -> tuple[dict, Path]:
    """`benchmarks.quality --smoke` once for the module (about a minute): its JSON and its work folder."""
    tmp = tmp_path_factory.mktemp("quality-smoke")
    out = tmp / "quality.json"
    driver.main(["--smoke", "--out", str(out), "--work-dir", str(tmp / "work")])
    return json.loads(out.read_text()), tmp / "work"


@pytest.mark.timeout(600)
def test_smoke_run_writes_every_row_and_metric(smoke_run):
    doc, _ = smoke_run
    assert doc["complete"] and doc["smoke"] and doc["machine"]
    for pkg in ("torch", "transformers", "ray"):
        assert doc["versions"][pkg]
    result = doc["datasets"]["smoke"]
    lml_missing = peer.libmultilabel_available()
    expected = bench.OUR_ROWS if lml_missing else bench.ALL_ROWS
    assert tuple(result["rows"]) == expected
    if lml_missing:
        assert lml_missing in result["libmultilabel_skipped"]
    for name, row in result["rows"].items():
        for metric in report.METRICS:
            assert metric in row, (name, metric)
        assert 0.0 <= row["micro_f1"] <= 1.0 and 0.0 <= row["macro_f1"] <= 1.0
        assert row["macro_ap"] is not None
        # Each label's best test F1 over all thresholds bounds the F1 of any threshold the row chose.
        assert row["macro_f1"] <= row["oracle_macro_f1"] + 1e-9, name
        assert 0.0 <= row["oracle_tail_f1"] <= 1.0
        assert f"| {name} |" in result["table_markdown"]
    head = result["config"]["head"]
    assert (head["epochs"], head["lr"], head["batch_size"]) == (2, 3e-3, 32)
    assert result["rows"]["tuned"]["tune"]["best_params"]["loss"]["name"]
    assert result["rows"]["db"]["loss_params"]["mu"] > 0  # DB's data-driven mu was filled in
    for step in ("prepare", "embeddings_train_validation", "embeddings_test", "tune", "db", "total"):
        assert step in result["timings_s"]
    assert {t["target"] for t in doc["targets"]} == {"db above bce on macro_f1", "db above bce on tail_f1"}


@pytest.mark.timeout(300)
def test_finetune_smoke_trains_and_evaluates_on_the_quality_splits(smoke_run, tmp_path):
    """benchmarks/finetune.py --smoke on the quality smoke's work folder: it reuses the prepared splits and
    its row is the evaluate stage's own metrics document."""
    from benchmarks import finetune

    _, work = smoke_run
    stats = work / "smoke" / "label_stats.json"
    prepared_at = stats.stat().st_mtime_ns
    out = tmp_path / "finetune.json"
    doc = finetune.main(["--smoke", "--work-dir", str(work), "--loss", "db", "--out", str(out)])
    assert doc["complete"] and json.loads(out.read_text())["rows"].keys() == {"db"}
    assert stats.stat().st_mtime_ns == prepared_at  # the quality benchmark's splits, not prepared again
    row = doc["rows"]["db"]
    assert row["loss"] == "db" and row["epochs_run"] == len(row["history"]) == 1
    metrics = json.loads((work / "smoke-ft-db" / "report" / "metrics.json").read_text())
    assert row["micro_f1"] == pytest.approx(metrics["overall"]["micro_f1"])
    assert row["tail_f1"] == pytest.approx(metrics["groups"]["tail"]["macro_f1"])
    assert row["labels_with_f1_gt_0"] == metrics["labels_with_f1_gt_0"]["overall"]
    assert row["test_at_0.5"]["macro_f1"] == pytest.approx(metrics["extra"]["test_at_0.5"]["macro_f1"])


def test_finetune_combine_summarises_seeds_per_config_and_loss(tmp_path):
    from benchmarks import finetune

    def run(config: str, seed_rows: dict[str, float], complete: bool = True) -> dict:
        metrics = finetune.SUMMARY_METRICS
        rows = {loss: {m: v + i / 100 for i, m in enumerate(metrics)} for loss, v in seed_rows.items()}
        return {"config": config, "rows": rows, "complete": complete}

    docs = [run("a.yaml", {"db": 0.5, "bce": 0.4}), run("a.yaml", {"db": 0.7}), run("b.yaml", {"db": 0.1})]
    paths = []
    for i, doc in enumerate(docs):
        paths.append(tmp_path / f"{i}.json")
        paths[-1].write_text(json.dumps(doc))
    out = tmp_path / "all.json"
    doc = finetune.main(["--combine", *map(str, paths), "--out", str(out)])
    assert json.loads(out.read_text()) == doc and doc["runs"] == docs
    summary = doc["summary"]
    assert set(summary) == {"a.yaml", "b.yaml"} and set(summary["a.yaml"]) == {"db", "bce"}
    db = summary["a.yaml"]["db"]
    assert db["runs"] == 2
    assert db["macro_f1"] == pytest.approx({"mean": 0.61, "min": 0.51, "max": 0.71})
    assert db["tail_f1"]["mean"] == pytest.approx(0.65)
    assert summary["a.yaml"]["bce"]["runs"] == summary["b.yaml"]["db"]["runs"] == 1

    paths[1].write_text(json.dumps(run("a.yaml", {"db": 0.7}, complete=False)))
    with pytest.raises(SystemExit, match="did not finish: .*1.json"):
        finetune.main(["--combine", *map(str, paths)])


def test_machine_summary_is_read_from_the_machine(monkeypatch):
    import torch

    from benchmarks.common import machine

    assert machine.machine_summary().startswith(f"{os.cpu_count()} CPUs, ")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: "NVIDIA H100 80GB HBM3")
    assert machine.machine_summary().endswith(" GiB, 2 GPU (NVIDIA H100 80GB HBM3)")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert machine.machine_summary().endswith(" GiB, no GPU")
