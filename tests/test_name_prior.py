"""The lexical kind's label-name prior: folded into the weights exactly, its weight chosen on validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.core.config import LexicalSection, load_config
from pipeline.data.labels import padded_indices
from pipeline.evaluation.metrics import per_label_ap
from pipeline.modeling.lexical import LexicalClassifier, TfidfFeaturizer
from pipeline.training.checkpoints import fingerprint
from pipeline.training.name_prior import (
    P_AT_1_TOLERANCE,
    apply_name_prior,
    candidates,
    choose,
    fold_into,
    label_weights,
    name_matrix,
    rows_matrix,
)

LABELS = ["fish", "tax", "rail"]
WORDS = {"fish": "fishery quota vessel", "tax": "customs tariff duty", "rail": "railway track train"}
NOISE = "regulation council article member states shall".split()


def _corpus(n: int, seed: int) -> tuple[list[str], list[list[int]]]:
    """Documents of noise words plus one or two words of each of their labels."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for _ in range(n):
        mine = sorted(rng.choice(3, size=int(rng.integers(1, 3)), replace=False).tolist())
        words = list(rng.choice(NOISE, size=6))
        for j in mine:
            words += list(rng.choice(WORDS[LABELS[j]].split(), size=int(rng.integers(1, 3))))
        texts.append(" ".join(words))
        labels.append(mine)
    return texts, labels


@pytest.fixture(scope="module")
def featurizer() -> TfidfFeaturizer:
    texts, _ = _corpus(200, 0)
    return TfidfFeaturizer.fit(texts, LexicalSection(min_df=1, ngrams=1))


class _Validation:
    """The featurised validation split's interface that apply_name_prior reads (Ray dataset-like)."""

    def __init__(self, featurizer: TfidfFeaturizer, texts: list[str], labels: list[list[int]]) -> None:
        import scipy.sparse as sp

        self.cols = featurizer.encode(texts)
        rows, cols = [i for i, ls in enumerate(labels) for _ in ls], [j for ls in labels for j in ls]
        y = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(labels), 3))
        self.cols["label_idx"] = padded_indices(y, 3)
        self.y = y

    def iter_batches(self, batch_size: int, batch_format: str):
        assert batch_format == "numpy"
        n = len(self.cols["label_idx"])
        for a in range(0, n, 7):  # several blocks, whatever batch_size says
            yield {k: v[a : a + 7] for k, v in self.cols.items()}


def _logits(model: LexicalClassifier, cols: dict) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(cols["term_ids"]), torch.as_tensor(cols["term_weights"])).numpy()


def test_folding_adds_g_times_the_name_cosine_to_every_logit(featurizer):
    torch.manual_seed(0)
    model = LexicalClassifier(featurizer.num_features, 3, torch.randn(featurizer.num_features, 3))
    names = {"fish": "Fishery ; vessel", "tax": "customs duty"}  # rail unnamed: its column stays
    mat = name_matrix(featurizer.vectorizer, LABELS, names)
    assert mat.shape == (featurizer.num_features, 3)
    np.testing.assert_allclose(np.sqrt(mat.multiply(mat).sum(0)).A1, [1, 1, 0], atol=1e-6)
    cols = featurizer.encode(["fishery vessel council", "customs tariff railway", ""])
    before = _logits(model, cols)
    x = rows_matrix(cols["term_ids"], cols["term_weights"], featurizer.num_features)
    fold_into(model, mat, np.array([2.5, 2.5, 7.0]))  # rail unnamed: its weight changes nothing
    after = _logits(model, cols)
    np.testing.assert_allclose(after, before + 2.5 * (x @ mat).toarray(), atol=1e-5)
    assert after[0, 0] > before[0, 0] + 1 and after[1, 1] > before[1, 1] + 0.5
    np.testing.assert_array_equal(after[:, 2], before[:, 2])


def test_auto_picks_the_best_validation_macro_ap_and_zero_when_names_mislead(featurizer):
    texts, labels = _corpus(60, 1)
    val = _Validation(featurizer, texts, labels)
    counts = [3, 30, 300]
    # An untrained model (all scores equal): names that describe the labels are all it has.
    blank = LexicalClassifier(featurizer.num_features, 3)
    info = apply_name_prior("auto", blank, featurizer.vectorizer, LABELS, WORDS, counts, val)
    tried = info["tried"]
    assert [(f["g"], f["k"]) for f in tried] == candidates() and info["weight"] > 0
    chosen = next(f for f in tried if (f["g"], f["k"]) == (info["weight"], info["pseudo_count"]))
    assert chosen["val_macro_ap"] > tried[0]["val_macro_ap"] + 0.2
    assert chosen["val_macro_ap"] == max(f["val_macro_ap"] for f in tried)  # all score equal before: no P@1
    got = np.nanmean(per_label_ap(val.y, _logits(blank, val.cols)))  # the folded model scores as chosen
    assert got == pytest.approx(chosen["val_macro_ap"], abs=1e-6)
    assert info["named_labels"] == 3 and info["chosen_on"].startswith("validation macro AP")
    # A model that already ranks well, and names swapped between the labels: no weight helps.
    good = LexicalClassifier(featurizer.num_features, 3)
    fold_into(good, name_matrix(featurizer.vectorizer, LABELS, WORDS), 10.0)
    swapped = {"fish": WORDS["tax"], "tax": WORDS["rail"], "rail": WORDS["fish"]}
    w = good.weight_matrix().detach().clone()
    info = apply_name_prior("auto", good, featurizer.vectorizer, LABELS, swapped, counts, val)
    assert info["weight"] == 0.0 and torch.equal(good.weight_matrix(), w)


def test_the_choice_keeps_p_at_1_and_prefers_the_smaller_prior_among_equals():
    def fig(g, k, ap, p1):
        return {"g": g, "k": k, "val_macro_ap": ap, "val_p_at_1": p1}

    base = fig(0.0, None, 0.50, 0.90)
    # The best macro AP costs more P@1 than the tolerance: the best one within it wins.
    within = fig(3.0, 10.0, 0.55, 0.90 - P_AT_1_TOLERANCE)
    figures = [base, within, fig(5.0, 10.0, 0.60, 0.90 - 2 * P_AT_1_TOLERANCE), fig(8.0, 10.0, 0.55, 0.95)]
    assert choose(figures) is within
    assert choose([base, fig(1.0, None, float("nan"), 0.95)]) is base
    assert choose([base, fig(1.0, None, 0.40, 0.95)]) is base


def test_label_weights_fade_with_a_labels_training_documents():
    np.testing.assert_allclose(label_weights(6.0, 10.0, [0, 10, 90]), [6.0, 3.0, 0.6])
    np.testing.assert_allclose(label_weights(6.0, None, [0, 10, 90]), [6.0, 6.0, 6.0])


def test_config_checks_the_name_prior_before_any_work():
    names = ["evaluate.label_names.source=names.csv"]
    cfg = load_config(None, ["model.kind=lexical", "train.name_prior=auto", *names])
    assert cfg.train.name_prior == "auto"
    assert load_config(None, ["model.kind=lexical", "train.name_prior=3", *names]).train.name_prior == 3
    from_ids = ["model.kind=lexical", "train.name_prior=auto", "evaluate.label_names.from_ids=true"]
    ids = load_config(None, from_ids)
    assert ids.evaluate.label_names.from_ids and ids.evaluate.label_names.source is None
    for bad, message in (
        (["model.kind=lexical", "train.name_prior=-1", *names], "train.name_prior must be auto or a number"),
        (["model.kind=lexical", "train.name_prior=often", *names], "name_prior"),
        (["train.name_prior=auto", *names], "needs model.kind lexical"),
        (["model.kind=lexical", "train.name_prior=auto"], "evaluate.label_names.source"),
        (["evaluate.label_names.from_ids=true", *names], "source or from_ids, not both"),
    ):
        with pytest.raises(ValueError, match=message):
            load_config(None, bad)


def test_the_name_prior_leaves_checkpoints_resumable(featurizer):
    """It is added after training: a finished run is re-exported with another weight, not retrained."""
    names = ["model.kind=lexical", "evaluate.label_names.source=names.csv"]
    off = load_config(None, names)
    on = load_config(None, [*names, "train.name_prior=auto"])
    assert fingerprint(off, LABELS, {}, featurizer) == fingerprint(on, LABELS, {}, featurizer)
    assert "name_prior" not in off.train.identity(set()) and on.train.identity(set())["name_prior"] == "auto"


def test_label_ids_read_as_names():
    from pipeline.core.config import LabelNamesSection
    from pipeline.evaluation.label_names import id_names, read_label_names

    assert id_names(["money-fx", "sun_oil", "grain", "--"]) == {
        "money-fx": "money fx",
        "sun_oil": "sun oil",
        "grain": "grain",
    }
    section = LabelNamesSection(from_ids=True)
    assert read_label_names(section, None, ["veg-oil"]) == {"veg-oil": "veg oil"}
