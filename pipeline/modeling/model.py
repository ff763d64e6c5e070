"""The model seam: one interface for every model kind, and the Ray-free ``model/`` folder they share.

A model kind is a module of its own behind two small objects that training, evaluation, thresholds, predict
and retraining use without knowing the kind:

- a **featurizer**: ``columns`` (the feature columns, also the model's forward keyword arguments),
  ``encode(texts, fixed_width=True) -> {column: array [B, width]}`` and ``digest()`` (the identity a
  resumed checkpoint must match);
- a **model**: a ``torch.nn.Module`` whose ``forward(**features)`` returns logits [B, C], with a ``head``
  (the parameters ``train.head_lr`` applies to) and ``init_head_bias(priors)``.

Kinds (``model.kind``): ``"encoder"`` (:mod:`pipeline.modeling.encoder`: a transformer with a pooled linear
head), ``"lexical"`` (:mod:`pipeline.modeling.lexical`: TF-IDF n-grams and one linear scorer per label), and
``"frozen"`` / ``"combined"`` (:mod:`pipeline.modeling.frozen`: linear scorers over a frozen encoder's
embeddings, alone or mixed with the lexical scorer). A model with ``num_branches`` > 1 also answers
``forward(**features, branches=True)`` with each branch's logits [K, B, C] (the training loss goes on each)
and keeps its mixing weight ``mix`` chosen on validation.
Adding a kind means a module with its featurizer, model, save and load, ``KINDS`` and the config's
``model.kind`` extended, and a branch in this module's ``fit_featurizer``, ``build_model``, ``unwrap``,
``save_model`` and ``load_model``.

Nothing here imports Ray: a saved ``model/`` folder must load and predict on a laptop without a cluster::

    model/
      model_config.json   kind, labels, num_labels, model (full config), format_version, the kind's own keys,
                          the caller's extra_config (e.g. the loss used), and model_id: a digest of every
                          other file and of this metadata (thresholds and predictions record it)
      ...                 the kind's files: encoder/, tokenizer/, head.pt (encoder);
                          vectorizer.json, lexical.safetensors (lexical); encoder/, tokenizer/, frozen.json,
                          frozen.safetensors (+ vectorizer.json for combined)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from pipeline.core.layout import MODEL_CONFIG_FILE
from pipeline.modeling import encoder as encoder_kind
from pipeline.modeling import frozen as frozen_kind
from pipeline.modeling import lexical as lexical_kind
from pipeline.modeling.encoder import DOCUMENT_POOLINGS, POOLINGS, SPECIAL_TOKENS, TINY_BERT

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CONFIG_FILE = MODEL_CONFIG_FILE
ENCODER, LEXICAL, FROZEN, COMBINED = "encoder", "lexical", "frozen", "combined"
KINDS = (ENCODER, LEXICAL, FROZEN, COMBINED)
#: The classes of each kind's model (what ``unwrap`` looks for under DDP wrappers).
_MODEL_CLASSES = {
    ENCODER: encoder_kind.MultiLabelClassifier,
    LEXICAL: lexical_kind.LexicalClassifier,
    FROZEN: frozen_kind.FrozenClassifier,
    COMBINED: frozen_kind.CombinedClassifier,
}


class Featurizer(Protocol):
    """Texts -> the feature columns a model kind reads (see the module docstring)."""

    columns: tuple[str, ...]

    def encode(self, texts: Sequence[str], fixed_width: bool = True) -> dict[str, np.ndarray]: ...

    def digest(self) -> str: ...


@dataclass
class ModelConfig:
    """Model hyperparameters; plain so the pydantic config can wrap it (``ModelConfig(**d)`` works).

    ``hidden_size`` .. ``vocab_size`` shape only the embedded ``tiny-bert``; pretrained encoders bring theirs.
    """

    kind: str = ENCODER
    encoder: str = TINY_BERT
    pooling: str = "cls"
    dropout: float = 0.1
    max_length: int = 128
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 2
    intermediate_size: int = 256
    vocab_size: int = 8000
    lowercase: bool = True
    #: frozen / combined kinds: windows of max_length tokens embedded per document, then averaged.
    chunks: int = 1
    #: The lexical kind's settings (``model.lexical``; see pipeline.core.config.LexicalSection).
    lexical: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Fail at construction, not deep inside a training worker."""
        if self.kind not in KINDS:
            raise ValueError(f"model.kind must be one of {KINDS}, got {self.kind!r}")
        self.lexical = lexical_kind.lexical_settings(self.lexical).model_dump()
        if self.chunks < 1:
            raise ValueError(f"model.chunks must be >= 1, got {self.chunks}")
        if self.chunks > 1 and self.kind not in (FROZEN, COMBINED):
            raise ValueError(
                f"model.chunks={self.chunks}: reading several windows per document is done by the frozen and "
                f"combined kinds; model.kind={self.kind} reads the first max_length tokens"
            )
        if self.pooling not in POOLINGS:
            raise ValueError(f"model.pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.kind in (FROZEN, COMBINED) and self.pooling not in DOCUMENT_POOLINGS:
            raise ValueError(
                f"model.pooling={self.pooling} needs the token states in training: the encoder kind only "
                f"(the {self.kind} kind embeds each document once: pooling one of {DOCUMENT_POOLINGS})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.max_length < 4:
            raise ValueError(f"model.max_length must be >= 4 (room for [CLS]/[SEP]), got {self.max_length}")
        if self.encoder == TINY_BERT:
            if self.hidden_size % self.num_heads:
                raise ValueError(
                    f"model.hidden_size ({self.hidden_size}) must be divisible by "
                    f"model.num_heads ({self.num_heads})"
                )
            if self.vocab_size < len(SPECIAL_TOKENS) + 1:
                raise ValueError(f"model.vocab_size must exceed the {len(SPECIAL_TOKENS)} special tokens")

    @classmethod
    def from_any(cls, cfg: ModelConfig | Mapping[str, Any] | Any) -> ModelConfig:
        """Accept a ModelConfig, a dict, or a pydantic model, so callers need not convert."""
        if isinstance(cfg, cls):
            return cfg
        if hasattr(cfg, "model_dump"):
            cfg = cfg.model_dump()
        if not isinstance(cfg, Mapping):
            raise TypeError(
                f"expected a ModelConfig, a mapping or a pydantic model, got {type(cfg).__name__}"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ValueError(f"unknown model config keys {unknown}; expected a subset of {sorted(known)}")
        return cls(**dict(cfg))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy, stored in model_config.json for provenance."""
        return asdict(self)


# ------------------------------------------------------------------------------------------------- kinds


def fit_featurizer(cfg: ModelConfig | Mapping[str, Any], texts: Callable[[], Iterable[str]]) -> Featurizer:
    """The featurizer of ``cfg.kind``; ``texts()`` streams the training texts when the kind learns from them
    (tiny-bert's WordPiece vocabulary, the lexical vocabulary and idf)."""
    cfg = ModelConfig.from_any(cfg)
    if cfg.kind == LEXICAL:
        return lexical_kind.TfidfFeaturizer.fit(texts(), lexical_kind.lexical_settings(cfg.lexical))
    if cfg.kind in (FROZEN, COMBINED):
        embedding = frozen_kind.EmbeddingFeaturizer.fit(cfg, texts() if cfg.encoder == TINY_BERT else None)
        if cfg.kind == FROZEN:
            return embedding
        lexical = lexical_kind.TfidfFeaturizer.fit(texts(), lexical_kind.lexical_settings(cfg.lexical))
        return frozen_kind.CombinedFeaturizer(lexical, embedding)
    tokenizer = encoder_kind.build_tokenizer(cfg, texts() if cfg.encoder == TINY_BERT else None)
    return encoder_kind.TokenFeaturizer(tokenizer, cfg.max_length)


def fitted_features(cfg: ModelConfig | Mapping[str, Any]) -> tuple[str, list[Any]] | None:
    """Where a run keeps the featurizer its kind fits on the training texts (a folder name under the run) and
    the settings it depends on besides the data; None when nothing is fitted (a pretrained tokenizer)."""
    cfg = ModelConfig.from_any(cfg)
    if cfg.kind == LEXICAL:
        return "features", ["lexical", cfg.lexical]
    if cfg.kind in (FROZEN, COMBINED):  # the encoder is kept with the run too: resumed runs embed alike
        return "features", [cfg.kind, {k: v for k, v in cfg.to_dict().items() if k != "dropout"}]
    if cfg.encoder == TINY_BERT:  # the folder and key of runs made before model kinds existed: they resume
        return "tokenizer", [cfg.vocab_size, cfg.lowercase]
    return None


def save_featurizer(featurizer: Featurizer, folder: str | os.PathLike[str]) -> None:
    """A fitted featurizer's files in ``folder`` (read back by :func:`load_featurizer`)."""
    if hasattr(featurizer, "save"):
        featurizer.save(folder)
    else:
        featurizer.tokenizer.save_pretrained(os.fspath(folder))


def load_featurizer(cfg: ModelConfig | Mapping[str, Any], folder: str | os.PathLike[str]) -> Featurizer:
    cfg = ModelConfig.from_any(cfg)
    if cfg.kind == LEXICAL:
        return lexical_kind.TfidfFeaturizer.load(folder)
    if cfg.kind == FROZEN:
        return frozen_kind.EmbeddingFeaturizer.load(folder)
    if cfg.kind == COMBINED:
        return frozen_kind.CombinedFeaturizer.load(folder)
    from transformers import AutoTokenizer

    return encoder_kind.TokenFeaturizer(AutoTokenizer.from_pretrained(os.fspath(folder)), cfg.max_length)


def build_model(cfg: ModelConfig | Mapping[str, Any], num_labels: int, featurizer: Any) -> nn.Module:
    """A fresh model of ``cfg.kind`` over ``featurizer``'s features (seed the RNG before calling).

    The encoder kind also takes a bare tokenizer as ``featurizer``.
    """
    cfg = ModelConfig.from_any(cfg)
    if cfg.kind == LEXICAL:
        if not isinstance(featurizer, lexical_kind.TfidfFeaturizer):
            raise TypeError(f"the lexical kind needs a TfidfFeaturizer, got {type(featurizer).__name__}")
        return lexical_kind.LexicalClassifier(featurizer.num_features, num_labels)
    if cfg.kind == FROZEN:
        if not isinstance(featurizer, frozen_kind.EmbeddingFeaturizer):
            raise TypeError(f"the frozen kind needs an EmbeddingFeaturizer, got {type(featurizer).__name__}")
        return frozen_kind.FrozenClassifier(featurizer.hidden_size, num_labels, cfg.dropout)
    if cfg.kind == COMBINED:
        if not isinstance(featurizer, frozen_kind.CombinedFeaturizer):
            raise TypeError(f"the combined kind needs a CombinedFeaturizer, got {type(featurizer).__name__}")
        return frozen_kind.CombinedClassifier(
            featurizer.lexical.num_features, featurizer.embedding.hidden_size, num_labels, cfg.dropout
        )
    tokenizer = featurizer.tokenizer if isinstance(featurizer, encoder_kind.TokenFeaturizer) else featurizer
    return encoder_kind.build_encoder_model(cfg, num_labels, tokenizer)


def as_featurizer(featurizer: Any, max_length: int) -> Featurizer:
    """A featurizer as it is, a bare tokenizer wrapped as the encoder kind's."""
    if hasattr(featurizer, "columns") and hasattr(featurizer, "encode"):
        return featurizer
    return encoder_kind.TokenFeaturizer(featurizer, max_length)


# ---------------------------------------------------------------------------------------------- save/load


def unwrap(model: nn.Module) -> nn.Module:
    """Strip DDP / prepare_model wrappers so the saved weights carry no ``module.`` prefix."""
    while not isinstance(model, tuple(_MODEL_CLASSES.values())):
        if not hasattr(model, "module"):
            raise TypeError(
                f"expected a model of a known kind (maybe DDP-wrapped), got {type(model).__name__}"
            )
        model = model.module
    return model


def kind_of(model: nn.Module) -> str:
    clf = unwrap(model)
    return next(kind for kind, cls in _MODEL_CLASSES.items() if type(clf) is cls)


def _check_local(path: str | os.PathLike[str]) -> Path:
    """Object-store URIs are not handled here yet: fail clearly instead of creating a folder named 's3:'."""
    text = os.fspath(path)
    if "://" in text:
        raise ValueError(
            f"{text}: save_model/load_model take local paths only; copy the folder to/from storage"
        )
    return Path(text).expanduser()


def save_model(
    model: nn.Module,
    featurizer: Any,
    labels: Sequence[str],
    out_dir: str | os.PathLike[str],
    extra_config: Mapping[str, Any] | None = None,
    model_config: ModelConfig | Mapping[str, Any] | None = None,
) -> Path:
    """Write a self-contained ``model/`` folder atomically (temp sibling, then rename).

    A reader never sees a half-written folder: an existing ``out_dir`` is renamed aside, the new one
    renamed in, then the old one deleted. ``extra_config`` (e.g. the loss and its parameters) is merged
    into model_config.json; it may not override the reserved keys. The encoder kind also takes a bare
    tokenizer as ``featurizer``.
    """
    clf = unwrap(model)
    kind = kind_of(clf)
    labels = [str(x) for x in labels]
    if len(labels) != clf.num_labels:
        raise ValueError(f"{len(labels)} labels given but the head has {clf.num_labels} outputs")
    if len(set(labels)) != len(labels):
        raise ValueError("labels must be unique")
    out = _check_local(out_dir)
    cfg_dict = ModelConfig.from_any(model_config).to_dict() if model_config is not None else None
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "labels": labels,
        "num_labels": clf.num_labels,
        "model": cfg_dict,
    }
    if kind == ENCODER:
        featurizer = as_featurizer(featurizer, clf.max_length)
        meta.update(
            encoder=clf.encoder_name, pooling=clf.pooling, dropout=clf.dropout_p, max_length=clf.max_length
        )
    elif kind == LEXICAL:
        meta["num_features"] = clf.num_features
    else:
        meta["encoder"] = featurizer.embedding.encoder_name if kind == COMBINED else featurizer.encoder_name
    clash = sorted(set(extra_config or {}) & {*meta, "model_id"})
    if clash:
        raise ValueError(f"extra_config may not override reserved keys {clash}")
    meta.update(extra_config or {})
    json.dumps(meta)  # fail on non-JSON extras before touching disk

    out.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    tmp = out.parent / f".{out.name}.tmp-{tag}"
    try:
        tmp.mkdir()
        if kind == ENCODER:
            encoder_kind.save_encoder(clf, featurizer, tmp)
        elif kind == LEXICAL:
            lexical_kind.save_lexical(clf, featurizer, tmp)
        else:
            frozen_kind.save_frozen(clf, featurizer, tmp)
        meta["model_id"] = folder_digest(tmp, meta)
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True), encoding="utf-8")
        _replace_dir(tmp, out, tag)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def folder_digest(folder: Path, meta: Mapping[str, Any]) -> str:
    """sha256 (first 16 hex digits) of ``meta`` and of every file under ``folder`` but model_config.json,
    names and contents in sorted order: the model's identity, ``model_id``."""
    h = hashlib.sha256(json.dumps(dict(meta), sort_keys=True).encode())
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != CONFIG_FILE):
        h.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def _replace_dir(new: Path, target: Path, tag: str) -> None:
    """Swap ``new`` into ``target``; on failure put the old folder back so a model is always there."""
    if not target.exists():
        os.replace(new, target)
        return
    old = target.parent / f".{target.name}.old-{tag}"
    os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


@dataclass
class LoadedModel:
    """A saved model ready to score texts, without Ray."""

    model: nn.Module
    featurizer: Featurizer
    labels: list[str]
    config: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.config.get("kind", ENCODER))

    @property
    def tokenizer(self) -> Any:
        """The encoder kind's tokenizer."""
        if not isinstance(self.featurizer, encoder_kind.TokenFeaturizer):
            raise AttributeError(f"a {self.kind} model has no tokenizer")
        return self.featurizer.tokenizer

    @property
    def label_to_index(self) -> dict[str, int]:
        """Column of each label in the score matrix."""
        return {label: i for i, label in enumerate(self.labels)}

    @property
    def device(self) -> torch.device:
        """Where the weights live; inputs are moved there."""
        return next(self.model.parameters()).device

    def predict_scores(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Sigmoid probabilities [N, C] (float32) in eval mode; thresholds are applied by the caller."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        texts = [str(t) for t in texts]
        self.model.eval()
        out: list[np.ndarray] = []
        with torch.no_grad():
            for start in range(0, len(texts), batch_size):
                features = self.featurizer.encode(texts[start : start + batch_size], fixed_width=False)
                logits = self.model(**{k: torch.from_numpy(v).to(self.device) for k, v in features.items()})
                out.append(torch.sigmoid(logits.float()).cpu().numpy())
        if not out:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return np.concatenate(out).astype(np.float32, copy=False)


def load_model(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> LoadedModel:
    """Load a folder written by :func:`save_model` (in eval mode on ``device``)."""
    root = _check_local(path)
    cfg_path = root / CONFIG_FILE
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path} not found: {root} is not a model folder written by save_model")
    config = json.loads(cfg_path.read_text(encoding="utf-8"))
    kind = config.get("kind", ENCODER)  # folders written before kinds existed hold an encoder
    if kind in (LEXICAL, FROZEN, COMBINED):
        if kind == LEXICAL:
            clf, featurizer = lexical_kind.load_lexical(root)
        else:
            clf, featurizer = frozen_kind.load_frozen(root, combined=kind == COMBINED)
        if clf.num_labels != len(config["labels"]):
            raise ValueError(
                f"{root}: weights have {clf.num_labels} outputs but the config lists "
                f"{len(config['labels'])} labels"
            )
    elif kind == ENCODER:
        clf, featurizer = encoder_kind.load_encoder(root, config)
    else:
        raise ValueError(f"{root}: unknown model kind {kind!r} (this version knows {KINDS})")
    clf.to(device).eval()
    return LoadedModel(model=clf, featurizer=featurizer, labels=list(config["labels"]), config=config)


# ------------------------------------------------------------------------------------------ data helpers


def encode_labels(
    label_lists: Iterable[Iterable[str] | None],
    label_to_index: Mapping[str, int],
    ignore_unknown: bool = False,
) -> np.ndarray:
    """Multi-hot float32 targets [B, C] from per-row label lists.

    An unknown label is an error by default (nothing is dropped silently); pass ``ignore_unknown=True``
    only where labels outside the training vocabulary are expected and counted elsewhere.
    """
    rows = list(label_lists)
    num_labels = len(label_to_index)
    y = np.zeros((len(rows), num_labels), dtype=np.float32)
    for r, labels in enumerate(rows):
        if labels is None:
            raise ValueError(f"row {r}: labels is null; expected a list of strings (possibly empty)")
        for label in labels:
            j = label_to_index.get(label)
            if j is None:
                if ignore_unknown:
                    continue
                raise KeyError(
                    f"row {r}: label {label!r} is not in the label vocabulary ({num_labels} labels)"
                )
            y[r, j] = 1.0
    return y


def label_priors(y: np.ndarray) -> np.ndarray:
    """Per-label base rate q_i = n_i / N of a multi-hot matrix (input of ``init_head_bias``)."""
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 2 or y.shape[0] == 0:
        raise ValueError(f"expected a non-empty [N, C] matrix, got shape {y.shape}")
    return y.mean(axis=0)


__all__ = [
    "COMBINED",
    "ENCODER",
    "FROZEN",
    "KINDS",
    "LEXICAL",
    "Featurizer",
    "LoadedModel",
    "ModelConfig",
    "build_model",
    "encode_labels",
    "fit_featurizer",
    "fitted_features",
    "load_featurizer",
    "save_featurizer",
    "kind_of",
    "label_priors",
    "load_model",
    "save_model",
    "unwrap",
]
