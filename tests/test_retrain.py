"""Scheduled retraining: promote the first model, do nothing without new shards, retrain on a new shard, keep
the current model when the challenger is worse, never touch current.json on failure."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

from pipeline.core.config import SyntheticSection
from pipeline.core.errors import InputError
from pipeline.core.layout import RunLayout
from pipeline.core.storage import locate, read_json
from pipeline.data.synthetic import generate
from pipeline.runs import retrain
from tests.conftest import TINY_RUN, run_config, write_parquet

SMALL = [
    *TINY_RUN,
    "model.num_layers=1",
    "model.vocab_size=500",
    "train.num_workers=0",
    "train.epochs=3",
    "train.lr=5e-3",
    "evaluate.cpus_per_actor=0.5",
    "data.unknown_label_policy=drop",
]
#: A challenger that learns nothing.
WORSE = ["train.lr=1e-9", "train.epochs=1"]
SHARD_ROWS = 150


def _corpus() -> pa.Table:
    """Synthetic documents in the input contract (id, text, labels, split), one shard's rows per slice."""
    table = generate(SyntheticSection(num_docs=3 * SHARD_ROWS, num_labels=8, words_per_doc=20, seed=0))
    rng = np.random.default_rng(0)
    split = rng.choice(["train", "validation", "test"], size=table.num_rows, p=[0.7, 0.15, 0.15])
    return table.append_column("split", pa.array(split.tolist(), pa.string()))


def _write_shard(folder: Path, table: pa.Table, i: int) -> Path:
    return write_parquet(folder / f"shard-{i:03d}.parquet", table.slice(i * SHARD_ROWS, SHARD_ROWS))


def _cfg(tmp: Path, *overrides: str):
    return run_config(tmp / "out", "proj", f"data.source={tmp / 'shards'}", *SMALL, *overrides)


def _runs(tmp: Path) -> list[str]:
    return sorted(p.name for p in (tmp / "out").iterdir() if p.is_dir())


# ------------------------------------------------------------------------------------------ cheap checks


def test_decide_promotes_only_when_not_worse_beyond_tolerance():
    names = ["micro_f1", "macro_f1"]
    assert retrain.decide({"micro_f1": 0.5, "macro_f1": 0.5}, None, names, 0.01)[0]
    ok, reason, checks = retrain.decide(
        {"micro_f1": 0.795, "macro_f1": 0.9}, {"micro_f1": 0.8, "macro_f1": 0.6}, names, 0.01
    )
    assert ok and [c["passed"] for c in checks] == [True, True] and "within tolerance" in reason
    ok, reason, checks = retrain.decide(
        {"micro_f1": 0.78, "macro_f1": 0.9}, {"micro_f1": 0.8, "macro_f1": 0.6}, names, 0.01
    )
    assert not ok and "micro_f1 0.7800 vs 0.8000 (-0.0200)" in reason and "macro_f1" not in reason
    # Lower is better for hamming loss.
    assert retrain.decide({"hamming_loss": 0.10}, {"hamming_loss": 0.2}, ["hamming_loss"], 0.0)[0]
    assert not retrain.decide({"hamming_loss": 0.25}, {"hamming_loss": 0.2}, ["hamming_loss"], 0.01)[0]
    # Undefined for one model only: not promoted; for both (e.g. an empty group): nothing to lose on.
    assert not retrain.decide({"tail.macro_f1": None}, {"tail.macro_f1": 0.3}, ["tail.macro_f1"], 0.5)[0]
    assert retrain.decide({"tail.macro_f1": None}, {"tail.macro_f1": None}, ["tail.macro_f1"], 0.0)[0]


def test_align_maps_label_columns_between_vocabularies():
    scores = np.array([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]], np.float32)
    pred = np.array([[0, 1, 1], [1, 0, 0]])
    s, p, unknown = retrain.align(scores, pred, ["a", "b", "gone"], ["b", "new", "a"])
    np.testing.assert_allclose(s, [[0.2, 0.0, 0.1], [0.5, 0.0, 0.4]])
    np.testing.assert_array_equal(p, [[1, 0, 0], [0, 0, 1]])
    assert unknown == ["new"]
    _, p_sparse, _ = retrain.align(scores, sp.csr_matrix(pred), ["a", "b", "gone"], ["b", "new", "a"])
    assert sp.issparse(p_sparse) and (p_sparse.toarray() == p).all()


def test_unknown_gate_metric_fails_before_any_work(tmp_path):
    with pytest.raises(InputError, match="unknown metric 'f1'"):
        retrain.run_retrain(_cfg(tmp_path, "retrain.metrics=[f1]"))
    with pytest.raises(InputError, match="unknown metric 'rare.macro_f1'"):
        retrain.run_retrain(_cfg(tmp_path, "retrain.metrics=[rare.macro_f1]"))
    retrain.check_gate_metrics(["micro_f1", "tail.macro_f1", "hamming_loss", "p_at_1"])
    assert not (tmp_path / "out").exists()


def test_failed_challenger_leaves_the_pointer_alone(ray_session, tmp_path):
    _write_shard(tmp_path / "shards", _corpus(), 0)
    bad = pa.table({"id": ["x"], "text": ["t"], "labels": ["not a list"], "split": ["train"]})
    write_parquet(tmp_path / "shards" / "shard-bad.parquet", bad)
    pointer = tmp_path / "out" / "proj" / "current.json"
    pointer.parent.mkdir(parents=True)
    pointer.write_text(
        json.dumps({"run": "proj-old", "model": "/m", "thresholds": "/t", "inputs_hash": "old"})
    )
    before = pointer.read_bytes(), pointer.stat().st_mtime_ns
    with pytest.raises(InputError, match="shard-bad.parquet.*expected list<string>"):
        retrain.run_retrain(_cfg(tmp_path))
    assert (pointer.read_bytes(), pointer.stat().st_mtime_ns) == before


# ------------------------------------------------------------------------------------------ end to end


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_retrain_promotes_skips_retrains_and_rejects_a_worse_challenger(
    ray_session, tmp_path, caplog, monkeypatch
):
    caplog.set_level(logging.INFO)
    corpus = _corpus()
    shards = tmp_path / "shards"
    _write_shard(shards, corpus, 0)
    _write_shard(shards, corpus, 1)
    pointer_path = tmp_path / "out" / "proj" / "current.json"

    # 1. No promoted model yet: the first challenger is promoted.
    first = retrain.run_retrain(_cfg(tmp_path))
    assert first["decision"] == "promoted", first["reason"]
    pointer = json.loads(pointer_path.read_text())
    assert pointer["run"] == first["challenger"] and pointer["run"].startswith("proj-")
    assert set(pointer) >= {"run", "model", "thresholds", "metrics", "inputs_hash", "promoted_at"}
    assert Path(pointer["model"], "model_config.json").is_file() and Path(pointer["thresholds"]).is_file()
    assert pointer["previous"] is None and pointer["metrics"]["micro_f1"] > 0
    comparison = json.loads((tmp_path / "out" / first["challenger"] / "comparison.json").read_text())
    assert comparison["decision"] == "promoted" and comparison["current"] is None
    assert (tmp_path / "out" / first["challenger"] / "comparison.md").is_file()
    # Scoring a model the way the current one is scored reproduces the figures of its own evaluate report.
    run = RunLayout.at(str(tmp_path / "out" / first["challenger"]))
    again = retrain.score_current(
        _cfg(tmp_path),
        locate(str(pointer_path.parent)),
        pointer,
        run,
        read_json(run.label_stats),
    )
    report = read_json(run.metrics)["overall"]
    for name in ("micro_f1", "macro_f1", "macro_ap", "p_at_1", "hamming_loss"):
        assert again["overall"][name] == pytest.approx(report[name], abs=1e-6), name

    # 2. No new shards: nothing is trained, no run folder appears, the pointer is not rewritten.
    runs = _runs(tmp_path)
    pointer_bytes = pointer_path.read_bytes()
    caplog.clear()
    assert retrain.run_retrain(_cfg(tmp_path))["decision"] == "noop"
    assert "no new or changed shards" in caplog.text
    assert _runs(tmp_path) == runs and pointer_path.read_bytes() == pointer_bytes

    # 3. A new shard triggers retraining. This challenger learns nothing; the job dies while the current model
    #    is scored: current.json is untouched and no comparison is written.
    _write_shard(shards, corpus, 2)

    def crash(*args, **kwargs):
        raise RuntimeError("node lost")

    monkeypatch.setattr(retrain, "score_current", crash)
    with pytest.raises(RuntimeError, match="node lost"):
        retrain.run_retrain(_cfg(tmp_path, *WORSE))
    monkeypatch.undo()
    assert pointer_path.read_bytes() == pointer_bytes
    (challenger,) = set(_runs(tmp_path)) - set(runs)
    assert (tmp_path / "out" / challenger / "model" / "model_config.json").is_file()
    assert not (tmp_path / "out" / challenger / "comparison.json").exists()

    # 4. Submitted again: the finished stages are skipped, the worse challenger is compared on its own test
    #    split and not promoted; comparison.json says why.
    caplog.clear()
    worse = retrain.run_retrain(_cfg(tmp_path, *WORSE))
    assert worse["challenger"] == challenger
    assert not any(s["ran"] for s in worse["stages"].values()), worse["stages"]
    assert worse["decision"] == "rejected", worse["reason"]
    assert pointer_path.read_bytes() == pointer_bytes
    doc = json.loads((tmp_path / "out" / challenger / "comparison.json").read_text())
    assert doc["decision"] == "rejected" and doc["reason"].startswith("worse than the current model")
    assert doc["current"]["run"] == first["challenger"] and doc["challenger"]["run"] == challenger
    failed = [c for c in doc["checks"] if not c["passed"]]
    assert failed and all(c["delta"] < -doc["tolerance"] for c in failed)
    assert all(c["metric"] in doc["reason"] for c in failed)
    stats = json.loads((tmp_path / "out" / challenger / "label_stats.json").read_text())
    assert doc["test_documents"] == stats["documents"]["test"]
    # The current model was scored on the challenger's (larger) test split.
    assert (
        doc["current"]["documents_scored"]
        == stats["documents"]["test"]
        > first["comparison"]["test_documents"]
    )
    assert (
        "NOT promoted" in caplog.text
        and "NO |" in (tmp_path / "out" / challenger / "comparison.md").read_text()
    )

    # 5. The same challenger with a looser gate: its scores are reused (no retraining, no rescoring) and it
    #    is promoted over the current model, which the new pointer records as previous.
    caplog.clear()
    loose = retrain.run_retrain(_cfg(tmp_path, *WORSE, "retrain.tolerance=1.0"))
    assert loose["decision"] == "promoted" and "reusing its scores" in caplog.text
    new_pointer = json.loads(pointer_path.read_text())
    assert new_pointer["run"] == challenger and new_pointer["previous"]["run"] == first["challenger"]
    assert new_pointer["inputs_hash"] != pointer["inputs_hash"]

    # 6. Nothing new since: no-op.
    assert retrain.run_retrain(_cfg(tmp_path, *WORSE))["decision"] == "noop"


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_a_lexical_model_is_retrained_promoted_and_serves_predictions(ray_session, tmp_path):
    """The lexical kind through the same jobs as the encoder: retrain (prepare, train, evaluate, compare,
    promote), then predict with the promoted model and its thresholds."""
    from pipeline.serving.predict import run_predict

    lexical = ["model.kind=lexical", "model.lexical.min_df=1", "train.lr=5e-2", "train.batch_size=64"]
    corpus = _corpus()
    _write_shard(tmp_path / "shards", corpus, 0)
    first = retrain.run_retrain(_cfg(tmp_path, *lexical))
    assert first["decision"] == "promoted", first["reason"]
    pointer = json.loads((tmp_path / "out" / "proj" / "current.json").read_text())
    assert json.loads(Path(pointer["model"], "model_config.json").read_text())["kind"] == "lexical"
    assert pointer["metrics"]["p_at_1"] > 0.5  # 8 synthetic labels that follow their words

    new = tmp_path / "new"
    write_parquet(new / "part-0.parquet", corpus.slice(2 * SHARD_ROWS, 40).select(["id", "text"]))
    summary = run_predict(_cfg(tmp_path, *lexical, f"predict.source={new}"))
    assert summary["rows"] == 40 and summary["model_info"]["kind"] == "lexical"
    # The promoted model, whole: its 8 labels' scores for every row.
    assert summary["model"].rstrip("/").endswith(Path(pointer["model"]).name)
    out = pq.read_table(summary["output"].removeprefix("file://"))
    labels = json.loads(Path(pointer["model"], "model_config.json").read_text())["labels"]
    assert out.num_rows == 40 and len(labels) == 8 and len(out.column("scores")[0]) == 8
