"""The lexical model kind: TF-IDF word n-grams -> one linear scorer per label.

On wide, long-tailed label spaces a sparse linear model is the baseline users compare against (LibMultiLabel's
one-vs-rest, napkinXC, PECOS all start from TF-IDF): rare labels are often named by a few specific words that
a short encoder window never reads. Here the linear layer is trained with the project's losses by the same
Ray Train loop as the encoder kind, so the balanced losses, sampling, thresholds and reports all apply.

Features are scikit-learn's ``TfidfVectorizer`` (fitted on the training texts); each document keeps its
``max_terms`` highest-weighted terms as fixed-width ``term_ids`` / ``term_weights`` columns (zero-weight
padding), which Ray Data stacks like token ids. The scorer is an ``EmbeddingBag`` in sum mode: with
per-sample weights it computes ``x @ W + b`` for a sparse ``x``, and its dense gradient made an AdamW step
about 8x faster here than ``torch.sparse.mm`` on a CSR batch (EURLEX57K, 100k features x 4,108 labels).

Saved without pickle: ``vectorizer.json`` (settings, the vocabulary in column order, idf) and
``lexical.safetensors`` (``weight`` [features, labels], ``bias``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from pipeline.core.config import LexicalSection
from pipeline.core.errors import InputError

VECTORIZER_FILE = "vectorizer.json"
WEIGHTS_FILE = "lexical.safetensors"
TERM_IDS, TERM_WEIGHTS = "term_ids", "term_weights"


def lexical_settings(cfg: LexicalSection | Mapping[str, Any] | None) -> LexicalSection:
    """``model.lexical`` as its typed section (a dict from a saved model config is checked the same way)."""
    if cfg is None:
        return LexicalSection()
    if isinstance(cfg, LexicalSection):
        return cfg
    return LexicalSection.model_validate(dict(cfg))


class TfidfFeaturizer:
    """Texts -> the ``max_terms`` highest TF-IDF weights of each document, as two fixed-width columns."""

    columns = (TERM_IDS, TERM_WEIGHTS)

    def __init__(self, vectorizer: Any, max_terms: int) -> None:
        self.vectorizer = vectorizer
        self.max_terms = int(max_terms)

    @classmethod
    def fit(cls, texts: Iterable[str], cfg: LexicalSection) -> TfidfFeaturizer:
        """Fit the vocabulary and idf on ``texts`` (one pass; a generator is fine)."""
        from sklearn.feature_extraction.text import TfidfVectorizer

        vectorizer = TfidfVectorizer(
            ngram_range=(1, cfg.ngrams),
            min_df=cfg.min_df,
            max_features=cfg.max_features,
            sublinear_tf=cfg.sublinear_tf,
            lowercase=cfg.lowercase,
            dtype=np.float32,
        )
        try:
            vectorizer.fit(str(t) for t in texts)
        except ValueError as e:  # "empty vocabulary; perhaps the documents only contain stop words"
            raise InputError(f"lexical features: {e} (lower model.lexical.min_df?)") from e
        return cls(vectorizer, cfg.max_terms)

    @property
    def num_features(self) -> int:
        return len(self.vectorizer.vocabulary_)

    def terms(self) -> list[str]:
        """The vocabulary in column order."""
        return self.vectorizer.get_feature_names_out().tolist()

    def digest(self) -> str:
        """Identity of the features (a checkpoint is resumed only with the same ones)."""
        blob = json.dumps([self._settings(), self.terms()]).encode()
        h = hashlib.sha256(blob)
        h.update(np.ascontiguousarray(self.vectorizer.idf_, dtype=np.float32).tobytes())
        return h.hexdigest()

    def encode(self, texts: Sequence[str], fixed_width: bool = True) -> dict[str, np.ndarray]:
        """``term_ids`` (int64) and ``term_weights`` (float32), [B, width]; padding has weight 0 (and id 0).

        ``fixed_width``: width ``max_terms`` (Ray Data stacks batches into one tensor); otherwise the batch's
        longest document, at most ``max_terms``.
        """
        x = self.vectorizer.transform([str(t) for t in texts]).tocsr()
        lengths = np.minimum(np.diff(x.indptr), self.max_terms)
        width = self.max_terms if fixed_width else max(int(lengths.max(initial=0)), 1)
        ids = np.zeros((x.shape[0], width), dtype=np.int64)
        weights = np.zeros((x.shape[0], width), dtype=np.float32)
        for r in range(x.shape[0]):
            lo, hi = x.indptr[r], x.indptr[r + 1]
            cols, vals = x.indices[lo:hi], x.data[lo:hi]
            if hi - lo > self.max_terms:  # keep the strongest terms
                keep = np.argpartition(-vals, self.max_terms - 1)[: self.max_terms]
                cols, vals = cols[keep], vals[keep]
            ids[r, : len(cols)] = cols
            weights[r, : len(vals)] = vals
        return {TERM_IDS: ids, TERM_WEIGHTS: weights}

    def _settings(self) -> dict[str, Any]:
        v = self.vectorizer
        return {
            "ngram_range": list(v.ngram_range),
            "lowercase": bool(v.lowercase),
            "sublinear_tf": bool(v.sublinear_tf),
            "token_pattern": v.token_pattern,
            "norm": v.norm,
            "max_terms": self.max_terms,
        }

    def save(self, folder: str | Path) -> None:
        """``vectorizer.json`` in ``folder``: the settings, the vocabulary in column order and the idf
        (float32 values written as JSON numbers read back exactly)."""
        idf = np.asarray(self.vectorizer.idf_, dtype=np.float32).tolist()
        Path(folder, VECTORIZER_FILE).write_text(
            json.dumps({**self._settings(), "terms": self.terms(), "idf": idf}), encoding="utf-8"
        )

    @classmethod
    def load(cls, folder: str | Path) -> TfidfFeaturizer:
        from sklearn.feature_extraction.text import TfidfVectorizer

        spec = json.loads(Path(folder, VECTORIZER_FILE).read_text(encoding="utf-8"))
        terms, idf = spec["terms"], spec["idf"]
        if len(terms) != len(idf):
            raise ValueError(f"{folder}: {len(terms)} terms but {len(idf)} idf values")
        vectorizer = TfidfVectorizer(
            ngram_range=tuple(spec["ngram_range"]),
            lowercase=spec["lowercase"],
            sublinear_tf=spec["sublinear_tf"],
            token_pattern=spec["token_pattern"],
            norm=spec["norm"],
            vocabulary={t: i for i, t in enumerate(terms)},
            dtype=np.float32,
        )
        vectorizer.idf_ = np.asarray(idf, dtype=np.float32)
        return cls(vectorizer, spec["max_terms"])


class SparseLinear(nn.Module):
    """``x @ W + b`` for a sparse ``x`` given as (term ids, term weights) per row."""

    def __init__(self, num_features: int, num_labels: int, weight: torch.Tensor | None = None) -> None:
        super().__init__()
        # A linear model starts at its prior (the bias), not at random scores: zero weights, or the given
        # ones. Passed in rather than filled after EmbeddingBag's own random init, which took about 2 s per
        # scoring actor at 7,900 labels (measured with py-spy) only to be overwritten.
        if weight is None:
            weight = torch.zeros(num_features, num_labels)
        self.bag = nn.EmbeddingBag(num_features, num_labels, mode="sum", _weight=weight)
        self.bias = nn.Parameter(torch.zeros(num_labels))
        self.out_features = num_labels

    def forward(self, term_ids: torch.Tensor, term_weights: torch.Tensor) -> torch.Tensor:
        if term_ids.is_cuda:  # a boolean mask would wait for the device (its size is data-dependent)
            return self.bag(term_ids, per_sample_weights=term_weights) + self.bias
        # On a CPU the padding (weight 0) is dropped and the rows passed as flat bags: the sums are the
        # same, but EmbeddingBag's backward scatters every position, and on EURLEX57K (1,024 columns, 495
        # terms a document on average) the padding took about 15% of it.
        keep = term_weights != 0
        counts = keep.sum(dim=1)
        offsets = torch.cumsum(counts, 0) - counts
        return self.bag(term_ids[keep], offsets, per_sample_weights=term_weights[keep]) + self.bias


class LexicalClassifier(nn.Module):
    """TF-IDF terms -> one logit per label; the whole model is its ``head`` (what ``head_lr`` applies to)."""

    def __init__(self, num_features: int, num_labels: int, weight: torch.Tensor | None = None) -> None:
        super().__init__()
        if num_features < 1 or num_labels < 1:
            raise ValueError(f"need >= 1 feature and label, got {num_features} and {num_labels}")
        self.num_features, self.num_labels = int(num_features), int(num_labels)
        self.head = SparseLinear(self.num_features, self.num_labels, weight)

    def forward(self, term_ids: torch.Tensor, term_weights: torch.Tensor) -> torch.Tensor:
        """Logits [B, C]."""
        return self.head(term_ids, term_weights.to(self.head.bias.dtype))

    @torch.no_grad()
    def init_head_bias(self, priors: Sequence[float] | np.ndarray, eps: float = 1e-4) -> None:
        """bias_i = log(q_i / (1 - q_i)) of the label base rates (see the encoder kind's)."""
        q = torch.as_tensor(np.asarray(priors, dtype=np.float64)).clamp(eps, 1.0 - eps)
        if q.shape != (self.num_labels,):
            raise ValueError(f"priors must have shape ({self.num_labels},), got {tuple(q.shape)}")
        self.head.bias.copy_(torch.log(q / (1.0 - q)).to(self.head.bias))

    def weight_matrix(self) -> torch.Tensor:
        """W [features, labels]."""
        return self.head.bag.weight


def save_lexical(model: LexicalClassifier, featurizer: TfidfFeaturizer, folder: Path) -> None:
    """The lexical model's files in ``folder`` (which exists)."""
    featurizer.save(folder)
    head = model.head
    save_file(
        {
            "weight": head.bag.weight.detach().cpu().contiguous(),
            "bias": head.bias.detach().cpu().contiguous(),
        },
        str(folder / WEIGHTS_FILE),
    )


def load_lexical(folder: Path) -> tuple[LexicalClassifier, TfidfFeaturizer]:
    tensors = load_file(str(folder / WEIGHTS_FILE))
    featurizer = TfidfFeaturizer.load(folder)
    weight = tensors["weight"]
    if weight.shape[0] != featurizer.num_features:
        raise ValueError(
            f"{folder}: weights have {weight.shape[0]} rows but the vocabulary has {featurizer.num_features}"
        )
    model = LexicalClassifier(weight.shape[0], weight.shape[1], weight.float())
    model.head.bias.data.copy_(tensors["bias"])
    return model, featurizer
