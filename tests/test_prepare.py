"""The prepare stage against real Ray Data: counts, splits, bad input, and no hang on many shards."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import load_config
from pipeline.dataset import InputError
from pipeline.prepare import run_prepare
from pipeline.split import label_matrix, stratified_assign
from tests.conftest import shared_dataset

pytestmark = pytest.mark.timeout(300)


def _cfg(tmp_path: Path, source: str, *overrides: str):
    return load_config(None, [f"run.output={tmp_path}", "run.name=r", f"data.source={source}", *overrides])


def _polars_counts(files: list[Path] | str) -> tuple[int, Counter]:
    df = pl.read_parquet(files)
    counts = df.select(pl.col("labels").explode()).drop_nulls().to_series().value_counts()
    return df.height, Counter(dict(zip(counts["labels"].to_list(), counts["count"].to_list(), strict=True)))


def _write(path: Path, table: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def _table(texts, labels, **extra) -> pa.Table:
    cols = {"text": pa.array(texts, pa.string()), "labels": pa.array(labels, pa.list_(pa.string()))}
    cols.update(extra)
    return pa.table(cols)


def test_synthetic_demo_counts_match_polars(ray_session, tmp_path):
    cfg = _cfg(tmp_path, "synthetic", "data.synthetic.num_docs=800", "data.synthetic.num_labels=20")
    stats = run_prepare(cfg)
    run = tmp_path / "r"
    assert (run / "label_stats.json").is_file()
    on_disk = json.loads((run / "label_stats.json").read_text())
    assert on_disk["labels"] == stats["labels"]
    total_docs = 0
    for split in ("train", "validation", "test"):
        files = sorted((run / "prepared" / split).glob("part-*.parquet"))
        assert files, split
        n, counts = _polars_counts(files)
        total_docs += n
        assert stats["documents"][split] == n
        for lab in stats["labels"]:
            assert stats["label_counts"][lab][split] == counts.get(lab, 0), (split, lab)
    assert total_docs == 800
    # Every label is in train, and groups cover the vocabulary.
    assert all(stats["label_counts"][lab]["train"] > 0 for lab in stats["labels"])
    assert sum(stats["groups"]["sizes"].values()) == stats["num_labels"]
    assert stats["split"]["method"] == "iterative-stratification"
    assert not list(run.glob(".staging-*"))
    # Top pairs: the exact top pairs of the written train split (20 labels: all of them are candidates).
    train_rows = pl.read_parquet(sorted((run / "prepared" / "train").glob("*.parquet")))["labels"].to_list()
    pairs = Counter(p for r in train_rows for p in itertools.combinations(sorted(r), 2))
    ranked = sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[:20]
    assert stats["top_pairs"] == [{"labels": list(p), "count": n} for p, n in ranked]
    assert stats["top_pairs_exact"] is True and on_disk["top_pairs_exact"] is True


def test_reuters_counts_and_carved_validation(ray_session, tmp_path):
    src = shared_dataset("reuters21578")
    stats = run_prepare(_cfg(tmp_path, str(src)))
    assert stats["split"]["method"] == "folders+validation-carved-from-train"
    n_train, c_train = _polars_counts(sorted((src / "train").glob("*.parquet")))
    n_test, c_test = _polars_counts(sorted((src / "test").glob("*.parquet")))
    docs = stats["documents"]
    assert docs["train"] + docs["validation"] == n_train and docs["test"] == n_test
    assert stats["num_labels"] == 90
    for lab in c_train:
        got = stats["label_counts"][lab]
        assert got["train"] + got["validation"] == c_train[lab], lab
        assert got["test"] == c_test.get(lab, 0), lab
        # Every label with at least 2 training documents stays in train after carving validation.
        if c_train[lab] >= 2:
            assert got["train"] >= 1, lab
    assert abs(docs["validation"] / n_train - 0.15) < 0.02


def test_goemotions_counts_exact(ray_session, tmp_path):
    src = shared_dataset("goemotions")
    stats = run_prepare(_cfg(tmp_path, str(src)))
    assert stats["split"]["method"] == "folders"
    for split in ("train", "validation", "test"):
        n, counts = _polars_counts(sorted((src / split).glob("*.parquet")))
        assert stats["documents"][split] == n
        for lab in stats["labels"]:
            assert stats["label_counts"][lab][split] == counts.get(lab, 0), (split, lab)
    assert stats["num_labels"] == 28


def test_stratified_split_beats_random_on_reuters():
    src = shared_dataset("reuters21578")
    df = pl.read_parquet(sorted((src / "train").glob("*.parquet")))
    rows = df["labels"].to_list()
    vocab = {lab: i for i, lab in enumerate(sorted({lab for r in rows for lab in r}))}
    y = label_matrix([[vocab[lab] for lab in r] for r in rows], len(vocab))
    ratios = {"train": 0.7, "validation": 0.15, "test": 0.15}
    names = stratified_assign(y, ratios, seed=0)
    rng = np.random.default_rng(0)
    random_names = rng.choice(list(ratios), size=len(rows), p=list(ratios.values()))

    def deviation(assign: np.ndarray) -> float:
        dense = y.toarray().astype(bool)
        per_label = dense.sum(0)
        devs = [
            np.abs(dense[assign == s].sum(0) / np.maximum(per_label, 1) - r)[per_label >= 5].mean()
            for s, r in ratios.items()
        ]
        return float(np.mean(devs))

    strat, rand = deviation(names), deviation(random_names)
    assert strat < rand * 0.6, (strat, rand)
    per_label = np.asarray(y.sum(0)).ravel()
    in_train = np.asarray(y[names == "train"].sum(0)).ravel()
    assert np.all(in_train[per_label >= 2] >= 1)
    # Deterministic for a seed.
    assert (stratified_assign(y, ratios, seed=0) == names).all()


def test_split_column_and_empty_row_policy(ray_session, tmp_path):
    src = tmp_path / "in"
    split = ["train"] * 6 + ["validation"] * 2 + ["test"] * 2 + ["train"] * 2
    texts = [f"doc {i}" for i in range(10)] + ["   ", "has text"]
    labels = [["a"], ["a", "b"], ["b"], ["a"], ["c"], ["a", "c"], ["a"], ["b"], ["a"], ["c"], ["a"], []]
    _write(src / "all.parquet", _table(texts, labels, split=pa.array(split)))
    stats = run_prepare(_cfg(tmp_path, str(src)))
    assert stats["split"]["method"] == "split-column"
    assert stats["documents"] == {"train": 6, "validation": 2, "test": 2}
    assert stats["row_issues"]["empty_text"]["total"] == 1
    assert stats["row_issues"]["no_labels"]["total"] == 1

    stats = run_prepare(_cfg(tmp_path, str(src), "run.name=keep", "data.empty_policy=keep"))
    assert stats["documents"]["train"] == 8
    kept = pl.read_parquet(sorted((tmp_path / "keep" / "prepared" / "train").glob("*.parquet")))
    assert kept.filter(pl.col("labels").list.len() == 0).height == 1


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing_column", "missing column 'labels'"),
        ("labels_not_list", "expected list<string>"),
        ("empty", "holds no rows"),
        ("no_files", "no .parquet files"),
        ("vocab_differs", "label vocabulary differs between splits"),
        ("bad_split", "not train / validation / test"),
    ],
)
def test_bad_input_clear_error_and_nothing_written(ray_session, tmp_path, case, message):
    src = tmp_path / "in"
    src.mkdir()
    if case == "missing_column":
        _write(src / "x.parquet", pa.table({"text": ["a"], "tags": [["x"]]}))
    elif case == "labels_not_list":
        _write(src / "x.parquet", pa.table({"text": ["a", "b"], "labels": ["x", "y"]}))
    elif case == "empty":
        _write(src / "x.parquet", _table([], []))
    elif case == "vocab_differs":
        _write(src / "train" / "x.parquet", _table(["a", "b", "c"], [["x"], ["y"], ["x"]]))
        _write(src / "validation" / "x.parquet", _table(["d"], [["x"]]))
        _write(src / "test" / "x.parquet", _table(["e", "f"], [["x"], ["zzz"]]))
    elif case == "bad_split":
        _write(
            src / "x.parquet",
            _table(["a", "b", "c"], [["x"], ["y"], ["x"]], split=pa.array(["train", "tst", "test"])),
        )
    with pytest.raises(InputError, match=message) as err:
        run_prepare(_cfg(tmp_path, str(src)))
    if case in ("missing_column", "labels_not_list"):
        assert "x.parquet" in str(err.value)  # names the file
    if case == "vocab_differs":
        assert "zzz" in str(err.value)
    run = tmp_path / "r"
    assert not (run / "prepared").exists() and not (run / "label_stats.json").exists()
    assert not list(run.glob(".staging-*")) if run.exists() else True


def test_many_shards_and_glob_do_not_hang(ray_session, tmp_path):
    src = tmp_path / "in"
    rng = np.random.default_rng(1)
    labs = ["a", "b", "c", "d"]
    for i in range(12):  # more shards than the 2 CPUs
        rows = [[labs[j] for j in np.flatnonzero(rng.random(4) < 0.4)] or ["a"] for _ in range(20)]
        _write(src / f"shard-{i:02d}.parquet", _table([f"t {i} {k}" for k in range(20)], rows))
    _write(src / "ignored.csv.parquet.bak", _table(["x"], [["a"]]))
    stats = run_prepare(_cfg(tmp_path, str(src / "shard-*.parquet")))
    assert sum(stats["documents"].values()) == 240


def test_split_folders_on_object_storage(ray_session, moto_storage, tmp_path):
    """Split folders read from s3:// in one pass: each row's split comes from its file's path."""
    import pyarrow.fs as pafs

    fs = pafs.S3FileSystem(
        endpoint_override=moto_storage["endpoint_override"],
        scheme=moto_storage["scheme"],
        access_key=moto_storage["access_key"],
        secret_key=moto_storage["secret_key"],
        region=moto_storage["region"],
        allow_bucket_creation=True,
    )
    fs.create_dir("prep-splits")
    sizes = {"train": [7, 5], "validation": [3], "test": [4]}
    for split, parts in sizes.items():
        for i, n in enumerate(parts):
            table = _table(
                [f"{split} {i} {j}" for j in range(n)], [["a"] if j % 2 else ["a", "b"] for j in range(n)]
            )
            sink = pa.BufferOutputStream()
            pq.write_table(table, sink)
            with fs.open_output_stream(f"prep-splits/in/{split}/p{i}.parquet") as f:
                f.write(sink.getvalue().to_pybytes())
    overrides = [f"storage.{k}={v}" for k, v in moto_storage.items()]
    stats = run_prepare(_cfg(tmp_path, "s3://prep-splits/in", *overrides))
    assert stats["split"]["method"] == "folders"
    assert stats["documents"] == {split: sum(parts) for split, parts in sizes.items()}
    assert stats["label_counts"]["b"] == {"train": 7, "validation": 2, "test": 2}
