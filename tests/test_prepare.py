"""The prepare stage against real Ray Data: counts, splits, bad input, and no hang on many shards."""

from __future__ import annotations

import itertools
import json
import logging
import time
import unicodedata
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
import ray.data

from pipeline.core.errors import InputError
from pipeline.data.prepare import run_prepare
from pipeline.data.row_keys import normalised_text
from pipeline.data.sources import SPLITS
from pipeline.data.split import label_matrix, stratified_assign
from tests.conftest import (
    corpus_table,
    put_parquet,
    run_config,
    s3_bucket,
    shared_dataset,
    storage_overrides,
    write_parquet,
)

pytestmark = pytest.mark.timeout(300)


def _cfg(tmp_path: Path, source: str, *overrides: str):
    return run_config(tmp_path, "r", f"data.source={source}", *overrides)


def _polars_counts(files: list[Path] | str) -> tuple[int, Counter]:
    df = pl.read_parquet(files)
    counts = df.select(pl.col("labels").explode()).drop_nulls().to_series().value_counts()
    return df.height, Counter(dict(zip(counts["labels"].to_list(), counts["count"].to_list(), strict=True)))


def _progress_lines(caplog: pytest.LogCaptureFixture, what: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"{what}: ")]


def test_synthetic_demo_counts_match_polars(ray_session, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr("pipeline.core.progress.PROGRESS_INTERVAL_S", 0.02)
    caplog.set_level(logging.INFO, logger="pipeline.core.progress")
    cfg = _cfg(tmp_path, "synthetic", "data.synthetic.num_docs=800", "data.synthetic.num_labels=20")
    stats = run_prepare(cfg)
    # Progress lines while the input is read, out of the rows the footers give.
    lines = _progress_lines(caplog, "prepare: reading")
    assert lines and all(" / 800 rows read (" in line for line in lines), lines
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


def _deduplicated_counts(src: Path) -> dict[str, tuple[int, Counter]]:
    """Per split folder: (documents, label counts) after the duplicate contract, computed with polars: a
    normalised text stays only in its earliest split, where its rows become one with the union of labels."""
    frames = [
        pl.read_parquet(sorted((src / s).glob("*.parquet"))).with_columns(rank=pl.lit(i))
        for i, s in enumerate(SPLITS)
        if (src / s).is_dir()
    ]
    df = pl.concat(frames, how="diagonal_relaxed")
    df = df.with_columns(norm=pl.Series(normalised_text(df["text"].to_arrow()).to_pylist()))
    df = df.filter(pl.col("rank") == pl.col("rank").min().over("norm"))
    merged = df.group_by("rank", "norm").agg(pl.col("labels").explode().drop_nulls().unique())
    out = {}
    for i, s in enumerate(SPLITS):
        part = merged.filter(pl.col("rank") == i)
        counts = part.select(pl.col("labels").explode()).drop_nulls().to_series().value_counts()
        out[s] = (
            part.height,
            Counter(dict(zip(counts["labels"].to_list(), counts["count"].to_list(), strict=True))),
        )
    return out


def test_reuters_counts_and_carved_validation(ray_session, tmp_path):
    src = shared_dataset("reuters21578")
    stats = run_prepare(_cfg(tmp_path, str(src)))
    assert stats["split"]["method"] == "folders+validation-carved-from-train"
    reference = _deduplicated_counts(src)
    (n_train, c_train), (n_test, c_test) = reference["train"], reference["test"]
    raw = _polars_counts(sorted(src.glob("*/*.parquet")))[0]
    dup = stats["duplicates"]
    assert (
        dup["groups"] > 0 and raw - dup["rows_merged"] - dup["rows_dropped_across_splits"] == n_train + n_test
    )
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
    reference = _deduplicated_counts(src)
    for split in ("train", "validation", "test"):
        n, counts = reference[split]
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


def test_split_column_and_empty_row_policy(ray_session, tmp_path, caplog):
    src = tmp_path / "in"
    split = ["train"] * 6 + ["validation"] * 2 + ["test"] * 2 + ["train"] * 2
    texts = [f"doc {i}" for i in range(10)] + ["   ", "has text"]
    labels = [["a"], ["a", "b"], ["b"], ["a"], ["c"], ["a", "c"], ["a"], ["b"], ["a"], ["c"], ["a"], []]
    write_parquet(src / "all.parquet", corpus_table(texts, labels, split=pa.array(split)))
    stats = run_prepare(_cfg(tmp_path, str(src)))
    assert stats["split"]["method"] == "split-column"
    assert stats["documents"] == {"train": 6, "validation": 2, "test": 2}
    assert stats["row_issues"]["empty_text"]["total"] == 1
    assert stats["row_issues"]["no_labels"]["total"] == 1
    assert "dropped 2 row(s) with empty_text: 1, no_labels: 1 (data.empty_policy=drop" in caplog.text

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
        write_parquet(src / "x.parquet", pa.table({"text": ["a"], "tags": [["x"]]}))
    elif case == "labels_not_list":
        write_parquet(src / "x.parquet", pa.table({"text": ["a", "b"], "labels": ["x", "y"]}))
    elif case == "empty":
        write_parquet(src / "x.parquet", corpus_table([], []))
    elif case == "vocab_differs":
        write_parquet(src / "train" / "x.parquet", corpus_table(["a", "b", "c"], [["x"], ["y"], ["x"]]))
        write_parquet(src / "validation" / "x.parquet", corpus_table(["d"], [["x"]]))
        write_parquet(src / "test" / "x.parquet", corpus_table(["e", "f"], [["x"], ["zzz"]]))
    elif case == "bad_split":
        write_parquet(
            src / "x.parquet",
            corpus_table(["a", "b", "c"], [["x"], ["y"], ["x"]], split=pa.array(["train", "tst", "test"])),
        )
    with pytest.raises(InputError, match=message) as err:
        # Unknown labels fail only under the error policy (the default keeps them as zero-shot labels).
        run_prepare(_cfg(tmp_path, str(src), "data.unknown_label_policy=error"))
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
        write_parquet(src / f"shard-{i:02d}.parquet", corpus_table([f"t {i} {k}" for k in range(20)], rows))
    write_parquet(src / "ignored.csv.parquet.bak", corpus_table(["x"], [["a"]]))
    stats = run_prepare(_cfg(tmp_path, str(src / "shard-*.parquet")))
    assert sum(stats["documents"].values()) == 240
    # A flat folder (no split folders, no split column) is stratified three ways.
    assert stats["split"]["method"] == "iterative-stratification" and min(stats["documents"].values()) > 0


def test_split_folders_on_object_storage(ray_session, moto_storage, tmp_path):
    """Split folders read from s3:// in one pass: each row's split comes from its file's path."""
    fs = s3_bucket(moto_storage, "prep-splits")
    sizes = {"train": [7, 5], "validation": [3], "test": [4]}
    for split, parts in sizes.items():
        for i, n in enumerate(parts):
            table = corpus_table(
                [f"{split} {i} {j}" for j in range(n)], [["a"] if j % 2 else ["a", "b"] for j in range(n)]
            )
            put_parquet(fs, f"prep-splits/in/{split}/p{i}.parquet", table)
    stats = run_prepare(_cfg(tmp_path, "s3://prep-splits/in", *storage_overrides(moto_storage)))
    assert stats["split"]["method"] == "folders"
    assert stats["documents"] == {split: sum(parts) for split, parts in sizes.items()}
    assert stats["label_counts"]["b"] == {"train": 7, "validation": 2, "test": 2}


def _zero_shot_source(src: Path) -> None:
    """Split folders whose test holds two labels never in train, in two rows each ("new1" also in one
    validation row)."""
    write_parquet(
        src / "train" / "x.parquet",
        corpus_table([f"tr {i}" for i in range(6)], [["a"], ["a", "b"], ["b"]] * 2),
    )
    write_parquet(src / "validation" / "x.parquet", corpus_table(["v0", "v1"], [["a", "new1"], ["b"]]))
    write_parquet(
        src / "test" / "x.parquet",
        corpus_table(
            ["t0", "t1", "t2", "t3"], [["a", "new1"], ["new1", "new2", "b"], ["b"], ["new2", "new2"]]
        ),
    )


def test_zero_shot_labels_kept_by_default_error_and_drop_still_work(ray_session, tmp_path, caplog):
    src = tmp_path / "in"
    _zero_shot_source(src)
    with caplog.at_level("INFO", logger="pipeline.data.prepare"):
        stats = run_prepare(_cfg(tmp_path, str(src)))
    assert stats["labels"] == ["a", "b"] and stats["num_labels"] == 2  # the vocabulary stays train's
    assert sum(stats["groups"]["sizes"].values()) == 2
    # "new2" twice in one row counts one document.
    assert stats["zero_shot_labels"] == {
        "new1": {"train": 0, "validation": 1, "test": 2},
        "new2": {"train": 0, "validation": 0, "test": 2},
    }
    assert stats["groups"]["assignment"]["new1"] == "zero-shot" == stats["groups"]["assignment"]["new2"]
    assert stats["unknown_label_policy"] == "zero-shot" and stats["unknown_labels_dropped"] == {}
    on_disk = json.loads((tmp_path / "r" / "label_stats.json").read_text())
    assert on_disk["zero_shot_labels"] == stats["zero_shot_labels"]
    lines = [r.getMessage() for r in caplog.records if "zero-shot label(s)" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("2 zero-shot label(s)"), lines
    test_rows = pl.read_parquet(sorted((tmp_path / "r" / "prepared" / "test").glob("*.parquet")))
    assert sorted(map(sorted, test_rows["labels"].to_list())) == [
        ["a", "new1"],
        ["b"],
        ["b", "new1", "new2"],
        ["new2"],
    ]

    with pytest.raises(InputError, match="label vocabulary differs between splits") as err:
        run_prepare(_cfg(tmp_path, str(src), "run.name=err", "data.unknown_label_policy=error"))
    assert "new1" in str(err.value) and "new2" in str(err.value)
    assert not (tmp_path / "err" / "label_stats.json").exists()

    dropped = run_prepare(_cfg(tmp_path, str(src), "run.name=drop", "data.unknown_label_policy=drop"))
    assert dropped["labels"] == ["a", "b"] and dropped["zero_shot_labels"] == {}
    assert dropped["unknown_labels_dropped"] == {"validation": ["new1"], "test": ["new1", "new2"]}
    test_rows = pl.read_parquet(sorted((tmp_path / "drop" / "prepared" / "test").glob("*.parquet")))
    assert test_rows.height == 4 and {lab for r in test_rows["labels"].to_list() for lab in r} == {"a", "b"}


def _norm(text: str) -> str:
    """The normalised text of the duplicate contract, per row in Python."""
    return " ".join(unicodedata.normalize("NFC", text).lower().split())


def _prepared(run: Path) -> dict[str, pl.DataFrame]:
    return {s: pl.read_parquet(sorted((run / "prepared" / s).glob("*.parquet"))) for s in SPLITS}


def _train_only_with_duplicates(src: Path) -> None:
    """100 distinct texts plus three duplicate groups: d (3 rows, labels reordered, case and whitespace),
    e (NFC vs NFD, conflicting labels), f (one id, one text, twice)."""
    cycle = [["a"], ["b"], ["c"], ["a", "b"], ["b", "c"]]
    texts = [f"document number {i}" for i in range(100)]
    labels = [cycle[i % 5] for i in range(100)]
    ids = [f"doc{i:03d}" for i in range(100)]
    texts += [
        "Hello World",
        "hello   world",
        "HELLO\tWorld ",
        "Caf\u00e9 noir",
        "Cafe\u0301  NOIR",
        "exact",
        "exact",
    ]
    labels += [["a", "b"], ["b", "a"], ["a", "b"], ["a"], ["c"], ["b"], ["b"]]
    ids += ["d1", "d2", "d3", "e1", "e2", "f1", "f1"]
    write_parquet(src / "train" / "p0.parquet", corpus_table(texts[:60], labels[:60], id=pa.array(ids[:60])))
    write_parquet(src / "train" / "p1.parquet", corpus_table(texts[60:], labels[60:], id=pa.array(ids[60:])))


def test_train_folder_only_is_split_three_ways_with_duplicates_merged(ray_session, tmp_path, caplog):
    src = tmp_path / "in"
    _train_only_with_duplicates(src)
    with caplog.at_level("INFO", logger="pipeline.data.prepare"):
        stats = run_prepare(_cfg(tmp_path, str(src)))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("duplicates")]
    assert lines == [
        "duplicates (data.duplicates=merge): 3 group(s) of rows share a normalised text; 4 row(s) merged, 0 "
        "dropped as copies in a later given split; 1 group(s) with conflicting label sets"
    ]
    assert stats["split"]["method"] == "train-folder-only+iterative-stratification"
    assert stats["split"]["ratios"] == {"train": 0.7, "validation": 0.15, "test": 0.15}
    docs = stats["documents"]
    assert sum(docs.values()) == 103 and min(docs.values()) > 0
    for split, ratio in stats["split"]["ratios"].items():
        assert abs(docs[split] / 103 - ratio) < 0.05, docs
    dup = stats["duplicates"]
    assert {k: dup[k] for k in ("policy", "groups", "rows_merged", "rows_dropped_across_splits")} == {
        "policy": "merge",
        "groups": 3,
        "rows_merged": 4,
        "rows_dropped_across_splits": 0,
    }
    assert dup["conflicting_groups"] == 1 and dup["conflicting_examples"] == [["e1", "e2"]]
    assert sorted(dup["examples"]) == [["d1", "d2", "d3"], ["e1", "e2"], ["f1", "f1"]]
    assert json.loads((tmp_path / "r" / "label_stats.json").read_text())["duplicates"] == dup
    frames = _prepared(tmp_path / "r")
    seen: dict[str, str] = {}
    for split, df in frames.items():
        assert df.height == docs[split]
        for text in df["text"].to_list():
            assert _norm(text) not in seen, (text, split, seen.get(_norm(text)))
            seen[_norm(text)] = split
    rows = pl.concat(list(frames.values()))
    ids = rows["id"].to_list()
    assert len(ids) == len(set(ids)) and not {"d2", "d3", "e2"} & set(ids)  # output ids: the source's
    merged = {r["id"]: r["labels"] for r in rows.filter(pl.col("id").is_in(["d1", "e1", "f1"])).to_dicts()}
    assert merged == {"d1": ["a", "b"], "e1": ["a", "c"], "f1": ["b"]}


def test_duplicates_keep_stays_in_one_split_and_error_fails(ray_session, tmp_path):
    src = tmp_path / "in"
    _train_only_with_duplicates(src)
    stats = run_prepare(_cfg(tmp_path, str(src), "data.duplicates=keep"))
    assert sum(stats["documents"].values()) == 107
    dup = stats["duplicates"]
    assert (dup["groups"], dup["rows_merged"], dup["conflicting_groups"]) == (3, 0, 1)
    split_of: dict[str, set[str]] = {}
    for split, df in _prepared(tmp_path / "r").items():
        for text in df["text"].to_list():
            split_of.setdefault(_norm(text), set()).add(split)
    assert all(len(s) == 1 for s in split_of.values())
    with pytest.raises(InputError, match=r"3 group\(s\) of rows share one text.*'d1', 'd2', 'd3'"):
        run_prepare(_cfg(tmp_path, str(src), "run.name=err", "data.duplicates=error"))
    assert not (tmp_path / "err" / "prepared").exists()


def test_text_in_given_train_and_test_is_kept_in_train_only(ray_session, tmp_path):
    src = tmp_path / "in"
    labs = [["a"], ["b"], ["a", "b"]]
    train = [f"train text {i}" for i in range(30)] + ["Shared text"]
    test = [f"test text {i}" for i in range(9)] + ["shared  TEXT"]
    write_parquet(
        src / "train" / "x.parquet",
        corpus_table(
            train, [labs[i % 3] for i in range(31)], id=pa.array([f"tr{i}" for i in range(30)] + ["s1"])
        ),
    )
    write_parquet(
        src / "test" / "x.parquet",
        corpus_table(
            test, [labs[i % 3] for i in range(10)], id=pa.array([f"te{i}" for i in range(9)] + ["s2"])
        ),
    )
    stats = run_prepare(_cfg(tmp_path, str(src)))
    assert stats["split"]["method"] == "folders+validation-carved-from-train"
    docs = stats["documents"]
    assert docs["train"] + docs["validation"] == 31 and docs["test"] == 9
    dup = stats["duplicates"]
    assert (dup["groups"], dup["rows_dropped_across_splits"], dup["rows_merged"]) == (1, 1, 0)
    assert dup["examples"] == [["s1", "s2"]] and dup["conflicting_groups"] == 0
    frames = _prepared(tmp_path / "r")
    where = [s for s, df in frames.items() if df["id"].is_in(["s1", "s2"]).any()]
    assert where in (["train"], ["validation"])
    assert frames[where[0]].filter(pl.col("id").is_in(["s1", "s2"]))["id"].to_list() == ["s1"]


@pytest.mark.parametrize(
    "folders, missing", [(["test"], "train"), (["validation", "test"], "train"), (["train", "dev"], "test")]
)
def test_split_folders_that_cannot_make_three_splits_fail_before_reading(
    tmp_path, monkeypatch, folders, missing
):
    src = tmp_path / "in"
    for name in folders:
        write_parquet(src / name / "x.parquet", corpus_table(["a", "b", "c"], [["x"], ["y"], ["x"]]))

    def no_read(*args, **kwargs):
        raise AssertionError("Ray Data read the rows before the split plan failed")

    monkeypatch.setattr(ray.data, "read_parquet", no_read)
    t0 = time.perf_counter()
    with pytest.raises(InputError, match=rf"no '{missing}/' folder, so three splits cannot be made"):
        run_prepare(_cfg(tmp_path, str(src)))
    assert time.perf_counter() - t0 < 5
    assert not (tmp_path / "r" / "prepared").exists() and not (tmp_path / "r" / "label_stats.json").exists()


def test_one_id_with_two_texts_is_an_error(ray_session, tmp_path):
    src = tmp_path / "in"
    texts = ["first text", "second text", "other", "  FIRST  text", "more", "again"]
    ids = ["x1", "x1", "x2", "x3", "x4", "x5"]
    write_parquet(src / "all.parquet", corpus_table(texts, [["a"]] * 6, id=pa.array(ids)))
    with pytest.raises(
        InputError, match=r"1 id\(s\) name rows with different texts.*'x1': \['first text', 'second"
    ):
        run_prepare(_cfg(tmp_path, str(src)))
    assert not (tmp_path / "r" / "prepared").exists()


def _raw_counts(files: list[Path]) -> tuple[int, Counter, Counter]:
    """(rows with text and labels, label counts, documents per number of labels) of shards as read, with
    prepare's cleaning (labels de-duplicated, empty names dropped; blank texts and empty label sets out)."""
    docs, counts, per_doc = 0, Counter(), Counter()
    for text, labels in pl.read_parquet(files).select("text", "labels").iter_rows():
        clean = list(dict.fromkeys(lab for lab in labels or [] if lab))
        if text is None or not text.strip() or not clean:
            continue
        docs += 1
        counts.update(clean)
        per_doc[len(clean)] += 1
    return docs, counts, per_doc


def test_profile_counts_the_corpus_as_read_and_prepares_nothing(ray_session, tmp_path, monkeypatch, caplog):
    """Split folders: every split's counts as read (duplicates not merged, validation not carved from train),
    equal to a count per row; issues name their files. A flat folder is counted as train."""
    from pipeline.data.profile import run_profile

    src = tmp_path / "in"
    rng = np.random.default_rng(5)
    for split, n in (("train", 120), ("test", 40)):
        rows = [
            [f"l{j}" for j in rng.choice(12, size=int(rng.integers(1, 5)), replace=False)] for _ in range(n)
        ]
        texts = [f"{split} text {i} " + "w" * int(rng.integers(0, 400)) for i in range(n)]
        texts[0], rows[1] = "   ", rows[1] + [rows[1][0], ""]  # an empty text; a repeated and an empty label
        texts[2] = texts[3]  # a duplicate text: counted twice
        for part in range(2):
            sl = slice(part * n // 2, (part + 1) * n // 2)
            write_parquet(src / split / f"p{part}.parquet", corpus_table(texts[sl], rows[sl]))
    monkeypatch.setattr("pipeline.core.progress.PROGRESS_INTERVAL_S", 0.02)
    caplog.set_level(logging.INFO, logger="pipeline.core.progress")
    doc = run_profile(_cfg(tmp_path, str(src)))
    for what, verb in (("profile: counting", "counted"), ("profile: pairs", "read")):
        lines = _progress_lines(caplog, what)
        assert lines and all(f" / 160 rows {verb} (" in line for line in lines), (what, lines)
    on_disk = json.loads((tmp_path / "r" / "profile.json").read_text())
    assert on_disk == json.loads(json.dumps(doc))
    assert not (tmp_path / "r" / "prepared").exists() and not (tmp_path / "r" / "label_stats.json").exists()
    assert doc["split"]["method"] == "folders" and doc["documents"]["validation"] == 0
    for split in ("train", "test"):
        n, counts, per_doc = _raw_counts(sorted((src / split).glob("*.parquet")))
        assert doc["documents"][split] == n == (119 if split == "train" else 39)
        got = {lab: c[split] for lab, c in {**doc["label_counts"], **doc["zero_shot_labels"]}.items()}
        assert {lab: c for lab, c in got.items() if c} == dict(counts)
        assert doc["documents_by_label_count"][split] == [per_doc.get(k, 0) for k in range(5)]
    assert doc["row_issues"]["empty_text"]["total"] == 2
    assert set(doc["row_issues"]["empty_text"]["examples"]) == {
        str(src / "train" / "p0.parquet"),
        str(src / "test" / "p0.parquet"),
    }
    assert doc["text_length"]["train"]["max"] <= len("train text 119 ") + 400

    flat = tmp_path / "flat"
    for split in ("train", "test"):
        for f in (src / split).glob("*.parquet"):
            write_parquet(flat / f"{split}-{f.name}", pl.read_parquet(f).to_arrow())
    doc = run_profile(_cfg(tmp_path, str(flat), "run.name=flat"))
    assert doc["split"]["method"].startswith("none") and doc["documents"] == {
        "train": 158,
        "validation": 0,
        "test": 0,
    }
