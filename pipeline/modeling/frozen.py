"""The frozen-encoder model kinds: a transformer embeds each document once, without gradients, and only
linear scorers over the features train. They are the CPU mode of the transformer path and, beside the lexical
kind's TF-IDF scorer, its combination.

- ``"frozen"``: the document embedding -> dropout -> one linear scorer per label. Embedding is the costly
  step and happens once, when the train stage featurises the splits on Ray Data (and again only for new
  texts at evaluate and predict time); every epoch after that is a small linear model.
- ``"combined"``: that branch and the lexical kind's sparse scorer (:mod:`pipeline.modeling.lexical`) in one
  model. Each branch trains on its own loss (the loop minimises their sum), so each learns as it would alone;
  the model's probability is the mix ``p = w * p_lexical + (1 - w) * p_embedding`` with ``w`` chosen on the
  validation split after every epoch (:func:`choose_mix`): stacking on validation, inside one deployable
  model. The encoder brings the meaning of a document; TF-IDF the rare, word-specific labels.

Long documents: ``model.chunks`` windows of ``max_length`` tokens are read per document and their pooled
embeddings averaged (1: the first window only, as the encoder kind reads).

Files (no pickle): ``encoder/`` and ``tokenizer/`` (``save_pretrained``), ``frozen.json`` (settings), and
``frozen.safetensors`` (the scorers' weights and, for ``combined``, the mix) plus the lexical kind's
``vectorizer.json``.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn
from torch.nn import functional as F

from pipeline.modeling import encoder as encoder_kind
from pipeline.modeling import lexical as lexical_kind

if TYPE_CHECKING:
    from pipeline.modeling.model import ModelConfig

EMBEDDING = "embedding"
SETTINGS_FILE = "frozen.json"
WEIGHTS_FILE = "frozen.safetensors"
#: The mixing weights tried on validation after each epoch (0: the embedding branch alone, 1: the lexical).
MIX_GRID = tuple(round(0.1 * i, 1) for i in range(11))


class EmbeddingFeaturizer:
    """Texts -> one pooled, frozen encoder embedding per document (``embedding``, float32 [B, H])."""

    columns = (EMBEDDING,)

    def __init__(
        self,
        encoder: nn.Module,
        tokenizer: Any,
        encoder_name: str,
        pooling: str,
        max_length: int,
        chunks: int = 1,
        batch_size: int = 64,
    ) -> None:
        if pooling not in encoder_kind.DOCUMENT_POOLINGS:
            raise ValueError(f"pooling must be one of {encoder_kind.DOCUMENT_POOLINGS}, got {pooling!r}")
        if chunks < 1 or max_length < 4:
            raise ValueError(f"need chunks >= 1 and max_length >= 4, got {chunks} and {max_length}")
        self.encoder = encoder.eval()
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self.tokenizer = tokenizer
        self.encoder_name, self.pooling = encoder_name, pooling
        self.max_length, self.chunks, self.batch_size = int(max_length), int(chunks), int(batch_size)

    @classmethod
    def fit(cls, cfg: ModelConfig, texts: Iterable[str] | None) -> EmbeddingFeaturizer:
        """A pretrained encoder as it is; tiny-bert gets a WordPiece vocabulary trained on ``texts`` and
        random weights from a fixed seed (fit once per run and saved, so every process embeds alike)."""
        tokenizer = encoder_kind.build_tokenizer(cfg, texts)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            encoder = encoder_kind.build_encoder_model(cfg, 1, tokenizer).encoder
        return cls(encoder, tokenizer, cfg.encoder, cfg.pooling, cfg.max_length, cfg.chunks)

    @property
    def hidden_size(self) -> int:
        return int(self.encoder.config.hidden_size)

    def _windows(self, texts: list[str]) -> tuple[dict[str, torch.Tensor], np.ndarray]:
        """Token windows of every document (at most ``chunks`` each) and the document of each window."""
        enc = self.tokenizer(
            texts,
            truncation=True,
            max_length=self.max_length,
            padding=True,
            return_overflowing_tokens=self.chunks > 1,
            return_tensors="pt",
            return_token_type_ids=False,
        )
        owner = (
            np.asarray(enc["overflow_to_sample_mapping"], dtype=np.int64)
            if self.chunks > 1
            else np.arange(len(texts), dtype=np.int64)
        )
        keep = np.ones(len(owner), dtype=bool)
        if self.chunks > 1:  # windows come in document order: keep each document's first `chunks`
            first = np.searchsorted(owner, owner, side="left")
            keep = np.arange(len(owner)) - first < self.chunks
        idx = torch.from_numpy(np.flatnonzero(keep))
        return {k: enc[k][idx] for k in ("input_ids", "attention_mask")}, owner[keep]

    @torch.no_grad()
    def encode(self, texts: Sequence[str], fixed_width: bool = True) -> dict[str, np.ndarray]:
        """``embedding`` float32 [B, hidden]: the mean of each document's pooled window embeddings
        (``fixed_width`` is moot: the width is the encoder's hidden size)."""
        texts = [str(t) for t in texts]
        out = np.zeros((len(texts), self.hidden_size), dtype=np.float32)
        if not texts:
            return {EMBEDDING: out}
        windows, owner = self._windows(texts)
        pooled = []
        for start in range(0, len(owner), self.batch_size):
            ids = windows["input_ids"][start : start + self.batch_size]
            mask = windows["attention_mask"][start : start + self.batch_size]
            width = max(int(mask.sum(dim=1).max()), 1)  # padding to the batch's longest window only
            ids, mask = ids[:, :width], mask[:, :width]
            hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
            if self.pooling == "cls":
                pooled.append(hidden[:, 0])
            else:
                m = mask.unsqueeze(-1).to(hidden.dtype)
                pooled.append((hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0))
        vectors = torch.cat(pooled).float().numpy()
        np.add.at(out, owner, vectors)
        out /= np.maximum(np.bincount(owner, minlength=len(texts)), 1)[:, None]
        return {EMBEDDING: out}

    def settings(self) -> dict[str, Any]:
        return {
            "encoder": self.encoder_name,
            "pooling": self.pooling,
            "max_length": self.max_length,
            "chunks": self.chunks,
        }

    def digest(self) -> str:
        """Identity of the features: settings, vocabulary and the encoder's weights."""
        h = hashlib.sha256(json.dumps([self.settings(), sorted(self.tokenizer.get_vocab().items())]).encode())
        for name, tensor in sorted(self.encoder.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        self.encoder.save_pretrained(folder / encoder_kind.ENCODER_DIR)
        self.tokenizer.save_pretrained(str(folder / encoder_kind.TOKENIZER_DIR))
        (folder / SETTINGS_FILE).write_text(json.dumps(self.settings()), encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path) -> EmbeddingFeaturizer:
        from transformers import AutoTokenizer

        folder = Path(folder)
        spec = json.loads((folder / SETTINGS_FILE).read_text(encoding="utf-8"))
        encoder = encoder_kind._load_encoder(str(folder / encoder_kind.ENCODER_DIR))
        tokenizer = AutoTokenizer.from_pretrained(str(folder / encoder_kind.TOKENIZER_DIR))
        return cls(encoder, tokenizer, spec["encoder"], spec["pooling"], spec["max_length"], spec["chunks"])


class CombinedFeaturizer:
    """The lexical kind's TF-IDF columns and the frozen encoder's embedding, side by side."""

    def __init__(self, lexical: lexical_kind.TfidfFeaturizer, embedding: EmbeddingFeaturizer) -> None:
        self.lexical, self.embedding = lexical, embedding
        self.columns = (*lexical.columns, *embedding.columns)

    def encode(self, texts: Sequence[str], fixed_width: bool = True) -> dict[str, np.ndarray]:
        texts = [str(t) for t in texts]
        return {**self.lexical.encode(texts, fixed_width), **self.embedding.encode(texts, fixed_width)}

    def digest(self) -> str:
        return hashlib.sha256((self.lexical.digest() + self.embedding.digest()).encode()).hexdigest()

    def save(self, folder: str | Path) -> None:
        self.lexical.save(folder)
        self.embedding.save(folder)

    @classmethod
    def load(cls, folder: str | Path) -> CombinedFeaturizer:
        return cls(lexical_kind.TfidfFeaturizer.load(folder), EmbeddingFeaturizer.load(folder))


def _prior_logits(priors: Sequence[float] | np.ndarray, num_labels: int, eps: float = 1e-4) -> torch.Tensor:
    q = torch.as_tensor(np.asarray(priors, dtype=np.float64)).clamp(eps, 1.0 - eps)
    if q.shape != (num_labels,):
        raise ValueError(f"priors must have shape ({num_labels},), got {tuple(q.shape)}")
    return torch.log(q / (1.0 - q))


class FrozenClassifier(nn.Module):
    """Frozen-encoder embedding -> dropout -> linear: one logit per label. The whole model is its ``head``."""

    def __init__(self, hidden_size: int, num_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        if hidden_size < 1 or num_labels < 1:
            raise ValueError(f"need a hidden size and labels >= 1, got {hidden_size} and {num_labels}")
        self.hidden_size, self.num_labels, self.dropout_p = int(hidden_size), int(num_labels), float(dropout)
        self.dropout = nn.Dropout(self.dropout_p)
        self.head = nn.Linear(self.hidden_size, self.num_labels)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(embedding.to(self.head.weight.dtype)))

    @torch.no_grad()
    def init_head_bias(self, priors: Sequence[float] | np.ndarray, eps: float = 1e-4) -> None:
        """bias_i = log(q_i / (1 - q_i)) of the label base rates (see the encoder kind's)."""
        self.head.bias.copy_(_prior_logits(priors, self.num_labels, eps).to(self.head.bias))


class _Branches(nn.Module):
    """The combined kind's trainable parameters: the TF-IDF scorer and the embedding scorer."""

    def __init__(self, num_features: int, hidden_size: int, num_labels: int) -> None:
        super().__init__()
        self.lexical = lexical_kind.SparseLinear(num_features, num_labels)
        self.embedding = nn.Linear(hidden_size, num_labels)
        nn.init.normal_(self.embedding.weight, std=0.02)
        nn.init.zeros_(self.embedding.bias)


def mix_logits(branch_logits: torch.Tensor, weight: torch.Tensor | float) -> torch.Tensor:
    """logit(w * sigmoid(z_0) + (1 - w) * sigmoid(z_1)) for ``branch_logits`` [2, B, C], in log space so
    scores of rare labels far below 1e-7 keep their order (w = 0 or 1 gives that branch's logits)."""
    w = torch.as_tensor(weight, dtype=branch_logits.dtype, device=branch_logits.device)
    log_w = torch.stack([torch.log(w), torch.log1p(-w)]).view(2, *([1] * (branch_logits.dim() - 1)))
    log_p = torch.logsumexp(log_w + F.logsigmoid(branch_logits), dim=0)
    log_q = torch.logsumexp(log_w + F.logsigmoid(-branch_logits), dim=0)
    return log_p - log_q


class CombinedClassifier(nn.Module):
    """The lexical and frozen-encoder scorers; the module docstring says how they are trained and mixed.

    ``forward(..., branches=True)`` returns both branches' logits [2, B, C] (lexical first), what the training
    loop puts its loss on; otherwise the mixed logits [B, C]. ``mix`` (a buffer, saved with the weights) is w.
    """

    num_branches = 2

    def __init__(self, num_features: int, hidden_size: int, num_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        if min(num_features, hidden_size, num_labels) < 1:
            raise ValueError(
                f"need features, hidden size and labels >= 1, got {num_features}, {hidden_size}, {num_labels}"
            )
        self.num_features, self.hidden_size = int(num_features), int(hidden_size)
        self.num_labels, self.dropout_p = int(num_labels), float(dropout)
        self.dropout = nn.Dropout(self.dropout_p)
        self.head = _Branches(self.num_features, self.hidden_size, self.num_labels)
        self.register_buffer("mix", torch.tensor(0.5))

    def forward(
        self,
        term_ids: torch.Tensor,
        term_weights: torch.Tensor,
        embedding: torch.Tensor,
        branches: bool = False,
    ) -> torch.Tensor:
        dtype = self.head.embedding.weight.dtype
        z = torch.stack(
            [
                self.head.lexical(term_ids, term_weights.to(dtype)),
                self.head.embedding(self.dropout(embedding.to(dtype))),
            ]
        )
        return z if branches else mix_logits(z, self.mix)

    @torch.no_grad()
    def init_head_bias(self, priors: Sequence[float] | np.ndarray, eps: float = 1e-4) -> None:
        """Both branches start at the label base rates (log-odds)."""
        bias = _prior_logits(priors, self.num_labels, eps)
        self.head.lexical.bias.copy_(bias.to(self.head.lexical.bias))
        self.head.embedding.bias.copy_(bias.to(self.head.embedding.bias))


def mix_scores(s0: np.ndarray, s1: np.ndarray, w: float) -> np.ndarray:
    """``w * s0 + (1 - w) * s1`` in float32: the mix of a combined model's branch probabilities."""
    return np.float32(w) * s0 + np.float32(1.0 - w) * s1


def choose_mix(branch_scores: Any, score: Any, grid: Sequence[float] = MIX_GRID) -> tuple[float, Any]:
    """The weight w of ``grid`` whose mix ``w * s_0 + (1 - w) * s_1`` of the branches' probabilities scores
    highest by ``score(mixed) -> (value, anything)``; returns (w, that anything). Ties go to the earlier w.

    ``branch_scores``: the two branches' arrays, or blocks with a ``mixed(w)`` method that mixes them block
    by block (``pipeline.training.validation_scores.RankBlocks``)."""
    mixed = getattr(branch_scores, "mixed", None)
    if mixed is None:
        if len(branch_scores) != 2:
            raise ValueError(f"expected the scores of 2 branches, got {len(branch_scores)}")
        s0, s1 = (np.asarray(s, dtype=np.float32) for s in branch_scores)
        mixed = functools.partial(mix_scores, s0, s1)
    best: tuple[float, float, Any] | None = None
    for w in grid:
        value, extra = score(mixed(w))
        if best is None or value > best[1]:
            best = (float(w), float(value), extra)
    assert best is not None, "grid is empty"
    return best[0], best[2]


# ------------------------------------------------------------------------------------------------ files


def save_frozen(model: FrozenClassifier | CombinedClassifier, featurizer: Any, folder: Path) -> None:
    """A frozen or combined model's files in ``folder`` (which exists)."""
    featurizer.save(folder)
    if isinstance(model, CombinedClassifier):
        head = model.head
        tensors = {
            "lexical.weight": head.lexical.bag.weight,
            "lexical.bias": head.lexical.bias,
            "embedding.weight": head.embedding.weight,
            "embedding.bias": head.embedding.bias,
            "mix": model.mix,
        }
    else:
        tensors = {"embedding.weight": model.head.weight, "embedding.bias": model.head.bias}
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in tensors.items()},
        str(folder / WEIGHTS_FILE),
        metadata={"dropout": str(model.dropout_p)},
    )


def load_frozen(folder: Path, combined: bool) -> tuple[nn.Module, Any]:
    """The model and featurizer of a folder written by :func:`save_frozen`."""
    from safetensors import safe_open

    with safe_open(str(folder / WEIGHTS_FILE), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a mapping)
        dropout = float((f.metadata() or {}).get("dropout", 0.1))
    weight = tensors["embedding.weight"]  # [labels, hidden]
    if combined:
        featurizer: Any = CombinedFeaturizer.load(folder)
        lex = tensors["lexical.weight"]
        if lex.shape[0] != featurizer.lexical.num_features:
            raise ValueError(
                f"{folder}: weights have {lex.shape[0]} rows but the vocabulary has "
                f"{featurizer.lexical.num_features}"
            )
        model: nn.Module = CombinedClassifier(lex.shape[0], weight.shape[1], weight.shape[0], dropout)
        model.head.lexical.bag.weight.data.copy_(lex)
        model.head.lexical.bias.data.copy_(tensors["lexical.bias"])
        model.head.embedding.weight.data.copy_(weight)
        model.head.embedding.bias.data.copy_(tensors["embedding.bias"])
        model.mix.copy_(tensors["mix"])
        hidden = featurizer.embedding.hidden_size
    else:
        featurizer = EmbeddingFeaturizer.load(folder)
        model = FrozenClassifier(weight.shape[1], weight.shape[0], dropout)
        model.head.weight.data.copy_(weight)
        model.head.bias.data.copy_(tensors["embedding.bias"])
        hidden = featurizer.hidden_size
    if hidden != weight.shape[1]:
        raise ValueError(f"{folder}: the scorer reads {weight.shape[1]} dimensions, the encoder has {hidden}")
    return model, featurizer
