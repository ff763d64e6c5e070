"""The frozen and combined model kinds without Ray: embeddings equal the encoder's pooled output (several
windows of a long document averaged), the mix of two branches in log space, the choice of the mix on
validation, and the pickle-free save/load round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from pipeline.core.config import load_config
from pipeline.modeling.frozen import (
    EMBEDDING,
    MIX_GRID,
    SETTINGS_FILE,
    WEIGHTS_FILE,
    CombinedClassifier,
    EmbeddingFeaturizer,
    choose_mix,
    mix_logits,
)
from pipeline.modeling.lexical import VECTORIZER_FILE
from pipeline.modeling.model import ModelConfig, build_model, fit_featurizer, load_model, save_model
from pipeline.training.worker import epoch_metrics, mixed_epoch_metrics
from tests.conftest import LAW_LABELS, LAW_TEXTS

TEXTS, LABELS = LAW_TEXTS, LAW_LABELS


def _cfg(**over) -> ModelConfig:
    base = {"max_length": 16, "hidden_size": 32, "intermediate_size": 64, "vocab_size": 200}
    base["pooling"] = "mean"
    return ModelConfig(**{**base, "lexical": {"min_df": 1}, **over})


def _pooled(f: EmbeddingFeaturizer, ids: list[int]) -> np.ndarray:
    """The mean of the encoder's token states of one window, computed directly."""
    with torch.no_grad():
        hidden = f.encoder(input_ids=torch.tensor([ids])).last_hidden_state
    return hidden[0].mean(dim=0).numpy()


def test_embedding_is_the_pooled_encoder_output_and_chunks_average_the_windows():
    f = fit_featurizer(_cfg(kind="frozen"), lambda: iter(TEXTS))
    short = "fishing quotas"
    ids = f.tokenizer(short)["input_ids"]
    got = f.encode([short, TEXTS[2]])[EMBEDDING]
    assert got.shape == (2, 32) and got.dtype == np.float32
    np.testing.assert_allclose(got[0], _pooled(f, ids), atol=1e-5)  # padding of the batch changes nothing

    long = " ".join(TEXTS[:4])  # about 40 tokens: windows of 14 tokens between [CLS] and [SEP]
    body = f.tokenizer(long, add_special_tokens=False)["input_ids"]
    cls, sep = f.tokenizer.cls_token_id, f.tokenizer.sep_token_id
    windows = [[cls, *body[i : i + 14], sep] for i in range(0, len(body), 14)]
    assert len(windows) >= 3
    chunked = EmbeddingFeaturizer(f.encoder, f.tokenizer, "tiny-bert", "mean", max_length=16, chunks=2)
    two = chunked.encode([long, short])[EMBEDDING]
    np.testing.assert_allclose(two[0], (_pooled(f, windows[0]) + _pooled(f, windows[1])) / 2, atol=1e-5)
    np.testing.assert_allclose(two[1], got[0], atol=1e-5)  # a one-window document is unchanged
    np.testing.assert_allclose(f.encode([long])[EMBEDDING][0], _pooled(f, windows[0]), atol=1e-5)
    assert chunked.digest() != f.digest()  # chunks change the features


def test_mix_logits_is_the_logit_of_the_probability_mix_without_underflow():
    torch.manual_seed(0)
    z = torch.randn(2, 5, 7) * 4
    for w in (0.0, 0.3, 1.0):
        p = w * torch.sigmoid(z[0]) + (1 - w) * torch.sigmoid(z[1])
        torch.testing.assert_close(torch.sigmoid(mix_logits(z, w)), p)
    torch.testing.assert_close(mix_logits(z, 1.0), z[0], atol=1e-5, rtol=1e-5)
    # Scores around 1e-27 and 1e-31 still rank in their order (sigmoid then logit in float32 would tie them).
    far = mix_logits(torch.tensor([[[-60.0, -70.0]], [[-62.0, -72.0]]]), 0.5)
    assert far[0, 0] > far[0, 1] and torch.isfinite(far).all()
    np.testing.assert_allclose(float(far[0, 0]), np.log(0.5 * np.exp(-60) + 0.5 * np.exp(-62)), rtol=1e-5)


def test_the_mix_is_chosen_on_validation_by_the_checkpoint_metric():
    rng = np.random.default_rng(0)
    y = (rng.random((200, 6)) < 0.2).astype(np.int8)
    good = (y * 0.5 + rng.random(y.shape)).astype(np.float32) / 1.5  # informative, not perfect
    noise = rng.random(y.shape).astype(np.float32)
    ys = sp.csr_matrix(y)
    for metric in ("val_macro_ap", "val_tuned_macro_f1"):
        m = mixed_epoch_metrics(ys, [good, noise], metric, "max")
        every = [epoch_metrics(ys, w * good + (1 - w) * noise)[metric] for w in MIX_GRID]
        assert m["mix"] == MIX_GRID[int(np.argmax(every))] and m[metric] == max(every), (metric, every)
        assert m["mix"] >= 0.5  # the noise branch gets the smaller weight
    # val_loss is the branches' own loss: the mix is then chosen by the tuned macro-F1.
    by_loss = mixed_epoch_metrics(ys, [noise, good], "val_loss", "min")
    assert by_loss["mix"] == 1.0 - mixed_epoch_metrics(ys, [good, noise], "val_tuned_macro_f1", "max")["mix"]
    w, extra = choose_mix([good, noise], lambda s: (-abs(float(s.mean()) - float(good.mean())), "x"))
    assert w == 1.0 and extra == "x"
    with pytest.raises(ValueError, match="2 branches"):
        choose_mix([good], lambda s: (0.0, None))


@pytest.mark.parametrize("kind", ["frozen", "combined"])
def test_save_load_round_trip_without_pickle(tmp_path, kind):
    cfg = _cfg(kind=kind, chunks=2)
    f = fit_featurizer(cfg, lambda: iter(TEXTS))
    torch.manual_seed(1)
    model = build_model(cfg, len(LABELS), f)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    if kind == "combined":
        model.mix.fill_(0.3)
    out = save_model(model, f, LABELS, tmp_path / "model", model_config=cfg)
    files = {p.name for p in out.iterdir()}
    expected = {"model_config.json", "encoder", "tokenizer", SETTINGS_FILE, WEIGHTS_FILE}
    assert files == expected | ({VECTORIZER_FILE} if kind == "combined" else set())
    assert not list(out.rglob("*.pt")) and not list(out.rglob("*.pkl"))
    meta = json.loads((out / "model_config.json").read_text())
    assert meta["kind"] == kind and meta["model"]["chunks"] == 2 and meta["encoder"] == "tiny-bert"

    loaded = load_model(out)
    assert loaded.kind == kind and loaded.featurizer.digest() == f.digest()
    if kind == "combined":
        assert float(loaded.model.mix) == pytest.approx(0.3)
    model.eval()
    texts = [*TEXTS[:3], " ".join(TEXTS), ""]
    with torch.no_grad():
        feats = {k: torch.from_numpy(v) for k, v in f.encode(texts, fixed_width=False).items()}
        direct = torch.sigmoid(model(**feats)).numpy()
    np.testing.assert_allclose(loaded.predict_scores(texts, batch_size=2), direct, atol=1e-6)


def test_combined_branches_are_the_two_scorers():
    cfg = _cfg(kind="combined")
    f = fit_featurizer(cfg, lambda: iter(TEXTS))
    model = build_model(cfg, len(LABELS), f)
    assert isinstance(model, CombinedClassifier)
    model.init_head_bias([0.5, 0.25, 0.1])
    model.eval()
    feats = {k: torch.from_numpy(v) for k, v in f.encode(TEXTS[:2]).items()}
    with torch.no_grad():
        z = model(**feats, branches=True)
        assert z.shape == (2, 2, 3)
        # Weights start at zero (lexical) and near zero (embedding): both branches start at the priors.
        np.testing.assert_allclose(torch.sigmoid(z[0]).numpy(), [[0.5, 0.25, 0.1]] * 2, atol=1e-6)
        np.testing.assert_allclose(torch.sigmoid(z[1]).numpy(), [[0.5, 0.25, 0.1]] * 2, atol=0.05)
        torch.testing.assert_close(model(**feats), mix_logits(z, 0.5))


def test_config_checks_chunks_and_kinds():
    assert load_config(None, ["model.kind=combined", "model.chunks=4"]).model.chunks == 4
    with pytest.raises(ValueError, match="model.chunks=4 needs model.kind frozen or combined"):
        load_config(None, ["model.chunks=4"])
    with pytest.raises(ValueError, match="model.chunks=2"):
        ModelConfig(kind="lexical", chunks=2)
    with pytest.raises(TypeError, match="CombinedFeaturizer"):
        build_model(_cfg(kind="combined"), 3, fit_featurizer(_cfg(kind="frozen"), lambda: iter(TEXTS)))
