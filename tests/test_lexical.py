"""The lexical model kind and the model seam, without Ray: TF-IDF features, the sparse linear scorer against
scipy, the pickle-free save/load round trip, and dispatch on the saved kind."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from pydantic import ValidationError
from safetensors.torch import load_file
from sklearn.feature_extraction.text import TfidfVectorizer

from pipeline.core.config import LexicalSection, load_config
from pipeline.modeling.lexical import (
    TERM_IDS,
    TERM_WEIGHTS,
    VECTORIZER_FILE,
    WEIGHTS_FILE,
    LexicalClassifier,
    TfidfFeaturizer,
)
from pipeline.modeling.model import LEXICAL, ModelConfig, build_model, fit_featurizer, load_model, save_model
from pipeline.training.checkpoints import fingerprint
from tests.conftest import LAW_LABELS, LAW_TEXTS

TEXTS, LABELS = LAW_TEXTS, LAW_LABELS


def _featurizer(**over) -> TfidfFeaturizer:
    return TfidfFeaturizer.fit(iter(TEXTS), LexicalSection(min_df=1, **over))


def _random_model(f: TfidfFeaturizer, seed: int = 0) -> LexicalClassifier:
    torch.manual_seed(seed)
    model = LexicalClassifier(f.num_features, len(LABELS))
    with torch.no_grad():
        model.head.bag.weight.normal_()
        model.head.bias.normal_()
    return model


def test_features_are_scikit_learns_tfidf_and_the_scorer_is_x_times_w_plus_b():
    f = _featurizer(ngrams=2)
    ref = TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True, dtype=np.float32).fit(TEXTS)
    x = ref.transform(TEXTS).tocsr()
    assert f.terms() == ref.get_feature_names_out().tolist()
    enc = f.encode(TEXTS)
    assert enc[TERM_IDS].shape == enc[TERM_WEIGHTS].shape == (len(TEXTS), 1024)
    # Each row's (id, weight) pairs are exactly its CSR entries; padding has weight 0.
    rebuilt = sp.csr_matrix(
        (enc[TERM_WEIGHTS].ravel(), (np.repeat(np.arange(len(TEXTS)), 1024), enc[TERM_IDS].ravel())),
        shape=x.shape,
    )
    assert abs(rebuilt - x).max() == 0
    model = _random_model(f)
    w = model.weight_matrix().detach().numpy().astype(np.float64)
    b = model.head.bias.detach().numpy().astype(np.float64)
    logits = model(**{k: torch.from_numpy(v) for k, v in enc.items()}).detach().numpy()
    np.testing.assert_allclose(logits, x.astype(np.float64) @ w + b, rtol=1e-5, atol=1e-5)


def test_the_scorers_gradient_is_x_transposed_times_the_upstream_gradient_padding_and_empty_rows_included():
    """The padding is dropped before the bag (a speed-up): the weights' gradient must stay exactly x^T g,
    with nothing added to row 0 (the padding's id) by the padding, and a document with no terms scored by
    the bias alone."""
    f = _featurizer(ngrams=1)
    texts = [*TEXTS, "zzzz qqqq"]  # the last has no known term: an all-padding row
    enc = f.encode(texts)
    assert not enc[TERM_WEIGHTS][-1].any()
    x = f.vectorizer.transform(texts).astype(np.float64)
    model = _random_model(f)
    upstream = torch.randn(len(texts), len(LABELS), generator=torch.Generator().manual_seed(1))
    logits = model(**{k: torch.from_numpy(v) for k, v in enc.items()})
    (logits * upstream).sum().backward()
    grad = model.weight_matrix().grad.numpy()
    np.testing.assert_allclose(grad, x.T @ upstream.numpy().astype(np.float64), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(logits[-1].detach().numpy(), model.head.bias.detach().numpy())
    np.testing.assert_allclose(model.head.bias.grad.numpy(), upstream.sum(0).numpy(), rtol=1e-5)


def test_max_terms_keeps_each_documents_strongest_terms():
    f = _featurizer(ngrams=2, max_terms=3)
    x = f.vectorizer.transform(TEXTS).tocsr()
    enc = f.encode(TEXTS)
    for r in range(len(TEXTS)):
        row = x.getrow(r)
        strongest = np.sort(row.data)[::-1][:3]
        np.testing.assert_array_equal(np.sort(enc[TERM_WEIGHTS][r])[::-1], strongest)
        kept = dict(zip(row.indices, row.data, strict=True))
        for i, w in zip(enc[TERM_IDS][r], enc[TERM_WEIGHTS][r], strict=True):
            assert kept[i] == w
    # Dynamic width for scoring: the batch's longest document, capped at max_terms.
    two = f.encode(["fishing", "quotas fishing regulation baltic"], fixed_width=False)
    assert two[TERM_IDS].shape == (2, 3)
    assert f.encode(["fishing"], fixed_width=False)[TERM_IDS].shape == (1, 1)


def test_an_empty_vocabulary_is_a_clear_error():
    from pipeline.core.errors import InputError

    with pytest.raises(InputError, match="min_df"):
        TfidfFeaturizer.fit(iter(["a b", "c d"]), LexicalSection(min_df=5))


def test_save_and_load_round_trip_without_pickle(tmp_path):
    cfg = ModelConfig(kind=LEXICAL, lexical={"min_df": 1, "ngrams": 2})
    f = fit_featurizer(cfg, lambda: iter(TEXTS))
    model = build_model(cfg, len(LABELS), f)
    with torch.no_grad():
        model.head.bag.weight.normal_()
    model.init_head_bias([0.3, 0.2, 0.5])
    out = save_model(model, f, LABELS, tmp_path / "model", model_config=cfg, extra_config={"loss": "db"})
    assert {p.name for p in out.iterdir()} == {"model_config.json", VECTORIZER_FILE, WEIGHTS_FILE}
    # JSON and safetensors only: nothing a loader would unpickle.
    json.loads((out / VECTORIZER_FILE).read_text())
    assert sorted(load_file(str(out / WEIGHTS_FILE))) == ["bias", "weight"]
    meta = json.loads((out / "model_config.json").read_text())
    assert meta["kind"] == LEXICAL and meta["num_features"] == f.num_features and meta["loss"] == "db"

    loaded = load_model(out)
    assert loaded.kind == LEXICAL and loaded.labels == LABELS
    np.testing.assert_array_equal(loaded.featurizer.vectorizer.idf_, f.vectorizer.idf_)
    assert loaded.featurizer.digest() == f.digest()
    expected = torch.sigmoid(model(**{k: torch.from_numpy(v) for k, v in f.encode(TEXTS).items()}))
    got = loaded.predict_scores(TEXTS, batch_size=4)
    np.testing.assert_allclose(got, expected.detach().numpy(), atol=1e-6)
    assert loaded.predict_scores([]).shape == (0, len(LABELS))
    with pytest.raises(AttributeError, match="no tokenizer"):
        _ = loaded.tokenizer


def test_load_refuses_an_unknown_kind_and_mismatched_weights(tmp_path):
    f = _featurizer()
    out = save_model(_random_model(f), f, LABELS, tmp_path / "model")
    meta = json.loads((out / "model_config.json").read_text())
    (out / "model_config.json").write_text(json.dumps({**meta, "kind": "forest"}))
    with pytest.raises(ValueError, match="unknown model kind 'forest'"):
        load_model(out)
    (out / "model_config.json").write_text(json.dumps({**meta, "labels": LABELS[:2]}))
    with pytest.raises(ValueError, match="3 outputs but the config lists 2 labels"):
        load_model(out)


def test_config_knows_the_kinds_and_checks_lexical_settings(tmp_path):
    cfg = load_config(None, ["model.kind=lexical", "model.lexical.max_features=500"])
    assert cfg.model.kind == LEXICAL and cfg.model.lexical.max_features == 500
    for bad in (["model.kind=forest"], ["model.lexical.ngrams=0"], ["model.lexical.vocab=3"]):
        with pytest.raises((ValidationError, ValueError)):
            load_config(None, bad)
    with pytest.raises(ValueError, match="model.kind"):
        ModelConfig(kind="forest")


class _Tok:
    def __init__(self, vocab):
        self.vocab = vocab

    def get_vocab(self):
        return self.vocab


class _Feat:
    def __init__(self, vocab):
        self.tokenizer = _Tok(vocab)


def test_checkpoint_fingerprint_follows_the_features_of_the_kind_in_use():
    enc = load_config(None, [])
    enc_other_lexical = load_config(None, ["model.lexical.max_features=7"])
    feat = _Feat({"a": 0, "b": 1})
    # An encoder run's fingerprint ignores the lexical settings (and is the one of runs before kinds existed).
    assert fingerprint(enc, LABELS, {}, feat) == fingerprint(enc_other_lexical, LABELS, {}, feat)
    assert fingerprint(enc, LABELS, {}, feat) != fingerprint(enc, LABELS, {}, _Feat({"a": 0, "c": 1}))
    lex = load_config(None, ["model.kind=lexical"])
    f1, f2 = _featurizer(), _featurizer(ngrams=1)
    assert fingerprint(lex, LABELS, {}, f1) != fingerprint(lex, LABELS, {}, f2)
    assert fingerprint(lex, LABELS, {}, f1) == fingerprint(lex, LABELS, {}, _featurizer())


def test_a_new_model_starts_at_zero_weights_and_a_loaded_one_keeps_the_loaded_tensor():
    """No random init to overwrite (it cost seconds per scoring actor at 7,900 labels)."""
    model = LexicalClassifier(50, 4)
    assert not model.weight_matrix().any() and not model.head.bias.any()
    w = torch.randn(50, 4)
    loaded = LexicalClassifier(50, 4, w)
    assert loaded.weight_matrix().data_ptr() == w.data_ptr() and loaded.weight_matrix().requires_grad
