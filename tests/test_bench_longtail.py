"""benchmarks/longtail: configs, the flat row, and the --smoke run end to end (own rows through the stages,
peer rows on the same split)."""

from __future__ import annotations

import json

import pytest

from benchmarks.longtail import driver, peers
from tests.conftest import missing_tool


@pytest.mark.parametrize("name", [*driver.DATASETS, driver.SMOKE])
def test_configs_load_and_make_valid_pipeline_configs(name, tmp_path):
    bench = driver.load_bench(driver.CONFIGS / f"{name}.yaml")
    assert bench.rows or bench.peers
    for row, overrides in bench.rows.items():
        cfg = driver.row_config(bench, tmp_path, tmp_path / "corpora", row, overrides)
        assert cfg.run.name == row and cfg.run.output == str(tmp_path / bench.key)
        if bench.dataset:
            assert cfg.data.source == str(tmp_path / "corpora" / bench.dataset)
        names = cfg.evaluate.label_names.source
        assert names is None or names.startswith(str(tmp_path / "corpora") + "/")  # {corpora} replaced


def test_bench_section_is_checked(tmp_path):
    import pydantic

    path = tmp_path / "x.yaml"
    path.write_text("bench:\n  rowz: {}\n")
    with pytest.raises(ValueError, match="unknown keys in bench"):
        driver.load_bench(path)
    path.write_text("bench:\n  peers: [pecos-typo]\n")
    with pytest.raises(ValueError, match="unknown peer row 'pecos-typo'"):
        driver.load_bench(path)
    path.write_text("bench:\n  peers: [napkinxc-plt]\n  peer_thresholds: {t: [train.lr=1]}\n")
    with pytest.raises(ValueError, match="may only set evaluate"):
        driver.load_bench(path)
    path.write_text("bench:\n  peers: [napkinxc-plt]\n  peer_thresholds: {a+b: []}\n")
    with pytest.raises(ValueError, match="bad row suffix"):
        driver.load_bench(path)
    path.write_text("bench:\n  peers: [napkinxc-plt]\n  peer_thresholds: {t: [evaluate.fallbak=prior]}\n")
    with pytest.raises(pydantic.ValidationError, match="fallbak"):
        driver.with_cli(driver.load_bench(path), None, [], tmp_path)
    for key in ("pecos_top_k", "pecos_beam_size"):
        for value in ("0", "1.5", "true", "many"):
            path.write_text(f"bench:\n  peers: [napkinxc-plt]\n  {key}: {value}\n")
            with pytest.raises(ValueError, match=f"{key} must be an integer >= 1"):
                driver.load_bench(path)
    path.write_text("bench:\n  peers: [napkinxc-plt]\n  pecos_top_k: 256\n  pecos_beam_size: 50\n")
    assert (driver.load_bench(path).pecos_top_k, driver.load_bench(path).pecos_beam_size) == (256, 50)
    path.write_text("bench:\n  peers: [napkinxc-plt]\n")
    bench = driver.load_bench(path)
    assert (bench.pecos_top_k, bench.pecos_beam_size) == (100, 10)
    assert (peers.PECOS_TOP_K, peers.PECOS_BEAM_SIZE) == (100, 10)
    path.write_text("bench: {}\n")
    with pytest.raises(ValueError, match="both empty"):
        driver.load_bench(path)
    path.write_text("bench:\n  rows: {a: []}\n  seeds: [0, 1, 0]\n")
    with pytest.raises(ValueError, match="bench.seeds must list distinct seeds"):
        driver.load_bench(path)
    for rows, match in (
        ("{b: {model_of: a}}", "earlier training row"),
        ("{a: [], b: {model_of: a, set: [train.lr=1]}}", "only set evaluate"),
        ("{a: [], b: {model_of: a, sets: []}}", "expected"),
        ("{a: [], b: {model_of: a}, c: {model_of: b}}", "earlier training row"),
    ):
        path.write_text(f"bench:\n  rows: {rows}\n")
        with pytest.raises(ValueError, match=match):
            driver.load_bench(path)
    for rows in ("{a: {tune: [], seeds: [1, 1]}}", "{a: {tune: [], seeds: []}}"):
        path.write_text(f"bench:\n  rows: {rows}\n")
        with pytest.raises(ValueError, match="distinct seeds"):
            driver.load_bench(path)
    path.write_text("bench:\n  rows: {a: {tune: [], seed: [1]}}\n")
    with pytest.raises(ValueError, match="expected {tune"):
        driver.load_bench(path)
    # A tune row's own seeds replace the config's, for it and the rows that evaluate its model.
    path.write_text(
        "bench:\n  seeds: [0, 1]\n  rows: {a: [], t: {tune: [x=1], seeds: [1]},"
        " p: {model_of: t, set: [evaluate.fallback=prior]}}\n"
    )
    bench = driver.load_bench(path)
    assert bench.tuned == {"t"} and bench.rows["t"] == ["x=1"]
    assert [bench.seeds_of(r) for r in ("a", "t", "p")] == [[0, 1], [1], [1]]
    path.write_text("bench:\n  rows: {a: [x=1], b: {model_of: a, set: [evaluate.fallback=prior]}}\n")
    bench = driver.load_bench(path)
    assert bench.rows["b"] == ["x=1", "evaluate.fallback=prior"] and bench.model_of == {"b": "a"}
    path.write_text("bench:\n  rows: {a: []}\nrun: {seed: 3}\n")
    bench = driver.load_bench(path)
    assert (
        bench.seeds == [3]
        and driver.run_name(bench, "a", 3) == "a"
        and driver.run_name(bench, "a", 4) == "a-seed4"
    )


def test_an_invocation_keeps_what_it_does_not_measure_again(tmp_path):
    """One file collects datasets measured one invocation at a time: running dataset a (all rows, or --rows
    x) keeps dataset b's rows and settings, and a's other rows with --rows."""
    out = tmp_path / "longtail.json"
    rows = [{"dataset": d, "row": r, "seed": 0} for d in ("a", "b") for r in ("x", "y")]
    out.write_text(
        json.dumps({"git_sha": "abc", "started": "t0", "rows": rows, "datasets": {"a": 1, "b": 2}})
    )
    kept, datasets = driver._earlier(out, None, ["a"])
    assert [(r["dataset"], r["row"]) for r in kept] == [("b", "x"), ("b", "y")] and datasets == {"b": 2}
    assert all(r["git_sha"] == "abc" and r["measured"] == "t0" for r in kept)
    kept, datasets = driver._earlier(out, {"x"}, ["a"])
    assert [(r["dataset"], r["row"]) for r in kept] == [("a", "y"), ("b", "x"), ("b", "y")]
    assert datasets == {"b": 2}
    assert driver._earlier(tmp_path / "none.json", None, ["a"]) == ([], {})


def test_further_seeds_keep_the_seeds_measured_before(tmp_path):
    """--seeds 1,2 on dataset a re-measures only those seeds: a's seed-0 rows (and b's) stay."""
    out = tmp_path / "longtail.json"
    rows = [{"dataset": d, "row": "x", "seed": k} for d in ("a", "b") for k in (0, 1)]
    out.write_text(json.dumps({"git_sha": "abc", "started": "t0", "rows": rows, "datasets": {}}))
    kept, _ = driver._earlier(out, {"x"}, ["a"], {1, 2})
    assert [(r["dataset"], r["seed"]) for r in kept] == [("a", 0), ("b", 0), ("b", 1)]


def test_a_model_of_row_takes_the_training_seconds_recorded_beside_the_model(tmp_path):
    # The kept results may hold an older training of the source (row, seed): the model's record wins.
    assert driver.source_train_seconds(tmp_path, 1111.5) == 1111.5
    (tmp_path / driver.TRAIN_SECONDS).write_text(json.dumps({"seconds": 2166.38}))
    assert driver.source_train_seconds(tmp_path, 1111.5) == 2166.38
    assert driver.source_train_seconds(tmp_path, None) == 2166.38


def test_flat_row_takes_the_reports_figures():
    doc = {
        "overall": {
            "micro_f1": 0.5,
            "macro_f1": 0.25,
            "macro_ap": 0.4,
            "micro_precision": 0.8,
            "micro_recall": 0.4,
            "p_at_1": 0.9,
            "p_at_5": 0.5,
            "ndcg_at_5": 0.6,
            "psp_at_5": 0.3,
        },
        "groups": {"tail": {"macro_f1": 0.1, "n_labels": 3}},
    }
    row = driver.flat_row(doc)
    assert row["predicted_to_true"] == pytest.approx(0.5)  # recall / precision = predicted / true
    assert (row["tail_f1"], row["p_at_5"], row["psp_at_5"]) == (0.1, 0.5, 0.3)
    doc["groups"]["tail"]["n_labels"] = 0
    doc["overall"]["micro_precision"] = 0.0
    row = driver.flat_row(doc)
    assert row["tail_f1"] is None and row["predicted_to_true"] is None
    assert "zero_shot_recall" not in row  # no zero-shot label in this test set
    doc["groups"]["zero-shot"] = {"n_labels": 4, "scored_from_names": True, "micro_recall": 0.25}
    doc["groups"]["zero-shot"].update(p_at_5=0.1, recall_at_5=0.2)
    doc["overall"]["micro_f1_with_zero_shot"] = 0.45
    row = driver.flat_row(doc)
    assert (row["zero_shot_labels"], row["zero_shot_scored"], row["zero_shot_recall"]) == (4, True, 0.25)
    assert (row["zero_shot_p_at_5"], row["zero_shot_recall_at_5"], row["micro_f1_with_zero_shot"]) == (
        0.1,
        0.2,
        0.45,
    )


@pytest.mark.timeout(900)
def test_smoke_run_writes_a_flat_row_per_model_and_peer(ray_session, tmp_path):
    for row in peers.PEERS:
        reason = peers.peer_unavailable(row)
        if reason:
            missing_tool(reason)
    out = tmp_path / "longtail.json"
    doc = driver.main(["--smoke", "--out", str(out), "--work-dir", str(tmp_path / "work")])
    bench = driver.load_bench(driver.CONFIGS / f"{driver.SMOKE}.yaml")
    assert json.loads(out.read_text())["complete"] is True
    # Own rows once per seed of bench.seeds (0, 1), peers once.
    assert [(r["row"], r["seed"]) for r in doc["rows"]] == [
        ("db-sparse", 0),
        ("db-sparse", 1),
        ("bce-sparse", 0),
        ("bce-sparse", 1),
        ("db-sparse-prior", 0),
        ("db-sparse-prior", 1),
        ("tuned-sparse", 0),  # a tune row's own seeds: [0]
        *((name, 0) for p in peers.PEERS for name in (p, f"{p}+thresholds-prior")),
    ]
    assert (tmp_path / "work" / "smoke" / "db-sparse-seed1" / "model").is_dir()
    # A measured row keeps its model, not its training checkpoints.
    assert not list((tmp_path / "work" / "smoke").glob("*/checkpoints"))
    rows = {r["row"]: r for r in doc["rows"] if r["seed"] == 0}
    for r in doc["rows"]:
        assert list(r)[: len(driver.FIELDS)] == list(driver.FIELDS)
        assert r["dataset"] == "smoke" and r["device"] == "cpu"
        for key in ("micro_f1", "macro_f1", "macro_ap", "p_at_1", "p_at_5", "ndcg_at_5", "psp_at_5"):
            assert 0.0 <= r[key] <= 1.0, (r["row"], key, r[key])
        assert r["train_seconds"] >= 0 and r["peak_rss_mb"] > 0
    # The synthetic labels follow their words: every model ranks far above chance (12 labels).
    assert all(r["p_at_1"] > 0.5 for r in rows.values()), {k: r["p_at_1"] for k, r in rows.items()}
    assert rows["db-sparse"]["settings"]["kind"] == "lexical"
    # The tuned row searched, then trained with the best trial's loss, lr and l2 (in their ranges).
    best = rows["tuned-sparse"]["best_params"]
    assert best["loss"]["name"] in ("bce", "db") and 0.01 <= best["train"]["lr"] <= 0.1
    assert 1e-7 <= best["train"]["l2"] <= 1e-5
    assert (tmp_path / "work" / "smoke" / "tuned-sparse" / "tune" / "summary.csv").is_file()
    # The -prior rows evaluate db-sparse's model (same weights, same scores) with the prior fallback.
    for seed in (0, 1):
        own, again = (
            next(r for r in doc["rows"] if r["row"] == name and r["seed"] == seed)
            for name in ("db-sparse", "db-sparse-prior")
        )
        assert again["model_of"] == "db-sparse" and again["train_seconds"] == own["train_seconds"]
        assert (again["p_at_1"], again["macro_ap"]) == (own["p_at_1"], own["macro_ap"])
        runs = tmp_path / "work" / "smoke"
        record = runs / driver.run_name(bench, "db-sparse", seed) / driver.TRAIN_SECONDS
        assert json.loads(record.read_text())["seconds"] == own["train_seconds"]
        thr = [
            json.loads((runs / driver.run_name(bench, name, seed) / "thresholds.json").read_text())
            for name in ("db-sparse", "db-sparse-prior")
        ]
        assert [t["parameters"]["fallback"] for t in thr] == ["global", "prior"]
    # A peer's +thresholds-prior row: the same model and test scores (same ranking figures), decided by
    # thresholds fitted on its validation scores with the prior fallback.
    for p in peers.PEERS:
        own, thr = rows[p], rows[f"{p}+thresholds-prior"]
        assert (thr["p_at_1"], thr["macro_ap"], thr["train_seconds"]) == (
            own["p_at_1"],
            own["macro_ap"],
            own["train_seconds"],
        )
        assert thr["thresholds"]["fallback"] == "prior" and thr["threshold_seconds"] >= 0
    # The TF-IDF features were fitted and the splits featurised once, then shared by the later rows.
    shared = tmp_path / "work" / "smoke" / "base" / "features"
    assert (
        len(list(shared.glob("*/vectorizer.json"))) == 1 and len(list(shared.glob("splits/*/done.json"))) == 1
    )


def test_set_reaches_every_own_row_and_a_bad_one_fails_before_work(tmp_path):
    """--set adds an override to every own row (checked for every row before Ray starts); --seeds replaces
    the config's seeds."""
    import pydantic

    with pytest.raises(pydantic.ValidationError, match="nope"):
        driver.main(["--smoke", "--set", "train.nope=1", "--out", str(tmp_path / "x.json")])
    assert not (tmp_path / "x.json").exists()
    bench = driver.load_bench(driver.CONFIGS / f"{driver.SMOKE}.yaml")
    before = dict(bench.rows)
    assert bench.seeds_of("tuned-sparse") == [0]
    driver.with_cli(bench, [3, 4], ["train.epochs=2"], tmp_path)
    assert bench.seeds == [3, 4] and bench.seeds_of("tuned-sparse") == [3, 4]  # --seeds: every row's
    assert bench.rows == {row: [*o, "train.epochs=2"] for row, o in before.items()}
    cfg = driver.row_config(bench, tmp_path, tmp_path, "db-sparse-prior", bench.rows["db-sparse-prior"])
    assert cfg.train.epochs == 2 and cfg.evaluate.fallback == "prior"


def test_peer_rows_decide_by_the_peers_rule_and_by_thresholds_fitted_on_validation(monkeypatch):
    """A fake peer scoring 0.3 on every true label: its own rule (>= 0.5) predicts nothing; thresholds
    fitted on its validation scores predict exactly the true labels of test. Ranking inputs are the same."""
    from types import SimpleNamespace

    import numpy as np
    import scipy.sparse as sp

    from pipeline.evaluation.thresholds import fit_thresholds

    y = sp.csr_matrix(np.eye(4, dtype=np.int8)[[0, 1, 2, 3, 0, 1, 2, 3]])

    def fit(x_train, y_train, seed, folder):
        return lambda x: 0.3 * x.toarray().astype(np.float32)

    monkeypatch.setitem(peers.TRAINERS, "napkinxc-plt", (fit, lambda s: s >= 0.5))
    split = SimpleNamespace(y=y, texts=None)
    features = [sp.csr_matrix(y, dtype=np.float32)] * 3
    seen = []

    def measure(y_true, pred, scores):
        seen.append(scores)
        return {"tp": int(y_true.multiply(pred).sum()), "predicted": int(pred.sum())}

    thr = (lambda y_val, s_val: fit_thresholds(y_val, s_val, list("abcd")), {"fitted_on": "validation"})
    out = peers.peer_rows("napkinxc-plt", split, split, features, measure, 0, split, {"t": thr})
    assert list(out) == ["napkinxc-plt", "napkinxc-plt+t"]
    assert (out["napkinxc-plt"]["tp"], out["napkinxc-plt"]["predicted"]) == (0, 0)
    assert (out["napkinxc-plt+t"]["tp"], out["napkinxc-plt+t"]["predicted"]) == (8, 8)
    assert out["napkinxc-plt+t"]["thresholds"] == {"fitted_on": "validation"}
    assert seen[0] is seen[1]  # one model, one set of test scores
    with pytest.raises(ValueError, match="need the validation split"):
        peers.peer_rows("napkinxc-plt", split, split, features[:2], measure, 0, None, {"t": thr})

    # PECOS's top k and beam width reach its fit and are recorded with each of its rows; other peers get no
    # such options.
    calls = []

    def fit_ranker(x_train, y_train, seed, folder, top_k, beam_size):
        calls.append((top_k, beam_size))
        return lambda x: 0.3 * x.toarray().astype(np.float32)

    monkeypatch.setitem(peers.TRAINERS, "pecos-xrlinear", (fit_ranker, lambda s: s >= 0.5))
    out = peers.peer_rows("pecos-xrlinear", split, split, features, measure, 0, split, {"t": thr}, 7, 30)
    assert calls == [(7, 30)]
    for name in ("pecos-xrlinear", "pecos-xrlinear+t"):
        assert (out[name]["top_k"], out[name]["beam_size"]) == (7, 30)
    plt = peers.peer_rows("napkinxc-plt", split, split, features, measure)["napkinxc-plt"]
    assert "top_k" not in plt and "beam_size" not in plt
