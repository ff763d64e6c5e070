"""The predict job on a tiny saved model (no Ray training): outputs, exact decisions, refusals."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from pipeline.core.errors import InputError
from pipeline.evaluation.scoring import scored_blocks
from pipeline.evaluation.thresholds import apply_thresholds, fit_thresholds
from pipeline.modeling.encoder import train_wordpiece_tokenizer
from pipeline.modeling.model import ModelConfig, build_model, load_model, save_model
from pipeline.serving.predict import SUCCESS_FILE, run_predict
from tests.conftest import put_parquet, run_config, s3_bucket, storage_overrides, write_parquet

LABELS = ["alpha", "beta", "gamma", "delta"]
WORDS = "market oil grain wheat rate bank trade ship crude gold money stock bond yield corn sugar".split()
TINY = ModelConfig(
    hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, max_length=16, vocab_size=120
)
# Small, quick scoring on the session's 2-CPU Ray; predictions go to <run>/predictions/new/.
SCORING = ["evaluate.cpus_per_actor=0.5", "evaluate.batch_size=8"]


def _texts(rng: np.random.Generator, n: int) -> list[str]:
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 9)))) for _ in range(n)]


def _label_lists(rng: np.random.Generator, n: int, vocab: list[str] = LABELS) -> list[list[str]]:
    return [sorted(set(rng.choice(vocab, size=int(rng.integers(0, 3))).tolist())) for _ in range(n)]


def _thresholds(scores: np.ndarray, seed: int, at_least_one: bool, labels: list[str] = LABELS) -> dict:
    """thresholds.json fitted on random validation labels against the model's real scores, so the
    thresholds sit inside the score range and decisions are mixed."""
    y = (np.random.default_rng(seed).random(scores.shape) < 0.4).astype(np.int64)
    return fit_thresholds(
        y, scores, labels, strategy="per_label", min_support=1, at_least_one=at_least_one
    ).to_json_dict()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A run folder with model/ and thresholds.json, plus input shards (two files, one null text, one
    null label list)."""
    root = tmp_path_factory.mktemp("predict")
    rng = np.random.default_rng(0)
    train_texts = _texts(rng, 60)
    tokenizer = train_wordpiece_tokenizer(train_texts, vocab_size=TINY.vocab_size)
    torch.manual_seed(0)
    model = build_model(TINY, len(LABELS), tokenizer)
    with torch.no_grad():  # spread the scores a little: a random head at std 0.02 leaves them all ~0.5
        model.head.weight.normal_(0.0, 1.0)
    run = root / "runs" / "demo"
    save_model(model, tokenizer, LABELS, run / "model", model_config=TINY)
    loaded = load_model(run / "model")
    val_scores = loaded.predict_scores(train_texts)
    thresholds = _thresholds(val_scores, 1, at_least_one=False)
    thresholds["provenance"] = {"model_id": loaded.config["model_id"]}  # as the evaluate stage writes it
    (run / "thresholds.json").write_text(json.dumps(thresholds))

    texts = _texts(rng, 30)
    texts[3] = None
    labels = _label_lists(rng, 30)
    labels[5] = None
    ids = [f"doc-{i:03d}" for i in range(30)]
    src = root / "new"
    write_parquet(src / "a.parquet", {"id": ids[:18], "text": texts[:18], "labels": labels[:18]})
    write_parquet(src / "sub" / "b.parquet", {"id": ids[18:], "text": texts[18:], "labels": labels[18:]})
    return {
        "root": root,
        "run": run,
        "src": src,
        "ids": ids,
        "texts": texts,
        "labels": labels,
        "loaded": loaded,
    }


@pytest.fixture
def keep_logging():
    """jobs._common.main calls logging.basicConfig(force=True): put pytest's handlers back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _cfg(root: Path, *sets: str):
    return run_config(root / "runs", "demo", *SCORING, *sets)


def _read(folder: Path) -> pa.Table:
    return pa.concat_tables(pq.read_table(p) for p in sorted(folder.glob("*.parquet")))


@pytest.mark.timeout(180)
def test_predictions_match_model_and_thresholds(ray_session, built):
    run, texts = built["run"], built["texts"]
    summary = run_predict(_cfg(built["root"], f"predict.source={built['src']}"))
    out = run / "predictions" / "new"
    table = _read(out)
    assert table.schema.names == ["id", "labels", "scores", "predicted"]
    assert table.schema.field("scores").type == pa.list_(pa.float32())  # plain list<float>, not a tensor type
    assert table.schema.field("predicted").type == pa.list_(pa.string())
    got = {row["id"]: row for row in table.to_pylist()}
    assert sorted(got) == built["ids"]  # every input row, once
    order = [got[i] for i in built["ids"]]
    scores = np.array([row["scores"] for row in order], dtype=np.float32)
    expected = built["loaded"].predict_scores([t or "" for t in texts])  # null text = empty document
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    thr = json.loads((run / "thresholds.json").read_text())
    t = np.array([row["threshold"] for row in thr["labels"]])
    decided = apply_thresholds(scores, t, at_least_one=False)
    assert [row["predicted"] for row in order] == [[LABELS[j] for j in np.flatnonzero(r)] for r in decided]
    assert 0 < decided.sum() < decided.size  # the check above compares mixed decisions, not all-or-nothing
    assert [row["labels"] for row in order] == [lab or [] for lab in built["labels"]]
    done = json.loads((out / SUCCESS_FILE).read_text())
    assert done == summary
    assert done["rows"] == 30 and done["empty_text_rows"] == 1
    assert done["model"].endswith("demo/model") and done["thresholds"].endswith("demo/thresholds.json")
    assert done["pointer"] is None
    assert not list(run.rglob(".staging-*")) and not list(run.rglob(".tmp-*"))


# ------------------------------------------------------------------------------------------ object storage


@pytest.mark.timeout(60)
def test_bad_shard_on_s3_names_its_uri(built, moto_storage, tmp_path):
    """Shards on s3:// are found and checked through storage.endpoint_override and friends."""
    cfg = _cfg(tmp_path, *storage_overrides(moto_storage), "predict.source=s3://predict-bad/in")
    fs = s3_bucket(moto_storage, "predict-bad")
    put_parquet(fs, "predict-bad/in/p.parquet", pa.table({"id": ["a"], "txt": ["b"]}))
    shutil.copytree(built["run"], tmp_path / "runs" / "demo", ignore=shutil.ignore_patterns("predictions"))
    with pytest.raises(InputError, match=r"s3://predict-bad/in/p\.parquet: missing column 'text'"):
        run_predict(cfg)
    assert not (tmp_path / "runs" / "demo" / "predictions").exists()


@pytest.mark.timeout(180)
def test_pointer_s3_source_no_labels_column_via_job(
    ray_session, built, moto_storage, tmp_path, capsys, keep_logging, monkeypatch
):
    """current.json picks the model and thresholds; the shards are read from s3:// through the storage
    settings (a local folder when moto is absent); they have no labels column and integer ids; the job entry
    point runs in-process and returns 0; predict.output puts the folder elsewhere. The input check runs
    as a Ray Data pass here (the other tests check small inputs on the driver)."""
    import pipeline.serving.inputs
    from jobs.predict import main

    monkeypatch.setattr(pipeline.serving.inputs, "LOCAL_CHECK_MAX_ROWS", 0)

    root = tmp_path
    run = root / "runs" / "demo"
    shutil.copytree(built["run"] / "model", run / "models" / "v2")
    scores = built["loaded"].predict_scores(_texts(np.random.default_rng(5), 40))
    (run / "models" / "thr-v2.json").write_text(json.dumps(_thresholds(scores, 2, at_least_one=True)))
    # Relative entries resolve against the run folder; the default run/model is absent on purpose.
    (run / "current.json").write_text(json.dumps({"model": "models/v2", "thresholds": "models/thr-v2.json"}))
    texts = _texts(np.random.default_rng(6), 12)
    shard = pa.table({"id": pa.array(range(100, 112), pa.int64()), "text": texts})
    storage = storage_overrides(moto_storage)
    put_parquet(s3_bucket(moto_storage, "predict-in"), "predict-in/new/x.parquet", shard)
    source = "s3://predict-in/new"
    out = root / "elsewhere"
    sets = [f"run.output={root / 'runs'}", f"predict.source={source}", f"predict.output={out}", *SCORING]
    argv = [x for s in [*sets, *storage] for x in ("--set", s)]
    assert main(argv) == 0, capsys.readouterr().err
    table = _read(out)
    assert table.schema.names == ["id", "scores", "predicted"]
    assert table.schema.field("id").type == pa.int64()
    table = table.sort_by("id")
    assert table.column("id").to_pylist() == list(range(100, 112))
    s = np.array(table.column("scores").to_pylist(), dtype=np.float32)
    np.testing.assert_allclose(s, built["loaded"].predict_scores(texts), atol=1e-5)
    t = np.array([r["threshold"] for r in json.loads((run / "models" / "thr-v2.json").read_text())["labels"]])
    decided = apply_thresholds(s, t, at_least_one=True)  # the rule the thresholds were fitted with
    assert table.column("predicted").to_pylist() == [[LABELS[j] for j in np.flatnonzero(r)] for r in decided]
    done = json.loads((out / SUCCESS_FILE).read_text())
    assert done["pointer"].endswith("current.json") and done["at_least_one"] is True
    assert done["model"].endswith("models/v2") and done["thresholds"].endswith("models/thr-v2.json")
    assert done["source"] == source and done["rows"] == 12
    assert not (run / "predictions").exists()


def _refusal_cases(built, root: Path) -> dict:
    """name -> (config overrides, regexes the message must contain). Each case gets its own run folder."""
    run = root / "runs" / "demo"
    shutil.copytree(built["run"], run, ignore=shutil.ignore_patterns("predictions"))
    rng = np.random.default_rng(9)
    ids, texts, labels = [f"r{i}" for i in range(6)], _texts(rng, 6), _label_lists(rng, 6)
    bad = root / "bad"
    cases = {}

    src = write_parquet(bad / "notext" / "p.parquet", {"id": ids, "body": texts})
    cases["missing text column"] = (
        [f"predict.source={src.parent}"],
        [r"p\.parquet", "missing column 'text'"],
    )
    src = write_parquet(bad / "noid" / "p.parquet", {"text": texts})
    cases["missing id column"] = ([f"predict.source={src.parent}"], [r"p\.parquet", "missing column 'id'"])
    src = write_parquet(bad / "floatid" / "p.parquet", {"id": [1.5] * 6, "text": texts})
    cases["id of wrong type"] = ([f"predict.source={src}"], [r"p\.parquet", "column 'id' has type double"])
    src = write_parquet(bad / "intlabels" / "p.parquet", {"id": ids, "text": texts, "labels": [[1, 2]] * 6})
    cases["labels of wrong type"] = (
        [f"predict.source={src}"],
        [r"p\.parquet", "column 'labels' has type list<.*int64>", "expected list<string>"],
    )
    unknown = [lab + ["zeta"] if i % 2 else lab + ["eta", "alpha"] for i, lab in enumerate(labels)]
    src = write_parquet(bad / "unknown" / "q.parquet", {"id": ids, "text": texts, "labels": unknown})
    cases["labels outside the vocabulary"] = (
        [f"predict.source={src.parent}"],
        [r"q\.parquet", "column 'labels'", "not in the model's vocabulary", "'zeta' \\(3x\\)", "'eta'"],
    )
    ok = str(built["src"])
    other = root / "other"
    shutil.copytree(built["run"], other, ignore=shutil.ignore_patterns("predictions"))
    doc = json.loads((other / "thresholds.json").read_text())
    doc["labels"][3]["label"] = "omega"
    (other / "thresholds.json").write_text(json.dumps(doc))
    cases["thresholds for other labels"] = (
        [f"predict.source={ok}", f"predict.thresholds={other / 'thresholds.json'}"],
        [
            "thresholds.json do not match the model's label vocabulary",
            "only in the thresholds: \\['omega'\\]",
        ],
    )
    # #24 item 5: the same labels, but fitted for another model.
    foreign = root / "foreign"
    shutil.copytree(built["run"], foreign, ignore=shutil.ignore_patterns("predictions"))
    doc = json.loads((foreign / "thresholds.json").read_text())
    assert (
        doc["provenance"]["model_id"]
        == json.loads((run / "model" / "model_config.json").read_text())["model_id"]
    )
    doc["provenance"]["model_id"] = "0" * 16
    (foreign / "thresholds.json").write_text(json.dumps(doc))
    cases["thresholds of another model"] = (
        [f"predict.source={ok}", f"predict.thresholds={foreign / 'thresholds.json'}"],
        ["were fitted for another model", "model_id 0{16}", "run the evaluate stage"],
    )
    cases["no model"] = (
        [f"predict.source={ok}", f"predict.model={root / 'nowhere' / 'model'}"],
        ["model not found", r"nowhere/model/model_config\.json", "train stage"],
    )
    bare = root / "bare"
    shutil.copytree(built["run"] / "model", bare / "model")
    cases["no thresholds"] = (
        [f"predict.source={ok}", f"predict.model={bare / 'model'}"],
        ["thresholds not found", r"bare/thresholds\.json", "evaluate stage"],
    )
    cases["no source"] = ([], ["predict.source is not set"])
    cases["output over other files"] = (
        [f"predict.source={ok}", f"predict.output={run}"],
        ["already holds files that are not predictions", "model"],
    )
    cases["reserved name"] = ([f"predict.source={ok}", "predict.name=test"], ["evaluate stage's predictions"])
    return cases


@pytest.mark.timeout(180)
def test_refusals_name_the_problem_and_write_nothing(ray_session, built, tmp_path):
    cases = _refusal_cases(built, tmp_path)
    run = tmp_path / "runs" / "demo"
    for name, (sets, patterns) in cases.items():
        cfg = _cfg(tmp_path, *sets)
        with pytest.raises(InputError) as err:
            run_predict(cfg)
        for pattern in patterns:
            assert re.search(pattern, str(err.value)), f"{name}: {pattern!r} not in {err.value}"
        assert not (run / "predictions").exists(), name
        assert not list(tmp_path.rglob(".staging-*")), name


def test_configured_column_names_pass_the_schema_check(built, tmp_path):
    from pipeline.serving.inputs import discover_input

    src = write_parquet(tmp_path / "p.parquet", {"doc": ["a", "b"], "body": ["x y", "z"]})
    cfg = _cfg(tmp_path, "data.text_column=body", "data.id_column=doc", "data.labels_column=tags")
    inp = discover_input(str(src), cfg.data, cfg.storage)
    assert inp.rows == 2 and inp.id_type == pa.string() and not inp.has_labels


@pytest.mark.timeout(120)
def test_job_returns_nonzero_with_the_message(ray_session, built, tmp_path, capsys, keep_logging):
    from jobs.predict import main

    code = main(
        ["--set", f"run.output={tmp_path}", "--set", f"predict.source={built['src']}", "--set", SCORING[0]]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "model not found" in err and "run the train stage first" in err
    assert not (tmp_path / "demo" / "predictions").exists()


@pytest.mark.timeout(120)
def test_scored_blocks_keep_labels_with_scores_over_every_pass(ray_session):
    import ray.data

    from pipeline.evaluation.blocks import gather

    rng = np.random.default_rng(0)
    labels = ["a", "b", "c"]
    rows = 5000  # several blocks
    scores = rng.random((rows, 3), dtype=np.float32)
    truth = [[lab for lab, on in zip(labels, rng.random(3) < 0.3, strict=True) if on] for _ in range(rows)]
    items = [
        {"id": f"d{i}", "labels": t, "scores": s} for i, (t, s) in enumerate(zip(truth, scores, strict=True))
    ]
    ds = ray.data.from_items(items).repartition(3).materialize()
    y, blocks = scored_blocks(ds, labels)
    blocks.rows = 700  # several blocks per task
    assert y.shape == blocks.shape == (rows, 3)
    for _ in range(2):  # a second pass reads the same rows in the same order
        s = np.concatenate([b for _, b in blocks])
        assert s.dtype == np.float32
        # Ray Data may reorder blocks; each row's labels must stay with its scores.
        got, want = np.argsort(s[:, 0]), np.argsort(scores[:, 0])
        np.testing.assert_array_equal(s[got], scores[want])
        dense = np.array([[lab in t for lab in labels] for t in truth], dtype=np.int8)
        np.testing.assert_array_equal(y.toarray()[got], dense[want])
    r, c = y.nonzero()
    np.testing.assert_array_equal(gather(r.astype(np.int64), c.astype(np.int64), blocks), s[r, c])
    # The block statistics run in Ray tasks (the driver never reads the scores), in row order, at most
    # `rows` rows at a time; fold merges them.
    seen = list(blocks.each(_where, 10))
    assert [a for a, _ in seen] == sorted(a for a, _ in seen) and seen[0][0] == 0
    assert all(pid != os.getpid() and n <= 700 for _, (pid, n, _) in seen)
    assert sum(n for _, (_, n, _) in seen) == rows
    np.testing.assert_array_equal(np.concatenate([head for _, (_, _, head) in seen]), s[:, :1].reshape(-1))
    np.testing.assert_allclose(blocks.fold(_column_sums, np.add), s.sum(axis=0, dtype=np.float64))


def _where(a: int, block: np.ndarray, k: int) -> tuple[int, int, np.ndarray]:
    return os.getpid(), block.shape[0], block[:, 0].copy()


def _column_sums(a: int, block: np.ndarray) -> np.ndarray:
    return block.sum(axis=0, dtype=np.float64)
