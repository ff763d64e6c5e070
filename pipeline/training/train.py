"""The train stage on the driver: Ray Train (TorchTrainer, Train V2 API) over the prepared, featurised data.

Read `label_stats.json`, fit or load the model kind's featurizer (`pipeline.modeling.model`), featurise in
Ray Data (or read the featurised splits a run with the same featurizer and data cached), check the resource
plan, choose the checkpoint to resume (`pipeline.training.checkpoints`), fit with
the loop of `pipeline.training.worker`, then write the best epoch's weights as a Ray-free `model/` folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import ray.data
import scipy.sparse as sp
from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from pipeline.core.config import Config
from pipeline.core.errors import InputError
from pipeline.core.layout import RunLayout
from pipeline.core.parquet_reader import read_parquet
from pipeline.core.progress import RowProgress
from pipeline.core.resources import cluster_plan
from pipeline.core.storage import (
    Location,
    download_dir,
    is_complete,
    read_bytes,
    read_json,
    require_complete,
    staged_dir,
    upload_dir,
    write_json,
)
from pipeline.data.labels import csr_from_arrow, padded_indices, row_width
from pipeline.evaluation.label_names import read_label_names
from pipeline.modeling.losses import build_loss, estimate_mu
from pipeline.modeling.model import (
    ModelConfig,
    build_model,
    fit_featurizer,
    fitted_features,
    load_featurizer,
    save_featurizer,
    save_model,
)
from pipeline.training.checkpoints import (
    best_weights,
    checkpoint_meta,
    fingerprint,
    latest_checkpoint,
    load_state,
)
from pipeline.training.name_prior import apply_name_prior
from pipeline.training.worker import TrainCallback, train_loop_per_worker, worker_threads

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ data


def read_prepared(run: RunLayout, split: str) -> ray.data.Dataset:
    stats_loc = run.label_stats
    if not stats_loc.exists():
        raise InputError(f"{stats_loc.uri} not found: run the prepare stage first (python -m jobs.prepare)")
    require_complete(run.prepared, "prepare")
    return read_parquet(run.prepared_split(split).path, filesystem=run.fs)


def column_batches(run: RunLayout, split: str, column: str, batch_size: int = 65536) -> Iterator[pa.Array]:
    """One column of a prepared split, streamed on the driver with pyarrow.

    For what the driver needs whole anyway (the labels, the tokenizer's training texts): each Ray Data read of
    a small split cost about 3 s of scheduling here, and `build_inputs` made three of them.
    """
    shards = pads.dataset(run.prepared_split(split).path, filesystem=run.fs, format="parquet")
    for batch in shards.to_batches(columns=[column], batch_size=batch_size):
        yield batch.column(0)


class EncodeBatch:
    """map_batches (pyarrow): text -> the featurizer's fixed-width columns; labels -> their indices padded to
    `width` (`label_idx`): the multi-hot targets are built per training batch, never for the whole split."""

    def __init__(self, featurizer: Any, labels: list[str], width: int, counter: Any = None) -> None:
        self.featurizer = featurizer
        self.labels, self.width = labels, width
        self.counter = counter

    def __call__(self, table: pa.Table) -> dict[str, np.ndarray]:
        out = self.featurizer.encode(table.column("text").to_pylist())
        if self.counter is not None:  # fire and forget: the driver prints the total (RowProgress)
            self.counter.add.remote(table.num_rows)
        # Zero-shot labels (validation only, outside the train vocabulary) have no output to train: skipped.
        y = csr_from_arrow(table.column("labels"), self.labels, ignore_unknown=True)
        out["label_idx"] = padded_indices(y, self.width)
        return out


def encode_dataset(
    ds: ray.data.Dataset, featurizer: Any, labels: list[str], width: int, counter: Any = None
) -> ray.data.Dataset:
    return ds.map_batches(
        EncodeBatch(featurizer, labels, width, counter), batch_format="pyarrow", batch_size=256
    ).select_columns([*featurizer.columns, "label_idx"])


def label_matrix(run: RunLayout, split: str, labels: list[str]) -> sp.csr_matrix:
    """A prepared split's labels as a 0/1 CSR matrix on the driver (reads the labels column only); labels
    outside `labels` (zero-shot ones) are left out."""
    parts = [csr_from_arrow(col, labels, ignore_unknown=True) for col in column_batches(run, split, "labels")]
    return sp.vstack(parts, format="csr") if parts else sp.csr_matrix((0, len(labels)), dtype=np.int8)


def make_featurizer(cfg: Config, run: RunLayout, stats: dict) -> Any:
    """The model kind's featurizer. What a kind learns from the training texts (tiny-bert's WordPiece
    vocabulary, the lexical vocabulary and idf; the frozen kinds keep their encoder with it) is streamed from
    storage (never all held on the driver at once), saved under the run (`<run>/tokenizer/`, or
    `<run>/features/<key>/`, one folder per kind and settings) and reused while the training data and
    settings are the same, so a resumed run sees the features its checkpoints were trained with (training a
    WordPiece vocabulary twice on the same texts gave 791 and 792 tokens here)."""
    model_cfg = ModelConfig.from_any(cfg.model.model_dump(exclude={"init_bias_from_priors"}))
    cached = fitted_features(model_cfg)
    if cached is None:
        return fit_featurizer(model_cfg, lambda: ())
    name, settings = cached
    key_parts = [stats["documents"], stats["label_counts"], *settings]
    key = hashlib.sha256(json.dumps(key_parts, sort_keys=True).encode()).hexdigest()[:16]
    # The tokenizer folder keeps the layout of runs made before model kinds existed, so they resume.
    folder = run.join(name) if name == "tokenizer" else run.join(name, key)
    marker = folder.join("data_key.txt")
    if marker.exists() and read_bytes(marker).decode() == key and is_complete(folder):
        with tempfile.TemporaryDirectory() as d:
            download_dir(folder, d)
            return load_featurizer(model_cfg, d)

    def texts() -> Iterator[str]:
        for col in column_batches(run, "train", "text", batch_size=4096):
            yield from col.to_pylist()

    t0 = time.perf_counter()
    featurizer = fit_featurizer(model_cfg, texts)
    log.info("features fitted on the training texts in %.0fs", time.perf_counter() - t0)
    with tempfile.TemporaryDirectory() as d:
        save_featurizer(featurizer, d)
        Path(d, "data_key.txt").write_text(key)
        upload_dir(d, folder)
    return featurizer


# ------------------------------------------------------------------------------------------------ stage


REBALANCED = {"db", "r-fl", "db-0fl"}
SPLITS = ("train", "validation")


@dataclass
class TrainInputs:
    """What every training run of a prepared run shares (one per train job, or one per Tune experiment)."""

    run: RunLayout
    labels: list[str]
    counts: list[int]
    num_docs: int
    #: The model kind's featurizer (`pipeline.modeling.model.Featurizer`).
    featurizer: Any
    #: Data-driven mu of the rebalanced weighting (average of mean and median of r over training positives).
    mu: float
    datasets: dict[str, ray.data.Dataset]
    model_cfg: ModelConfig
    #: Width of the datasets' `label_idx` column: the most labels of any train or validation row.
    label_width: int


def build_inputs(cfg: Config, tokenize: bool = True) -> TrainInputs:
    """Label statistics, featurizer, mu and the featurised, materialised train / validation datasets
    (`tokenize=False`: no datasets, for callers that read the prepared splits themselves)."""
    run = RunLayout.of(cfg)
    stats_loc = run.label_stats
    if not stats_loc.exists():
        raise InputError(f"{stats_loc.uri} not found: run the prepare stage first (python -m jobs.prepare)")
    stats = read_json(stats_loc)
    labels: list[str] = stats["labels"]
    counts = [stats["label_counts"][lab]["train"] for lab in labels]
    featurizer = make_featurizer(cfg, run, stats)
    y_train = label_matrix(run, "train", labels)
    mu = float(estimate_mu(y_train, counts))
    # One index width for both splits: Ray Data stacks the column as one fixed-shape tensor.
    width = max(row_width(y_train), row_width(label_matrix(run, "validation", labels)))
    model_cfg = ModelConfig.from_any(cfg.model.model_dump(exclude={"init_bias_from_priors"}))
    docs = stats["documents"]["train"]
    inputs = TrainInputs(run, labels, counts, docs, featurizer, mu, {}, model_cfg, width)
    return with_datasets(cfg, inputs) if tokenize else inputs


def with_datasets(cfg: Config, inputs: TrainInputs) -> TrainInputs:
    """`inputs` with the featurised, materialised train / validation datasets: the slow part of
    `build_inputs` (seconds of worker start-up even for a small split), so run_train does it only when it
    will fit."""
    return replace(inputs, datasets=featurised_splits(inputs))


#: Rows per block of the split being featurised: a split is often one Parquet file, read as one block, and a
#: map over one block runs in one task, emitting nothing until it ends (Ray Data 2.60 gives up on a dataset
#: after 1,800 s without output; a frozen MiniLM took 22 minutes over EURLEX57K's 45,000 training documents).
FEATURISE_BLOCK_ROWS = 2048


def featurised_key(inputs: TrainInputs) -> str:
    """What the featurised splits depend on: the featurizer, the label vocabulary and index width, and the
    prepared files (names and sizes; a run given another run's prepared copy shares its cache)."""
    files = {
        split: [
            (posixpath.basename(i.path), i.size)
            for i in inputs.run.fs.get_file_info(inputs.run.prepared_split(split).files(".parquet"))
        ]
        for split in SPLITS
    }
    blob = json.dumps([inputs.featurizer.digest(), inputs.labels, inputs.label_width, files], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def featurised_splits(inputs: TrainInputs) -> dict[str, ray.data.Dataset]:
    """The featurised, materialised train and validation splits: read from `<run>/features/splits/<key>/`
    when this featurizer already featurised this data, else computed on Ray Data (progress lines every 30 s)
    and written there (each split whole, `done.json` last), so a run resumed after a crash, or a new run
    given a copy of this run's `prepared/` and `features/`, skips the work: a frozen encoder's embedding pass
    is most of a CPU run."""
    run = inputs.run
    folder = run.join("features", "splits", featurised_key(inputs))
    if folder.join("done.json").exists():
        log.info("featurised splits: reusing %s", folder.uri)
        return {
            split: read_parquet(folder.join(split).path, filesystem=run.fs).materialize() for split in SPLITS
        }
    stats = read_json(run.label_stats)
    datasets, t0 = {}, time.perf_counter()
    for split in SPLITS:
        with RowProgress(stats["documents"][split], f"featurising {split}", verb="done") as progress:
            source = read_prepared(run, split).repartition(target_num_rows_per_block=FEATURISE_BLOCK_ROWS)
            datasets[split] = encode_dataset(
                source, inputs.featurizer, inputs.labels, inputs.label_width, progress.counter
            ).materialize()
        with staged_dir(folder.join(split)) as stage:
            datasets[split].write_parquet(stage.path, filesystem=stage.fs)
    seconds = round(time.perf_counter() - t0, 1)
    write_json(
        folder.join("done.json"), {"rows": {k: v.count() for k, v in datasets.items()}, "seconds": seconds}
    )
    log.info("featurised train and validation in %.0fs, cached at %s", seconds, folder.uri)
    return datasets


def resolved_loss_params(name: str, params: dict[str, Any], inputs: TrainInputs) -> dict[str, Any]:
    """The loss parameters with the data-driven mu filled in, checked on the driver (not in a worker)."""
    out = dict(params)
    if name in REBALANCED and "mu" not in out:
        out["mu"] = inputs.mu
    build_loss(name, inputs.counts, inputs.num_docs, dict(out))
    return out


def shard_in_memory(shard_bytes: float | None, sampling: str, limit_mb: float) -> bool:
    """Whether each worker holds its training shard (``shard_bytes``: None if unknown) in memory (see
    `train.shard_in_memory_mb`): always for weighted sampling, which draws indices over the whole shard; for
    `none` when the shard is known to fit the limit."""
    if sampling != "none":
        return True
    return shard_bytes is not None and shard_bytes <= limit_mb * 2**20


def make_trainer(
    cfg: Config,
    inputs: TrainInputs,
    run_config: RunConfig,
    loss_params: dict[str, Any],
    extra_loop_config: dict[str, Any] | None = None,
) -> TorchTrainer:
    plan = cluster_plan(cfg.train)
    train_bytes = inputs.datasets["train"].size_bytes()  # materialised: from the blocks' metadata
    shard_bytes = None if train_bytes is None else train_bytes / max(cfg.train.num_workers, 1)
    in_memory = shard_in_memory(shard_bytes, cfg.train.sampling, cfg.train.shard_in_memory_mb)
    log.info(
        "training shard: %s (%s per worker; train.shard_in_memory_mb %g)",
        "held in each worker's memory" if in_memory else "streamed through Ray Data",
        "size unknown" if shard_bytes is None else f"{shard_bytes / 2**20:.0f} MiB",
        cfg.train.shard_in_memory_mb,
    )
    loop_config = {
        "local_dir": None,
        "seed": cfg.run.seed,
        "train": cfg.train.model_dump(),
        "model": inputs.model_cfg.to_dict(),
        "featurizer": inputs.featurizer,
        "labels": inputs.labels,
        "counts": inputs.counts,
        "num_docs": inputs.num_docs,
        "train_rows": inputs.datasets["train"].count(),
        "loss_name": cfg.loss.name,
        "loss_params": loss_params,
        "sampling": cfg.train.sampling,
        "in_memory": in_memory,
        "init_bias": cfg.model.init_bias_from_priors,
        "resume_from": None,
        **(extra_loop_config or {}),
    }
    scaling = ScalingConfig(
        num_workers=cfg.train.num_workers,
        use_gpu=cfg.train.use_gpu,
        resources_per_worker=plan.resources_per_worker if cfg.train.num_workers else None,
        placement_strategy=cfg.train.placement_strategy,
    )
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=scaling,
        run_config=run_config,
        datasets=inputs.datasets,
    )


def run_train(cfg: Config, callbacks: Sequence[TrainCallback] = ()) -> dict[str, Any]:
    """Train on `<run>/prepared`, write `<run>/model/`; returns a summary (metrics history, paths).

    `callbacks`: :class:`TrainCallback` instances run inside every training worker.
    """
    plan = cluster_plan(cfg.train)  # fail fast before any dataset work
    threads = (
        f"; {worker_threads(cfg.train.cpus_per_worker)} torch thread(s) per worker"
        if cfg.train.num_workers
        else ""
    )
    log.info("resource plan: %s%s", plan.describe(), threads)
    # Read now, so that a bad names file fails before training rather than after it.
    names = read_label_names(cfg.evaluate.label_names, cfg.storage) if cfg.train.name_prior != 0 else None
    # Featurising waits until we know there is training to do: a finished run is exported, and a
    # mismatched one refused, without it.
    inputs = build_inputs(cfg, tokenize=False)
    run = inputs.run
    loss_params = resolved_loss_params(cfg.loss.name, cfg.loss.params, inputs)
    if "mu" in loss_params and "mu" not in cfg.loss.params:
        log.info("rebalancing mu estimated from the training labels: %.4f", loss_params["mu"])
    run_config = RunConfig(
        name="checkpoints",
        storage_path=run.path,
        storage_filesystem=run.fs,
        failure_config=FailureConfig(max_failures=cfg.train.max_failures),
        # Train's INFO lines ("Reporting training result N: TrainingReport(...)" with every metric, worker
        # group start-up, checkpoint paths) doubled the terminal output and say nothing a user acts on; they
        # stay in Train's system log files (session logs/train/); warnings and errors still show.
        logging_config=LoggingConfig(log_level="WARNING"),
        checkpoint_config=CheckpointConfig(
            num_to_keep=cfg.train.keep_checkpoints,
            checkpoint_score_attribute=cfg.train.checkpoint_metric,
            checkpoint_score_order=cfg.train.checkpoint_mode,
        ),
    )
    fp = fingerprint(cfg, inputs.labels, loss_params, inputs.featurizer)
    resume = latest_checkpoint(run.checkpoints)
    meta = checkpoint_meta(resume) if resume is not None else None
    if meta is not None and meta.get("fingerprint") != fp:
        raise InputError(
            f"{run.join('checkpoints').uri} holds checkpoints of a different configuration (loss, model, "
            "training settings or labels changed): use a new run.name, or delete that folder to start over"
        )
    t0 = time.perf_counter()
    done_epochs = int(meta["epoch"]) + 1 if meta is not None and "epoch" in meta else 0
    if meta is not None and meta.get("finished") and cfg.train.epochs > done_epochs:
        if meta.get("stopped_early"):
            log.info(
                "train.epochs is %d, but this run stopped early after %d epoch(s) (train.patience): its best "
                "epoch is exported; use a new run.name to train longer",
                cfg.train.epochs,
                done_epochs,
            )
        else:  # the epoch count grew since the run finished: train on from its last checkpoint
            log.info(
                "train.epochs raised to %d: training resumes after epoch %d", cfg.train.epochs, done_epochs
            )
            meta = {**meta, "finished": False}
    elif meta is not None and meta.get("finished") and cfg.train.epochs < done_epochs:
        log.warning(
            "train.epochs is %d, but this run already trained %d epochs: its best epoch of those is exported",
            cfg.train.epochs,
            done_epochs,
        )
    if meta is not None and meta.get("finished"):
        log.info("training of this run already finished (%s); exporting its best epoch", resume.path)
        saved = load_state(resume)
    else:
        if resume is not None:
            log.info(
                "found checkpoint %s (epoch %s): training resumes from it", resume.path, meta["epoch"] + 1
            )
        inputs = with_datasets(cfg, inputs)
        saved = _fit(
            cfg,
            inputs,
            run_config,
            loss_params,
            {
                "resume_from": resume,
                "checkpoints": run.checkpoints if cfg.train.num_workers else None,
                "fingerprint": fp,
                "callbacks": list(callbacks),
            },
        )
    labels, featurizer = inputs.labels, inputs.featurizer
    model = build_model(inputs.model_cfg, len(labels), featurizer)
    model.load_state_dict(best_weights(saved))
    history = saved["state"]["history"]
    best = saved["state"]["best"]
    prior = None
    if cfg.train.name_prior != 0:
        if cfg.train.name_prior == "auto" and not inputs.datasets:
            inputs = with_datasets(cfg, inputs)  # a finished run: its cached featurised splits
        if cfg.evaluate.label_names.from_ids:
            names = read_label_names(cfg.evaluate.label_names, cfg.storage, labels)
        validation = inputs.datasets.get("validation") if inputs.datasets else None
        vectorizer = featurizer.vectorizer
        prior = apply_name_prior(
            cfg.train.name_prior, model, vectorizer, labels, names or {}, inputs.counts, validation
        )
    extra = {
        "loss": {"name": cfg.loss.name, "params": loss_params},
        "training": {
            "epochs_run": len(history),
            "best_" + cfg.train.checkpoint_metric: best,
            "seed": cfg.run.seed,
            "history": history,
        },
        "label_counts_train": dict(zip(labels, inputs.counts, strict=True)),
        "num_train_docs": inputs.num_docs,
    }
    if prior is not None:
        extra["name_prior"] = prior
    export_model(model, featurizer, labels, extra, inputs.model_cfg, run.model)
    log.info(
        "training done in %.0fs; best %s %.4f; model at %s",
        time.perf_counter() - t0,
        cfg.train.checkpoint_metric,
        best,
        run.model.uri,
    )
    return {
        "history": history,
        "best": best,
        "model": run.model.uri,
        "label_index_width": inputs.label_width,
    }


def _fit(cfg: Config, inputs: TrainInputs, run_config: RunConfig, loss_params: dict, extra: dict) -> dict:
    """Fit and return the final checkpoint's saved state."""
    local_dir = tempfile.mkdtemp(prefix="bml-train-") if cfg.train.num_workers == 0 else None
    trainer = make_trainer(cfg, inputs, run_config, loss_params, {"local_dir": local_dir, **extra})
    keep_sigint_handler(trainer)
    try:
        result = trainer.fit()
        if result.checkpoint is None:
            raise RuntimeError("training finished without a checkpoint")
        return load_state(result.checkpoint)
    finally:
        if local_dir is not None:
            shutil.rmtree(local_dir, ignore_errors=True)


def keep_sigint_handler(trainer: TorchTrainer) -> None:
    """Leave a SIGINT handler that the caller installed (the jobs' stop-on-signal one) in place during fit.

    Train V2's fit() replaces it with its own, which aborts the controller and then calls sys.exit(0), and
    never puts the caller's back: Ctrl-C during training ended the job with exit code 0 and no word on
    resuming, and later stages ran with Train's handler. With Python's default handler (a plain script, the
    tests) Train's graceful abort is kept.
    """
    current = signal.getsignal(signal.SIGINT)
    if current in (signal.default_int_handler, signal.SIG_DFL, signal.SIG_IGN, None):
        return
    if hasattr(trainer, "_register_sigint_handler"):  # Ray 2.60's hook; later versions may differ
        trainer._register_sigint_handler = lambda controller: None  # type: ignore[method-assign]


def export_model(
    model, featurizer, labels: list[str], extra: dict, model_cfg: ModelConfig, dest: Location
) -> None:
    if dest.is_local:
        save_model(model, featurizer, labels, dest.path, extra_config=extra, model_config=model_cfg)
        return
    with tempfile.TemporaryDirectory() as d:
        save_model(model, featurizer, labels, Path(d) / "model", extra_config=extra, model_config=model_cfg)
        upload_dir(Path(d) / "model", dest)
