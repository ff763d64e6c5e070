"""Typed run configuration: one YAML per run, `--set a.b=c` overrides, unknown keys are errors."""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.core.loss_params import LOSS_PARAMS

#: torch's AdamW default; a run at this value keeps the fingerprint it had before train.adam_eps existed.
DEFAULT_ADAM_EPS = 1e-8


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RunSection(_Strict):
    #: The run's folder name under `output`; one run = one model, its thresholds and report. Letters,
    #: digits, `.`, `_` and `-`, starting with a letter or digit (one folder: no `/`, never `..`).
    name: str = Field("demo", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    #: Output root: a local folder or an object-store URI (s3://bucket/prefix).
    #: The run lives in <output>/<name>/.
    output: str = Field("runs", min_length=1)
    #: Seeds the split, the initial weights, sampling and data order.
    seed: int = 0


class StorageSection(_Strict):
    """Options for object stores reached through pyarrow.fs (ignored for local paths)."""

    #: host:port of an S3-compatible server (MinIO, moto); default: AWS.
    endpoint_override: str | None = None
    #: http or https for that endpoint.
    scheme: Literal["http", "https"] | None = None
    #: Credentials; default: the environment / instance profile (never logged).
    access_key: str | None = None
    #: Secret of access_key.
    secret_key: str | None = None
    #: Bucket region.
    region: str | None = None


class SyntheticSection(_Strict):
    #: Documents of the embedded synthetic corpus.
    num_docs: int = Field(3000, ge=10)
    #: Labels, with Zipf-distributed frequencies.
    num_labels: int = Field(40, ge=2)
    #: Steepness of the label frequency curve (larger: a longer tail).
    zipf_exponent: float = Field(1.4, gt=0)
    #: Mean labels per document.
    mean_labels_per_doc: float = Field(1.5, ge=1)
    #: Probability that a drawn label pulls in a partner from its co-occurrence group of three.
    cooccurrence: float = Field(0.15, ge=0, le=1)
    #: Noise words per document (the vectorised generator adds the label words to these).
    words_per_doc: int = Field(40, ge=5)
    #: Words of its own vocabulary (drawn with repetition) that each label of a document puts in its text.
    label_words_min: int = Field(3, ge=1)
    #: Upper bound of label_words_min's range.
    label_words_max: int = Field(5, ge=1)
    #: per-document: the original generator, one document at a time (mean_labels_per_doc counts the labels
    #: drawn before co-occurrence pulls; label words overwrite noise words), fine for a few labels per
    #: document. vectorised: documents in chunks, one Bernoulli draw per (document, label) with rates tuned so
    #: each label's expected document frequency, pulls included, follows the Zipf law and sums to
    #: mean_labels_per_doc; label words are inserted among the noise words. For many labels per document
    #: (80,000 x 7,900 labels x 130 per document in well under a minute).
    generator: Literal["per-document", "vectorised"] = "per-document"
    #: Parquet files written.
    num_shards: int = Field(4, ge=1)
    #: Seed of the generator.
    seed: int = 0

    @model_validator(mode="after")
    def _consistent(self) -> SyntheticSection:
        if self.label_words_max < self.label_words_min:
            raise ValueError(
                f"label_words_max ({self.label_words_max}) must be at least label_words_min "
                f"({self.label_words_min})"
            )
        if self.generator == "vectorised" and self.mean_labels_per_doc > 0.9 * self.num_labels:
            raise ValueError(
                f"mean_labels_per_doc ({self.mean_labels_per_doc:g}) must be at most 0.9 x num_labels "
                f"({self.num_labels})"
            )
        return self


class SplitSection(_Strict):
    #: Share of rows in train when the pipeline splits (iterative stratification).
    train: float = Field(0.7, gt=0, lt=1)
    #: Share in validation.
    validation: float = Field(0.15, gt=0, lt=1)
    #: Share in test; the three sum to 1.
    test: float = Field(0.15, gt=0, lt=1)
    #: Share of train carved out as validation when only train and test are given.
    validation_from_train: float = Field(0.15, gt=0, lt=1)
    #: Seed of the stratifier.
    seed: int = 0

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitSection:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split ratios train+validation+test must sum to 1, got {total:g}")
        return self


class GroupsSection(_Strict):
    """Frequency groups by training documents per label (defaults follow the published Reuters split)."""

    #: Labels with at least this many training documents are head labels.
    head_min: int = Field(35, ge=1)
    #: Labels with at most this many training documents are tail labels; between the two: medium.
    tail_max: int = Field(8, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> GroupsSection:
        if self.tail_max >= self.head_min:
            raise ValueError(
                f"groups.tail_max ({self.tail_max}) must be below groups.head_min ({self.head_min})"
            )
        return self


class DataSection(_Strict):
    #: "synthetic" (write the embedded corpus under the run) or a folder / glob / URI of Parquet shards.
    source: str = Field("synthetic", min_length=1)
    #: Column holding the document text (string).
    text_column: str = "text"
    #: Column holding each document's labels (list<string>).
    labels_column: str = "labels"
    #: Optional id column (string or integer), kept in the outputs.
    id_column: str = "id"
    #: Optional column naming each row's split (train / validation / test; val and dev accepted).
    split_column: str = "split"
    #: Rows with null/empty text or no labels: drop them, or keep them (no-label rows become all-negative).
    empty_policy: Literal["drop", "keep"] = "drop"
    #: Labels in validation/test that never occur in train: keep them in those rows outside the model's
    #: vocabulary, reported as the evaluation's zero-shot group (real corpora have them: EURLEX57K has 85),
    #: or fail, or drop those labels from the rows.
    unknown_label_policy: Literal["zero-shot", "error", "drop"] = "zero-shot"
    #: Rows whose texts are equal after NFC, lower case and whitespace collapsing (a duplicate group): merge
    #: them into one row (first id, labels united), keep them (still split together), or fail. A group
    #: spanning given splits is always cut to its copies in the earliest of train -> validation -> test.
    duplicates: Literal["merge", "keep", "error"] = "merge"
    #: Most frequent co-occurring label pairs listed in label_stats.json.
    top_pairs: int = Field(20, ge=0)
    #: Pairs are counted among this many most frequent train labels (memory ~ its square); top_pairs_exact in
    #: label_stats.json says whether the top pairs are provably the top pairs of the whole vocabulary.
    pair_candidates: int = Field(1024, ge=2, le=4096)
    #: Rows per prepared Parquet file.
    rows_per_file: int = Field(50_000, ge=1)
    synthetic: SyntheticSection = SyntheticSection()
    split: SplitSection = SplitSection()
    groups: GroupsSection = GroupsSection()


class LexicalSection(_Strict):
    """TF-IDF features of the lexical model kind (pipeline/modeling/lexical.py)."""

    #: Vocabulary size: the n-grams in most training documents are kept.
    max_features: int = Field(100_000, ge=1)
    #: Longest word n-gram (1: words only, 2: words and word pairs).
    ngrams: int = Field(2, ge=1, le=5)
    #: An n-gram must occur in at least this many training documents.
    min_df: int = Field(2, ge=1)
    #: Terms kept per document (its highest TF-IDF weights); longer documents drop their weakest terms.
    max_terms: int = Field(1024, ge=1)
    #: 1 + log(tf) instead of raw term counts.
    sublinear_tf: bool = True
    #: Lower-case before splitting into words.
    lowercase: bool = True


class ModelSection(_Strict):
    """The model: its kind, then the encoder and head settings (mirrored by model.ModelConfig; tiny-bert sizes
    shape tiny-bert only) and the lexical kind's features."""

    #: "encoder": a transformer encoder with a pooled linear head; "lexical": TF-IDF word n-grams with one
    #: linear scorer per label (fast on a CPU, strong on wide label spaces; model.lexical sets its features);
    #: "frozen": a linear scorer over the frozen encoder's document embeddings, computed once (the CPU mode
    #: of the transformer path); "combined": the lexical and frozen scorers, mixed by a weight chosen on
    #: validation.
    kind: Literal["encoder", "lexical", "frozen", "combined"] = "encoder"
    #: "tiny-bert" (embedded, trained from scratch), "minilm" (packaged all-MiniLM-L6-v2), a hub name or path.
    encoder: str = "tiny-bert"
    #: Document vector: the [CLS] token or the mean of the token states; label_attention (encoder kind):
    #: each label attends over the token states with a query of its own (LWAN / LAAT).
    pooling: Literal["cls", "mean", "label_attention"] = "cls"
    #: Dropout before the classification head.
    dropout: float = Field(0.1, ge=0, lt=1)
    #: Tokens read per document (longer texts are truncated).
    max_length: int = Field(128, ge=4)
    #: tiny-bert only: hidden size.
    hidden_size: int = Field(128, ge=8)
    #: tiny-bert only: transformer layers.
    num_layers: int = Field(2, ge=1)
    #: tiny-bert only: attention heads.
    num_heads: int = Field(2, ge=1)
    #: tiny-bert only: feed-forward size.
    intermediate_size: int = Field(256, ge=8)
    #: tiny-bert only: WordPiece vocabulary trained on the training texts.
    vocab_size: int = Field(8000, ge=16)
    #: tiny-bert only: lower-case before tokenising.
    lowercase: bool = True
    #: frozen and combined kinds: windows of max_length tokens read per document, their embeddings averaged
    #: (1: the first window only; the encoder kind always reads one).
    chunks: int = Field(1, ge=1)
    #: Start the head's bias at the label base rates (log-odds), so rare labels start near their prior.
    init_bias_from_priors: bool = True
    #: The lexical kind's TF-IDF features.
    lexical: LexicalSection = LexicalSection()

    @model_validator(mode="after")
    def _chunks_need_a_frozen_encoder(self) -> ModelSection:
        if self.chunks > 1 and self.kind not in ("frozen", "combined"):
            raise ValueError(
                f"model.chunks={self.chunks} needs model.kind frozen or combined (the {self.kind} kind reads "
                "the first max_length tokens)"
            )
        return self


#: The losses of pipeline/modeling/losses.py (LOSS_NAMES; a test keeps the two equal), so a misspelt name is
#: refused when the config loads, before Ray or torch start.
LossName = Literal[
    "bce", "weighted-bce", "focal", "class-balanced", "r-fl", "ntr-fl", "db-0fl", "db", "cb-ntr", "asymmetric"
]


class LossSection(_Strict):
    #: bce, weighted-bce, focal, class-balanced, r-fl, ntr-fl, db-0fl, db, cb-ntr, asymmetric.
    name: LossName = "db"
    #: Parameters of that loss (see pipeline/modeling/losses.py docstrings); unknown ones are errors, raised
    #: when the config loads (a misspelt key would otherwise fail the train stage after prepare).
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_params(self) -> LossSection:
        valid = LOSS_PARAMS[self.name]
        unknown = sorted(set(self.params) - set(valid))
        if unknown:
            listed = ", ".join(valid) if valid else "(none)"
            raise ValueError(f"unknown loss.params {unknown} for loss {self.name!r}; valid: {listed}")
        return self


def _auto_or_below(v: float | str, key: str, high: float) -> float | str:
    """A setting that is "auto" or a number in [0, high)."""
    if v != "auto" and not (0 <= float(v) < high):
        raise ValueError(f"{key} must be auto or a number in [0, {high:g}), got {v}")
    return v


class TrainSection(_Strict):
    #: Passes over the training split (early stopping may end sooner).
    epochs: int = Field(10, ge=1)
    #: Per worker, per optimizer micro-step.
    batch_size: int = Field(32, ge=1)
    #: Batch size of the validation pass after each epoch.
    eval_batch_size: int = Field(128, ge=1)
    #: AdamW learning rate (of the encoder, when head_lr is set).
    lr: float = Field(5e-4, gt=0)
    #: The classification head's learning rate (default: lr). A pretrained encoder wants a small lr, while a
    #: freshly initialised head over hundreds of rare labels learns them only with a much larger one.
    head_lr: float | None = Field(None, gt=0)
    #: AdamW weight decay.
    weight_decay: float = Field(0.01, ge=0)
    #: L2 penalty on the head's weight matrices, added to the loss: each label's objective is its mean loss
    #: plus l2 x |w_label|^2. Unlike weight_decay it passes through Adam's scaling, so weights of rare terms,
    #: with small gradients, are held back most. 0: off (see docs/training.md, "Regularisation").
    l2: float = Field(0.0, ge=0)
    #: AdamW's epsilon, added to the root of each weight's squared-gradient average. The loss is a mean over
    #: documents x labels, so at thousands of labels a rare label's gradients are ~1e-9 and the default 1e-8
    #: damps its steps (docs/training.md, "train.adam_eps"). Default: torch's.
    adam_eps: float = Field(DEFAULT_ADAM_EPS, gt=0)
    #: Share of the steps with a linear warm-up; then linear decay to 0.
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    #: Gradient norm clipping (null: off).
    grad_clip: float | None = Field(1.0, gt=0)
    #: Micro-steps per optimizer step.
    grad_accum: int = Field(1, ge=1)
    #: auto: bf16 autocast on GPUs that support it, fp32 on CPU.
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    #: Sampling inside each worker's shard: none, or sample weights from inverse label frequencies.
    sampling: Literal["none", "mean", "max", "geomean", "class-aware"] = "none"
    #: With sampling none, a worker whose training shard is at most this many MiB (the materialised split's
    #: size / workers) holds it in memory as tensors and permutes it every epoch; larger shards stream
    #: through Ray Data's iterator, whose shuffle buffer (4 batches) mixes rows only locally and whose first
    #: epoch waits for reads. 0: always stream. Other samplings always hold the shard.
    shard_in_memory_mb: float = Field(1024.0, ge=0)
    #: 0 runs the loop in-process (no worker actors); N >= 1 runs N data-parallel workers.
    num_workers: int = Field(1, ge=0)
    #: Train on GPUs (one per worker by default).
    use_gpu: bool = False
    #: CPUs reserved per training worker; it trains on this many torch threads, rounded up (Ray's default,
    #: the floor, gave a 1.5-CPU worker one thread).
    cpus_per_worker: float = Field(1.0, gt=0)
    #: GPUs per worker when use_gpu.
    gpus_per_worker: float = Field(1.0, ge=0)
    #: CPUs left free for Ray Data (tokenisation, reading) beside the training workers.
    data_cpus: float = Field(0.5, ge=0)
    #: PACK fills nodes one by one; SPREAD puts workers on different nodes.
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    #: val_tuned_macro_f1 (after per-label thresholds, as the report), val_macro_f1 (at 0.5), val_loss, ...
    checkpoint_metric: Literal[
        "val_tuned_macro_f1", "val_tuned_micro_f1", "val_macro_f1", "val_micro_f1", "val_macro_ap", "val_loss"
    ] = "val_tuned_macro_f1"
    #: Default: min for val_loss, max otherwise.
    checkpoint_mode: Literal["max", "min"] | None = None
    #: Checkpoints kept under <run>/checkpoints/, the best by checkpoint_metric.
    keep_checkpoints: int = Field(2, ge=1)
    #: Stop after this many epochs without improvement of checkpoint_metric (0: never stop early).
    patience: int = Field(3, ge=0)
    #: Worker failures survived by restarting from the latest checkpoint.
    max_failures: int = Field(2, ge=0)
    #: Seconds between progress lines inside an epoch (step / total, samples/s, loss, ETA); one more line
    #: follows each epoch.
    progress_seconds: float = Field(30.0, gt=0)
    #: The lexical kind only: add a multiple of each label's name (its TF-IDF vector; names from
    #: evaluate.label_names) to its weights after training, which lifts labels with few training documents
    #: (docs/training.md, "Label names as a prior"). A number g: g for every label. auto: g k / (k + the
    #: label's training documents), g and k chosen on validation (macro AP, keeping P@1). 0: off.
    name_prior: float | Literal["auto"] = 0.0

    def identity(self, exclude: set[str]) -> dict[str, Any]:
        """The settings that shape the weights, for fingerprints: model_dump less `exclude`, and without
        head_lr while it is unset, l2 and name_prior while they are 0 and adam_eps at its default, so runs
        recorded before these existed keep their fingerprints."""
        data = self.model_dump(exclude=exclude)
        if data.get("head_lr") is None:
            data.pop("head_lr", None)
        if not data.get("l2"):
            data.pop("l2", None)
        if data.get("adam_eps") == DEFAULT_ADAM_EPS:
            data.pop("adam_eps", None)
        if not data.get("name_prior"):
            data.pop("name_prior", None)
        return data

    @field_validator("name_prior")
    @classmethod
    def _prior_not_negative(cls, v: float | str) -> float | str:
        return _auto_or_below(v, "train.name_prior", 1000)

    @model_validator(mode="after")
    def _mode_follows_metric(self) -> TrainSection:
        if self.checkpoint_mode is None:
            object.__setattr__(
                self, "checkpoint_mode", "min" if self.checkpoint_metric == "val_loss" else "max"
            )
        return self


class LabelNamesSection(_Strict):
    #: A Parquet or CSV file naming the labels (local path or URI). Named labels that never occur in training
    #: are then scored from their names (pipeline/evaluation/label_names.py); None: they are not scored.
    source: str | None = None
    #: Instead of a file, each label's id is its name ("-" and "_" read as spaces), for ids that are words
    #: (Reuters-21578's topics, GoEmotions' emotions). Read by train.name_prior only: unseen labels are
    #: scored from a file's names alone.
    from_ids: bool = False
    #: Its column of label ids (as the data's labels are written).
    id_column: str = "label"
    #: Its column of label names.
    name_column: str = "name"
    #: A list column of other names of the label, read with the name; None: none.
    alt_column: str | None = None
    #: A frozen encoder (`minilm` or a local model folder; never a download) whose mean-pooled embeddings of
    #: documents and names add their cosine to the TF-IDF one; None: TF-IDF only.
    encoder: str | None = None
    #: With `encoder`: similarity = (1 - w) TF-IDF cosine + w max(encoder cosine, 0).
    encoder_weight: float = Field(default=0.5, ge=0.0, le=1.0)
    #: With `encoder`: tokens of each document (its first window) and name the encoder reads.
    encoder_max_length: int = Field(default=128, ge=8, le=512)

    @field_validator("source")
    @classmethod
    def _not_blank(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("evaluate.label_names.source must be a path or URI, or null")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> LabelNamesSection:
        if self.from_ids and self.source is not None:
            raise ValueError("evaluate.label_names: give source or from_ids, not both")
        return self


class EvaluateSection(_Strict):
    #: global | per_label | per_label_with_fallback (per-label F1-optimal; low-support labels use global).
    threshold_strategy: Literal["global", "per_label", "per_label_with_fallback"] = "per_label_with_fallback"
    #: Validation positives a label needs for a threshold of its own.
    min_support: int = Field(5, ge=1)
    #: Threshold of the labels with fewer: blend (halfway between the global and the prior threshold), prior
    #: (each is predicted for as many validation documents as its training prevalence implies, at least
    #: one), global (the micro-F1-optimal threshold: rare labels are then hardly ever predicted) or best (per
    #: label, the one of the global and the prior threshold with the higher validation F1; ties: the one
    #: predicting less). See docs/metrics.md, "Thresholds".
    fallback: Literal["blend", "prior", "global", "best"] = "blend"
    #: Shrink per-label thresholds toward the global one: t = (s t_label + k t_global) / (s + k); 0 = off.
    shrinkage: float = Field(0.0, ge=0)
    #: Give a document with no label over its threshold the label whose score is least below its own
    #: threshold, so every document gets at least one label.
    at_least_one: bool = False
    #: Rows per scoring batch.
    batch_size: int = Field(256, ge=1)
    #: Scoring actors (each loads the model once) and their resources.
    concurrency: int = Field(1, ge=1)
    #: CPUs per scoring actor.
    cpus_per_actor: float = Field(1.0, gt=0)
    #: GPUs per scoring actor.
    gpus_per_actor: float = Field(0.0, ge=0)
    #: Another run (a run name under run.output, or a run URI) to show beside this one in the report.
    compare: str | None = None
    #: Propensity constant A of Jain et al. (2016) for PSP@k and PSnDCG@k (0.55 unless fitted to the data).
    propensity_a: float = Field(0.55, gt=0)
    #: Propensity constant B of Jain et al. (2016) for PSP@k and PSnDCG@k (1.5 unless fitted to the data).
    propensity_b: float = Field(1.5, gt=0)
    #: Logit adjustment of the label ranking (P@k, nDCG@k, PSP@k): labels are ranked by logit - tau ln(prior),
    #: which lifts rare labels; decisions, thresholds and AP are unchanged. A number is tau; auto picks tau
    #: on validation (pipeline/evaluation/rank_adjust.py). 0: off.
    rank_adjust: float | Literal["auto"] = 0.0
    #: Names of the labels, to score those never seen in training (the zero-shot group of the report).
    label_names: LabelNamesSection = LabelNamesSection()

    @field_validator("rank_adjust")
    @classmethod
    def _tau_not_negative(cls, v: float | str) -> float | str:
        return _auto_or_below(v, "evaluate.rank_adjust", 10)


class TuneSection(_Strict):
    #: Loss families searched (each with its own parameters, see pipeline/training/search_space.py).
    families: list[str] = Field(
        default_factory=lambda: ["bce", "weighted-bce", "focal", "class-balanced", "db", "asymmetric"]
    )
    #: Overrides of the default ranges: {family: {param: [low, high] or [choices]}}.
    space: dict[str, dict[str, list]] = Field(default_factory=dict)
    #: Learning-rate range searched (log-uniform).
    lr: tuple[float, float] = (3e-4, 3e-3)
    #: Range of train.l2, the per-label L2 penalty, searched (log-uniform; both > 0); None keeps train.l2.
    l2: tuple[float, float] | None = None
    #: Trials in the search.
    num_samples: int = Field(12, ge=1)
    #: Optuna TPE or random search.
    search: Literal["optuna", "random"] = "optuna"
    #: ASHA stops poor trials early; none runs every trial to the end.
    scheduler: Literal["asha", "none"] = "asha"
    #: The objective: validation macro-F1 after per-label threshold tuning, as the report shows.
    metric: Literal["val_tuned_macro_f1", "val_tuned_micro_f1", "val_macro_f1", "val_macro_ap"] = (
        "val_tuned_macro_f1"
    )
    #: ASHA: epochs before a trial may be stopped.
    grace_period: int = Field(1, ge=1)
    #: ASHA: share of trials kept at each rung is 1 / reduction_factor.
    reduction_factor: float = Field(2.0, gt=1)
    #: Trials at once; None: as many as the resource plan fits.
    max_concurrent: int | None = Field(None, ge=1)
    #: CPU held by each trial's driver function (it only waits on its TorchTrainer).
    driver_cpus: float = Field(0.05, ge=0)
    #: Trials to run first, e.g. [{loss: db, lr: 0.001, db.kappa: 0.05}] (keys: loss, lr, <family>.<param>).
    points_to_evaluate: list[dict[str, Any]] = Field(default_factory=list)
    #: Seed of the searcher.
    seed: int = 0
    #: full: every trial fine-tunes the whole model through Ray Train. embeddings: the encoder's pooled
    #: embeddings are computed once with Ray Data and cached as Parquet; each trial trains only the head.
    mode: Literal["full", "embeddings"] = "full"
    #: CPUs per trial in embeddings mode (the head trains in the trial's own process).
    trial_cpus: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _l2_range(self) -> TuneSection:
        if self.l2 is not None and not 0 < self.l2[0] <= self.l2[1]:
            raise ValueError(f"tune.l2 must be [low, high] with 0 < low <= high (log-uniform), got {self.l2}")
        return self


class PredictSection(_Strict):
    """`jobs/predict.py`: score new shards with a saved model and its thresholds."""

    #: Parquet shards to score: a folder, glob or URI (required by the predict job).
    source: str | None = None
    #: Predictions go to <run>/predictions/<name>/ unless output is given (a folder or URI).
    name: str = "new"
    #: Folder or URI for the predictions instead of <run>/predictions/<name>/.
    output: str | None = None
    #: Model folder; default: the promoted model (<run>/current.json, written by retrain), else <run>/model.
    model: str | None = None
    #: thresholds.json fitted for that model; default: the one beside the model's run.
    thresholds: str | None = None


class RetrainSection(_Strict):
    """`jobs/retrain.py`: retrain on new or changed shards, promote the challenger only if it is not worse."""

    #: Test-set metrics (keys of the report's overall metrics) the challenger must not lose on.
    metrics: list[str] = Field(default_factory=lambda: ["micro_f1", "macro_f1"])
    #: How much worse (absolute) the challenger may be on each metric and still be promoted.
    tolerance: float = Field(0.01, ge=0)


class RaySection(_Strict):
    #: None: connect to a running cluster if RAY_ADDRESS is set, else start a local one in-process.
    address: str | None = None
    #: CPUs of the local Ray started in-process (default: all); ignored on a cluster.
    num_cpus: int | None = None
    #: Niceness of this run's Ray workers (Train workers, scoring actors, tasks); None keeps Ray's default,
    #: 15, at which they yield the CPU to any other process of a shared node. 0 runs them at normal priority.
    worker_niceness: int | None = Field(None, ge=0, le=19)


class Config(_Strict):
    run: RunSection = RunSection()
    storage: StorageSection = StorageSection()
    data: DataSection = DataSection()
    model: ModelSection = ModelSection()
    loss: LossSection = LossSection()
    train: TrainSection = TrainSection()
    evaluate: EvaluateSection = EvaluateSection()
    tune: TuneSection = TuneSection()
    predict: PredictSection = PredictSection()
    retrain: RetrainSection = RetrainSection()
    ray: RaySection = RaySection()

    @model_validator(mode="after")
    def _name_prior_needs_names(self) -> Config:
        if self.train.name_prior != 0:
            if self.model.kind != "lexical":
                raise ValueError(f"train.name_prior needs model.kind lexical, got {self.model.kind}")
            names = self.evaluate.label_names
            if names.source is None and not names.from_ids:
                raise ValueError(
                    "train.name_prior needs the labels' names: set evaluate.label_names.source (a file) or "
                    "evaluate.label_names.from_ids"
                )
        return self

    @property
    def run_uri(self) -> str:
        return self.run.output.rstrip("/") + "/" + self.run.name


def _parse_scalar(text: str) -> Any:
    """Values of --set are YAML scalars (numbers, booleans, null, lists) so types match the file."""
    return yaml.safe_load(text) if text != "" else ""


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    out = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set expects key.path=value, got {item!r}")
        key, value = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"--set {key}: '{part}' is a value, not a section")
            node = child
        node[parts[-1]] = _parse_scalar(value)
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or the defaults), apply overrides, validate; errors name the key."""
    raw: dict[str, Any] = {}
    if path is not None:
        text = Path(path).read_text()
        raw = yaml.safe_load(text) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    raw = apply_overrides(raw, overrides or [])
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        lines = [f"invalid config{f' {path}' if path else ''}:"]
        for e in err.errors():
            loc = ".".join(str(p) for p in e["loc"]) or "<root>"
            lines.append(f"  {loc}: {e['msg']}")
        raise ValueError("\n".join(lines)) from None


def add_config_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--config", default=None, help="YAML config of the run (defaults when omitted)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a key"
    )
    return parser


def apply_params(cfg: Config, params: dict[str, Any]) -> Config:
    """Merge a `best_params.yaml` (sections `loss` and `train`; `objective` is provenance) into a config."""
    unknown = sorted(set(params) - {"loss", "train", "objective"})
    if unknown:
        raise ValueError(f"params file: unknown sections {unknown}; expected loss, train, objective")
    data = cfg.model_dump()
    if "loss" in params:
        data["loss"] = params["loss"]
    data["train"].update(params.get("train") or {})
    return Config.model_validate(data)
