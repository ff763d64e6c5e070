"""Label statistics, label cleaning and the synthetic generators as pure functions (no Ray): each test runs
in about a second against a brute-force count."""

from __future__ import annotations

import hashlib
import itertools
import pickle
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest

from pipeline.core.config import SyntheticSection
from pipeline.core.errors import InputError
from pipeline.data import stats
from pipeline.data.prepare import CountRows, Normalise, _blank, _drop_unknown_labels, _row_key
from pipeline.data.sources import normalise_split_name
from pipeline.data.synthetic import generate, label_names, target_frequencies

pytestmark = pytest.mark.timeout(120)


def _block(labels, splits, keep=None, issues=None) -> pa.Table:
    n = len(labels)
    return pa.table(
        {
            "id": pa.array([f"r{i}" for i in range(n)], pa.string()),
            "labels": pa.array(labels, pa.list_(pa.string())),
            "split": pa.array(splits, pa.string()),
            "_issue": pa.array(issues or [""] * n, pa.string()),
            "_keep": pa.array(keep or [True] * n, pa.bool_()),
        }
    )


def _random_rows(rng, n_rows, n_labels, lo, hi, p=None) -> list[list[str]]:
    names = [f"l{i:03d}" for i in range(n_labels)]
    return [
        [names[j] for j in rng.choice(n_labels, size=int(rng.integers(lo, hi + 1)), replace=False, p=p)]
        for _ in range(n_rows)
    ]


def _partial(tables) -> stats.Partial:
    return stats.combine([stats.block_partial(t).column("partial")[0].as_py() for t in tables])


def _pairs(tables, candidates) -> np.ndarray:
    blobs = [stats.block_pairs(t, candidates).column("pairs")[0].as_py() for t in tables]
    return stats.combine_pairs(blobs, len(candidates))


def _brute_pairs(rows) -> Counter:
    return Counter(p for r in rows for p in itertools.combinations(sorted(r), 2))


def _brute_top(rows, k) -> list[dict]:
    ranked = sorted(_brute_pairs(rows).items(), key=lambda kv: (-kv[1], kv[0]))[:k]
    return [{"labels": list(p), "count": n} for p, n in ranked]


def test_label_counts_cardinality_and_issues_match_counter():
    rng = np.random.default_rng(0)
    rows = _random_rows(rng, 300, 40, 0, 6)
    splits = list(rng.choice(["train", "validation", "test"], size=300))
    splits[5] = None  # a row without a split counts nowhere
    keep = list(rng.random(300) > 0.1)
    issues = ["" if k else "no_labels" for k in keep]
    issues[7], keep[7] = "bad_split_value:tst", False
    tables = [
        _block(rows[a:b], splits[a:b], keep[a:b], issues[a:b]) for a, b in [(0, 100), (100, 101), (101, 300)]
    ]
    total = _partial(tables)
    for s in ("train", "validation", "test"):
        chosen = [r for r, sp, k in zip(rows, splits, keep, strict=True) if k and sp == s]
        got = total.splits[s]
        assert got.docs == len(chosen)
        assert got.cardinality_sum == sum(map(len, chosen))
        assert got.label_counts == Counter(lab for r in chosen for lab in r)
    want = Counter((i, splits[n] or "?") for n, i in enumerate(issues) if i)
    assert {(i, s): c for i, by in total.issues.items() for s, c in by.items()} == want
    assert total.examples["bad_split_value:tst"] == ["r7"]
    assert len(total.examples["no_labels"]) == stats.MAX_EXAMPLES


def test_a_block_of_one_split_counts_as_a_mixed_one():
    """A shard of a split folder (every row kept, one split: counted without the per-value split codes)
    gives the label counts of the general path."""
    rng = np.random.default_rng(4)
    rows = _random_rows(rng, 50, 20, 1, 5)
    one = _partial([_block(rows, ["test"] * 50)])
    mixed = _partial([_block(rows + [["zz"]], ["test"] * 50 + ["train"])])
    assert one.splits["test"].label_counts == mixed.splits["test"].label_counts
    assert one.splits["test"].label_counts == Counter(lab for r in rows for lab in r)
    assert not one.splits["train"].label_counts and mixed.splits["train"].label_counts == {"zz": 1}


def test_labels_per_document_and_text_lengths_match_a_per_row_count():
    """Documents by number of labels and text lengths (characters, not bytes) per split, merged over blocks
    of different histogram lengths, against a count per row; rows not kept count nowhere."""
    rng = np.random.default_rng(3)
    rows = _random_rows(rng, 200, 30, 0, 7)
    splits = list(rng.choice(["train", "validation", "test"], size=200))
    keep = list(rng.random(200) > 0.2)
    texts = ["é" * int(n) for n in rng.integers(0, 3000, size=200)]
    texts[0], texts[1] = None, ""
    tables = []
    for a, b in [(0, 7), (7, 150), (150, 200)]:
        block = _block(rows[a:b], splits[a:b], keep[a:b])
        tables.append(block.append_column("text", pa.array(texts[a:b], pa.string())))
    doc = stats.label_stats(_partial(tables), head_min=10, tail_max=3)
    for s in ("train", "validation", "test"):
        at = [n for n in range(200) if keep[n] and splits[n] == s]
        hist = Counter(len(rows[n]) for n in at)
        got = doc["documents_by_label_count"][s]
        assert got == [hist.get(k, 0) for k in range(len(got))] and len(got) == max(hist) + 1
        chars = [len(texts[n] or "") for n in at]
        length = doc["text_length"][s]
        assert length["max"] == max(chars) and length["mean"] == pytest.approx(np.mean(chars))
        bins = Counter(0 if c == 0 else c.bit_length() for c in chars)
        want = [{"at_most": 0 if k == 0 else 2**k - 1, "documents": n} for k, n in sorted(bins.items())]
        assert length["histogram"] == want
        ordered = sorted(chars)
        for q in (50, 90, 99):
            c = ordered[int(np.ceil(q / 100 * len(chars))) - 1]  # the q-th percentile row's length
            assert length[f"p{q}_at_most"] == (0 if c == 0 else 2 ** c.bit_length() - 1), (s, q)
    # A block without a text column (the tests' blocks above before the append) records no lengths.
    bare = stats.label_stats(_partial([_block(rows, splits, keep)]), head_min=10, tail_max=3)
    assert bare["text_length"]["train"] == {
        "mean": 0.0,
        "max": 0,
        "p50_at_most": None,
        "p90_at_most": None,
        "p99_at_most": None,
        "histogram": [],
    }


def test_pair_counts_exact_for_long_rows_and_small_vocabulary():
    """Rows of 70-110 labels (the old counter skipped rows above 64) over a vocabulary below the candidate
    limit: every pair count equals the brute-force count, the top pairs too, and they are flagged exact."""
    rng = np.random.default_rng(1)
    rows = _random_rows(rng, 60, 120, 70, 110)
    splits = ["train"] * 50 + ["test"] * 10  # pairs come from train only
    tables = [_block(rows[a:b], splits[a:b]) for a, b in [(0, 25), (25, 60)]]
    train_counts = _partial(tables).splits["train"].label_counts
    cands = stats.pair_candidates(train_counts, 1024)
    assert len(cands) == 120
    counts = _pairs(tables, cands)
    brute = _brute_pairs(rows[:50])
    for i, j in zip(*np.nonzero(counts), strict=True):
        assert i < j
        assert counts[i, j] == brute[tuple(sorted((cands[i], cands[j])))]
    assert counts.sum() == sum(brute.values()) > 0
    top, exact = stats.top_pairs(counts, cands, train_counts, 25)
    assert exact and top == _brute_top(rows[:50], 25)


def test_top_pairs_with_more_labels_than_candidates():
    rng = np.random.default_rng(2)
    # A head of 8 labels often together, a tail of 200 labels in a handful of rows each.
    head = [f"h{i}" for i in range(8)]
    rows = [
        [h for h in head if rng.random() < 0.6] + [f"t{j}" for j in rng.choice(200, size=3, replace=False)]
        for _ in range(150)
    ]
    table = _block(rows, ["train"] * 150)
    counts_by_label = _partial([table]).splits["train"].label_counts
    cands = stats.pair_candidates(counts_by_label, 8)
    assert sorted(cands) == head
    top, exact = stats.top_pairs(_pairs([table], cands), cands, counts_by_label, 10)
    assert exact and top == _brute_top(rows, 10)

    # Two frequent labels that never meet, and a pair just outside the candidates that always does.
    rows = [["a"]] * 30 + [["b"]] * 30 + [["c", "d"]] * 20 + [["a", "e"]] * 2
    table = _block(rows, ["train"] * len(rows))
    counts_by_label = _partial([table]).splits["train"].label_counts
    cands = stats.pair_candidates(counts_by_label, 3)
    assert cands == ["a", "b", "c"]
    top, exact = stats.top_pairs(_pairs([table], cands), cands, counts_by_label, 1)
    assert not exact and top != _brute_top(rows, 1) == [{"labels": ["c", "d"], "count": 20}]
    # With room for every label the same data is exact.
    cands = stats.pair_candidates(counts_by_label, 1024)
    top, exact = stats.top_pairs(_pairs([table], cands), cands, counts_by_label, 2)
    assert exact and top == _brute_top(rows, 2)
    assert stats.top_pairs(_pairs([table], cands), cands, counts_by_label, 0) == ([], True)


def test_label_stats_document_carries_pairs_and_flag():
    table = _block([["a", "b"], ["a", "b"], ["a"]], ["train"] * 3)
    total = _partial([table])
    doc = stats.label_stats(total, 2, 1, [{"labels": ["a", "b"], "count": 2}], False)
    assert doc["top_pairs"] == [{"labels": ["a", "b"], "count": 2}] and doc["top_pairs_exact"] is False
    assert doc["labels"] == ["a", "b"] and doc["label_counts"]["a"]["train"] == 3


def test_label_stats_lists_zero_shot_labels_apart_from_the_vocabulary():
    table = _block(
        [["a", "b"], ["a"], ["a", "new"], ["new", "b"], ["b", "only_val"]],
        ["train"] * 2 + ["test"] * 2 + ["validation"],
    )
    doc = stats.label_stats(_partial([table]), 2, 1)
    assert doc["labels"] == ["a", "b"] and set(doc["label_counts"]) == {"a", "b"}
    assert doc["zero_shot_labels"] == {
        "new": {"train": 0, "validation": 0, "test": 2},
        "only_val": {"train": 0, "validation": 1, "test": 0},
    }
    assert doc["groups"]["assignment"] == {
        "a": "head",
        "b": "tail",
        "new": "zero-shot",
        "only_val": "zero-shot",
    }
    assert doc["groups"]["sizes"] == {"head": 1, "medium": 0, "tail": 1}


def _reference_normalise(table: pa.Table, keep_empty: bool) -> dict:
    """The per-row definition Normalise vectorises."""
    out = {k: [] for k in ("id", "text", "labels", "split", "_key", "_issue", "_keep")}
    for rid, text, labs, raw in zip(
        *(table.column(c).to_pylist() for c in ("id", "text", "labels", "split")), strict=True
    ):
        clean = list(dict.fromkeys(lab for lab in (labs or []) if lab))
        key = _row_key(None if rid is None else str(rid), text or "", clean)
        split = normalise_split_name(raw) if raw is not None else None
        issue = ""
        if raw is not None and split is None:
            issue = f"bad_split_value:{raw}"
        elif text is None or not text.strip():
            issue = "empty_text"
        elif not clean:
            issue = "no_labels"
        for k, v in zip(
            out,
            [
                str(rid) if rid is not None else f"row-{key:016x}",
                text or "",
                clean,
                split,
                key,
                issue,
                not issue or (keep_empty and not issue.startswith("bad_split")),
            ],
            strict=True,
        ):
            out[k].append(v)
    return out


@pytest.mark.parametrize("id_type", [pa.string(), pa.int64()])
def test_normalise_matches_the_per_row_definition(id_type):
    texts = ["a b", None, "   ", "\x1c\u3000\t", "x", "y", "z", "dup", "dup", "w"]
    labels = [
        ["p", "q", "p"],
        ["p"],
        ["q"],
        ["q"],
        [],
        None,
        ["", None, "r", "r", ""],
        ["p"],
        ["p"],
        ["s", "p"],
    ]
    splits = ["train", "TRAIN ", "dev", "test", "tst", None, "valid", "train", "train", "x"]
    ids = [i if id_type == pa.int64() else f"id{i}" for i in range(len(texts))]
    ids[7] = ids[8] = None  # content keys: the two identical rows share one
    # A null list backed by values: its values must not leak into other rows.
    inner = pa.array(["zz", "zz"] + [lab for r in labels for lab in (r or [])], pa.string())
    lengths = [2] + [len(r or []) for r in labels]
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    mask = pa.array([True] + [r is None for r in labels])
    lab_col = pa.ListArray.from_arrays(offsets, inner, mask=mask).slice(1)
    table = pa.table(
        {
            "id": pa.array(ids, id_type),
            "text": pa.array(texts, pa.string()),
            "labels": lab_col,
            "split": pa.array(splits, pa.string()),
        }
    )
    cols = {"text": "text", "labels": "labels", "id": "id", "split": "split"}
    for keep_empty in (False, True):
        norm = Normalise(cols, True, None, True, "keep" if keep_empty else "drop")
        got = norm(table).to_pydict()
        assert got == _reference_normalise(table, keep_empty)
    assert got["_key"][7] == got["_key"][8] and got["id"][7].startswith("row-")
    assert got["_issue"][3] == "empty_text" and got["labels"][6] == ["r"] and got["labels"][0] == ["p", "q"]


def test_normalise_without_keys_cleans_and_checks_rows_alike_and_names_files():
    """The profile's pass: the same labels, splits, issues and keep decisions as with keys, no `_key` or
    `_group`, each row named by its file; a corpus that gives no split is counted as train."""
    texts = ["a b", None, "   ", "x", "y"]
    labels = [["p", "q", "p"], ["p"], ["q"], [], ["", "r", "r"]]
    path = ["/in/train/a.parquet"] * 3 + ["/in/test/b.parquet"] * 2
    table = pa.table(
        {"text": pa.array(texts), "labels": pa.array(labels, pa.list_(pa.string())), "path": path}
    )
    cols = {"text": "text", "labels": "labels", "id": "id", "split": "split"}
    split_of = {"/in/train/a.parquet": "train", "/in/test/b.parquet": "test"}
    with_keys = Normalise(cols, False, None, False, "drop", split_of_path=split_of)(table)
    no_keys = Normalise(cols, False, None, False, "drop", split_of_path=split_of, keys=False)(table)
    assert no_keys.column_names == ["id", "text", "labels", "split", "_issue", "_keep"]
    for name in ("text", "labels", "split", "_issue", "_keep"):
        assert no_keys.column(name).equals(with_keys.column(name)), name
    assert no_keys.column("id").to_pylist() == path
    flat = Normalise(cols, False, "train", False, "drop", keys=False)(table.drop_columns(["path"]))
    assert flat.column("split").to_pylist() == ["train"] * 5 and flat.column("id").null_count == 5


@pytest.mark.parametrize("policy", ["drop", "keep"])
def test_count_rows_gives_the_partial_of_the_normalised_rows(policy):
    """The profile's fused pass (partials straight from the rows) against block_partial over Normalise's
    output: counts, histograms, lengths, issues and their examples are equal, on rows with repeated, empty
    and null labels, blank texts, bad split values, and on a clean block of one split (its fast path)."""
    rng = np.random.default_rng(7)
    rows = _random_rows(rng, 300, 25, 0, 5)
    rows[3], rows[4], rows[5] = ["a", "a", "", None], None, ["", "b"]
    texts = [f"text {i} " + "é" * int(rng.integers(0, 50)) for i in range(300)]
    texts[6], texts[7] = "  \u3000", None
    splits = list(rng.choice(["train", "validation", "test", "dev", "tst"], size=300))
    path = [f"/in/{i % 3}.parquet" for i in range(300)]
    cols = {"text": "text", "labels": "labels", "id": "id", "split": "split"}

    read = []  # rows Normalise adds to its progress counter (RowProgress.counter's add.remote)
    counter = SimpleNamespace(add=SimpleNamespace(remote=read.append))

    def both(table, **kw):
        fixed, column = kw.get("fixed"), kw.get("column", False)
        norm = Normalise(cols, False, fixed, column, policy, keys=False, counter=counter)
        counted = CountRows(cols, False, fixed, column, policy)(table)
        assert counted.column("rows").to_pylist() == [table.num_rows]  # the driver's progress lines
        return [t.column("partial")[0].as_py() for t in (stats.block_partial(norm(table)), counted)]

    mixed = pa.table(
        {
            "text": pa.array(texts),
            "labels": pa.array(rows, pa.list_(pa.string())),
            "split": pa.array(splits),
            "path": pa.array(path),
        }
    )
    full = _random_rows(rng, 290, 25, 1, 5)  # every row kept: the fast path
    clean = pa.table({"text": pa.array(texts[10:]), "labels": pa.array(full, pa.list_(pa.string()))})
    cases = [(mixed, {"column": True}), (clean.slice(0, 0), {"fixed": "train"}), (clean, {"fixed": "test"})]
    for table, kw in cases:
        read.clear()
        blobs = both(table, **kw)
        assert read == [table.num_rows]
        want, got = (pickle.loads(b) for b in blobs)
        for s in stats.SPLITS:
            a, b = want.splits[s], got.splits[s]
            assert (a.docs, a.cardinality_sum, a.length_sum, a.length_max) == (
                b.docs,
                b.cardinality_sum,
                b.length_sum,
                b.length_max,
            ), s
            assert a.cardinality_hist.tolist() == b.cardinality_hist.tolist()
            assert a.length_hist.tolist() == b.length_hist.tolist()
        assert want.issues == got.issues and want.examples == got.examples
        merged = [stats.combine([b]) for b in blobs]
        assert [merged[0].splits[s].label_counts for s in stats.SPLITS] == [
            merged[1].splits[s].label_counts for s in stats.SPLITS
        ]
    assert merged[1].splits["test"].label_counts == Counter(lab for r in full for lab in r)


def test_blank_texts_are_those_python_strips_to_nothing():
    """The first-byte filter before the regex: every whitespace character of str.isspace alone, before text
    and after it; characters whose UTF-8 lead byte is shared with a space (U+20AC, U+3001); a sliced array."""
    spaces = [chr(c) for c in range(0x10000) if chr(c).isspace()]
    texts = ["", "x", "é", "\u20ac", "\u3001 ", " x", "x ", "\u3000\u00a0\x1c\t", *spaces]
    texts += [c + "word" for c in spaces] + ["word" + c for c in spaces] + [c * 3 for c in spaces]
    arr = pa.array(["pad", *texts], pa.string()).slice(1)
    assert _blank(arr).tolist() == [not t.strip() for t in texts]
    assert _blank(pa.array(["", ""], pa.string())).tolist() == [True, True]


def test_drop_unknown_labels_matches_a_filter():
    rows = [["a", "x", "b"], [], ["x"], ["c", "a"]]
    table = _block(rows, ["test"] * 4).slice(1)
    got = _drop_unknown_labels(table, ["a", "b", "c"]).column("labels").to_pylist()
    assert got == [[lab for lab in r if lab != "x"] for r in rows[1:]]


def test_label_names_sort_in_index_order():
    for n in (2, 40, 1000, 1001, 7900, 12000):
        names = label_names(n)
        assert names == sorted(names) and len(set(names)) == n
    assert label_names(40)[:2] == ["label_000", "label_001"]  # the existing configs' names
    assert label_names(7900)[-1] == "label_7899"


def test_per_document_generator_output_unchanged():
    """The default generator's output is the one every existing run and test was made with."""
    table = generate(SyntheticSection(num_docs=50, num_labels=10, words_per_doc=12, seed=3))
    digest = hashlib.sha256(repr(table.to_pydict()).encode()).hexdigest()
    assert digest == "99cbe012c3b38770b29145bd57dab172a16e29df73cd67faeead1395e0d0d9e0"


def _vectorised(**kw) -> SyntheticSection:
    base = dict(
        num_docs=800,
        num_labels=7900,
        mean_labels_per_doc=130,
        zipf_exponent=0.29,
        words_per_doc=30,
        label_words_min=1,
        label_words_max=2,
        generator="vectorised",
    )
    return SyntheticSection(**{**base, **kw})


def test_vectorised_generator_realises_the_configured_shape():
    cfg = _vectorised()
    table = generate(cfg)
    rows = table.column("labels").to_pylist()
    assert table.num_rows == 800 and all(rows)
    sizes = np.array([len(r) for r in rows])
    assert abs(sizes.mean() / 130 - 1) < 0.02
    names = label_names(7900)
    assert all(r == sorted(set(r)) for r in rows[:50])
    counts = Counter(lab for r in rows for lab in r)
    freq = np.array([counts.get(n, 0) for n in names]) / cfg.num_docs
    target = target_frequencies(7900, 0.29, 130)
    assert 0.14 < target[0] < 0.17 and 0.011 < target[-1] < 0.013
    # Frequencies follow the targets: per band of ranks, the realised mean is within a few percent.
    for band in (slice(0, 50), slice(50, 500), slice(500, 3000), slice(3000, 7900)):
        assert abs(freq[band].mean() / target[band].mean() - 1) < 0.06, band
    # Co-occurring groups: group mates meet more often than independent labels would.
    together = sum(1 for r in rows if names[0] in r and names[1] in r) / cfg.num_docs
    assert together > 1.05 * freq[0] * freq[1]
    # Label words are in the text: every document has its noise words plus 1-2 words per label.
    n_words = np.array([len(t.split()) for t in table.column("text").to_pylist()])
    assert (n_words >= 30 + sizes).all() and (n_words <= 30 + 2 * sizes + 1).all()


def test_vectorised_generator_sparse_shape_and_determinism():
    cfg = _vectorised(
        num_docs=3000,
        num_labels=1500,
        mean_labels_per_doc=3,
        zipf_exponent=1.0,
        words_per_doc=20,
        label_words_min=3,
        label_words_max=5,
    )
    a, b = generate(cfg), generate(cfg)
    assert a.equals(b)
    sizes = np.array([len(r) for r in a.column("labels").to_pylist()])
    assert sizes.min() >= 1 and abs(sizes.mean() / 3 - 1) < 0.05
    assert not a.equals(generate(cfg.model_copy(update={"seed": 1})))
    assert generate(SyntheticSection(num_docs=30, num_labels=6)).equals(
        generate(SyntheticSection(num_docs=30, num_labels=6))
    )


def test_block_pairs_blob_is_small():
    rng = np.random.default_rng(3)
    rows = _random_rows(rng, 200, 300, 100, 130)
    table = _block(rows, ["train"] * 200)
    cands = stats.pair_candidates(_partial([table]).splits["train"].label_counts, 64)
    out = stats.block_pairs(table, cands)
    r, c, n = pickle.loads(out.column("pairs")[0].as_py())
    assert len(r) <= 64 * 63 // 2 and r.dtype == np.uint16 and n.dtype == np.int32
    assert out.column("rows").to_pylist() == [200]  # for the driver's progress lines


def test_pass_progress_lines_count_what_the_driver_was_told(monkeypatch, caplog):
    """PassProgress (no actor): a line once the interval has passed, with rows done / total and an ETA."""
    import logging

    from pipeline.core import progress

    caplog.set_level(logging.INFO, logger="pipeline.core.progress")
    clock = iter([0.0, 0.5, 2.0, 2.5, 4.0])
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    p = progress.PassProgress(1000, "profile: counting", "counted", interval=1.0)
    for n in (100, 200, 300, 400):  # at 0.5 s (no line), 2.0 s (a line), 2.5 s (no line), 4.0 s (a line)
        p.add(n)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "profile: counting: 300 / 1000 rows counted (30%) in 2s, 150.0 rows/s, ETA 5s",
        "profile: counting: 1000 / 1000 rows counted (100%) in 4s, 250.0 rows/s",
    ]


def test_normalise_takes_each_rows_split_from_its_files_folder():
    """One read over every split folder: the split comes from Ray's `path` column, whatever the scheme."""
    table = pa.table(
        {
            "id": ["a", "b", "c", "d"],
            "text": ["t"] * 4,
            "labels": [["x"]] * 4,
            "path": ["bucket/in/test/p0.parquet", "/bucket/in/train/p1.parquet"] * 2,
        }
    )
    cols = {"text": "text", "labels": "labels", "id": "id", "split": "split"}
    split_of = {"s3://bucket/in/train/p1.parquet": "train", "bucket/in/test/p0.parquet": "test"}
    norm = Normalise(cols, True, None, False, "drop", split_of_path=split_of)
    got = norm(table)
    assert got.column("split").to_pylist() == ["test", "train", "test", "train"]
    assert "path" not in got.column_names
    with pytest.raises(InputError, match="other/p2.parquet"):
        norm(table.set_column(3, "path", pa.array(["bucket/in/other/p2.parquet"] * 4)))
