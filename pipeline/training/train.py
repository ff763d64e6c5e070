"""The train stage: Ray Train (TorchTrainer, Train V2 API) over the prepared, tokenised data.

Driver: read `label_stats.json`, build the tokenizer, tokenise in Ray Data, check the resource plan, fit, then
write the best epoch's weights as a Ray-free `model/` folder. Worker: the training loop below, which resumes
from `ray.train.get_checkpoint()` when a run with the same name is started again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import posixpath
import random
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import ray
import ray.data
import ray.train
import scipy.sparse as sp
import torch
from ray.train import (
    Checkpoint,
    CheckpointConfig,
    FailureConfig,
    LoggingConfig,
    RunConfig,
    ScalingConfig,
)
from ray.train.torch import TorchTrainer
from transformers import AutoTokenizer

from pipeline.core.config import Config
from pipeline.core.console import Every, say
from pipeline.core.errors import InputError
from pipeline.core.layout import RunLayout
from pipeline.core.resources import cluster_plan
from pipeline.core.storage import Location, download_dir, read_bytes, read_json, upload_dir
from pipeline.data.labels import csr_from_arrow, csr_from_padded, dense_targets, padded_indices, row_width
from pipeline.evaluation.thresholds import fit_thresholds
from pipeline.modeling.losses import build_loss, estimate_mu
from pipeline.modeling.model import (
    TINY_BERT,
    ModelConfig,
    build_model,
    build_tokenizer,
    save_model,
    train_wordpiece_tokenizer,
)
from pipeline.modeling.sampling import class_aware_indices, sample_weights, weighted_indices

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"
META_FILE = "meta.json"


# ------------------------------------------------------------------------------------------------ data


def read_prepared(run: RunLayout, split: str) -> ray.data.Dataset:
    stats_loc = run.label_stats
    if not stats_loc.exists():
        raise InputError(f"{stats_loc.uri} not found: run the prepare stage first (python -m jobs.prepare)")
    return ray.data.read_parquet(run.prepared_split(split).path, filesystem=run.fs)


def column_batches(run: RunLayout, split: str, column: str, batch_size: int = 65536) -> Iterator[pa.Array]:
    """One column of a prepared split, streamed on the driver with pyarrow.

    For what the driver needs whole anyway (the labels, the tokenizer's training texts): each Ray Data read of
    a small split cost about 3 s of scheduling here, and `build_inputs` made three of them.
    """
    shards = pads.dataset(run.prepared_split(split).path, filesystem=run.fs, format="parquet")
    for batch in shards.to_batches(columns=[column], batch_size=batch_size):
        yield batch.column(0)


class EncodeBatch:
    """map_batches (pyarrow): text -> fixed-length token ids; labels -> their indices padded to `width`
    (`labels`): the multi-hot targets are built per training batch, never for the whole split."""

    def __init__(self, tokenizer: Any, max_length: int, labels: list[str], width: int) -> None:
        from pipeline.modeling.model import Tokenize

        self.tokenize = Tokenize(tokenizer, max_length=max_length, text_column="text")
        self.labels, self.width = labels, width

    def __call__(self, table: pa.Table) -> dict[str, np.ndarray]:
        out = self.tokenize({"text": np.asarray(table.column("text").to_pylist(), dtype=object)})
        # Zero-shot labels (validation only, outside the train vocabulary) have no output to train: skipped.
        y = csr_from_arrow(table.column("labels"), self.labels, ignore_unknown=True)
        out["label_idx"] = padded_indices(y, self.width)
        return out


def encode_dataset(
    ds: ray.data.Dataset, tokenizer: Any, max_length: int, labels: list[str], width: int
) -> ray.data.Dataset:
    return ds.map_batches(
        EncodeBatch(tokenizer, max_length, labels, width), batch_format="pyarrow", batch_size=256
    ).select_columns(["input_ids", "attention_mask", "label_idx"])


def label_matrix(run: RunLayout, split: str, labels: list[str]) -> sp.csr_matrix:
    """A prepared split's labels as a 0/1 CSR matrix on the driver (reads the labels column only); labels
    outside `labels` (zero-shot ones) are left out."""
    parts = [csr_from_arrow(col, labels, ignore_unknown=True) for col in column_batches(run, split, "labels")]
    return sp.vstack(parts, format="csr") if parts else sp.csr_matrix((0, len(labels)), dtype=np.int8)


def make_tokenizer(cfg: Config, run: RunLayout, stats: dict) -> Any:
    """tiny-bert: a WordPiece vocabulary trained on the training texts, streamed from storage (never all
    held on the driver at once), saved under `<run>/tokenizer/` and reused while the training data is the
    same, so a resumed run sees the vocabulary its checkpoints were trained with (training the vocabulary
    twice on the same texts gave 791 and 792 tokens here); any other encoder brings its own tokenizer."""
    if cfg.model.encoder != TINY_BERT:
        return build_tokenizer(ModelConfig.from_any(cfg.model.model_dump(exclude={"init_bias_from_priors"})))
    key = hashlib.sha256(
        json.dumps(
            [stats["documents"], stats["label_counts"], cfg.model.vocab_size, cfg.model.lowercase],
            sort_keys=True,
        ).encode()
    ).hexdigest()[:16]
    folder = run.join("tokenizer")
    marker = folder.join("data_key.txt")
    if marker.exists() and read_bytes(marker).decode() == key:
        with tempfile.TemporaryDirectory() as d:
            download_dir(folder, d)
            return AutoTokenizer.from_pretrained(d)

    def texts() -> Iterator[str]:
        for col in column_batches(run, "train", "text", batch_size=4096):
            yield from col.to_pylist()

    tokenizer = train_wordpiece_tokenizer(
        texts(), vocab_size=cfg.model.vocab_size, lowercase=cfg.model.lowercase
    )
    with tempfile.TemporaryDirectory() as d:
        tokenizer.save_pretrained(d)
        Path(d, "data_key.txt").write_text(key)
        upload_dir(d, folder)
    return tokenizer


# ------------------------------------------------------------------------------------------------ metrics


def epoch_metrics(y: Any, scores: np.ndarray) -> dict[str, float]:
    """Validation metrics at 0.5 and after per-label threshold tuning; macro averages over the whole
    vocabulary, zero_division=0. `y` is 0/1, dense or scipy.sparse (the loop passes CSR)."""
    from pipeline.evaluation.metrics import per_label_ap

    ap = per_label_ap(y, scores)
    # The report applies per-label thresholds fitted on validation; the same fit here (optimistic: fitted and
    # measured on the same rows) lets epoch selection and Tune optimise what the report shows.
    fitted = fit_thresholds(y, scores, [str(i) for i in range(y.shape[1])]).validation
    return {
        "val_micro_f1": float(fitted["fixed_0.5"]["micro_f1"]),
        "val_macro_f1": float(fitted["fixed_0.5"]["macro_f1"]),
        "val_macro_ap": float(np.nanmean(ap)) if np.isfinite(ap).any() else 0.0,
        "val_tuned_micro_f1": float(fitted["chosen"]["micro_f1"]),
        "val_tuned_macro_f1": float(fitted["chosen"]["macro_f1"]),
    }


# ------------------------------------------------------------------------------------------------ worker


@dataclass
class _State:
    epoch: int = -1  # last completed epoch
    best: float | None = None
    bad_epochs: int = 0
    history: list | None = None


def _autocast(device: torch.device, precision: str):
    if device.type != "cuda" or precision == "fp32":
        return nullcontext(), None
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return torch.autocast("cuda", dtype=dtype), scaler


def _gather(arr: Any) -> Any:
    """Concatenate an array (numpy or scipy.sparse) across data-parallel ranks (identity with one worker)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return arr
    parts: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(parts, arr)
    return sp.vstack(parts, format="csr") if sp.issparse(arr) else np.concatenate(parts, axis=0)


def _batches_in_memory(shard: Any) -> dict[str, torch.Tensor]:
    """This worker's whole shard as tensors: weighted sampling draws indices over it each epoch."""
    cols: dict[str, list[np.ndarray]] = {"input_ids": [], "attention_mask": [], "label_idx": []}
    for batch in shard.iter_batches(batch_size=4096, batch_format="numpy"):
        for k in cols:
            cols[k].append(batch[k])
    return {k: torch.from_numpy(np.concatenate(v)) for k, v in cols.items()}


def param_groups(
    model: torch.nn.Module, lr: float, head_lr: float | None, weight_decay: float
) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on matrices only (not biases or LayerNorm); with a head_lr other than lr,
    the head's parameters in groups of their own at head_lr. Without one, the two groups (and so the
    optimizer state) are those of checkpoints written before head_lr existed."""
    params = list(model.parameters())
    if head_lr is None or head_lr == lr:
        parts = [(params, lr)]
    else:
        head_ids = {id(p) for p in _unwrap(model).head.parameters()}
        parts = [
            ([p for p in params if id(p) not in head_ids], lr),
            ([p for p in params if id(p) in head_ids], head_lr),
        ]
    groups = []
    for part, part_lr in parts:
        for decayed, decay in ((True, weight_decay), (False, 0.0)):
            chosen = [p for p in part if (p.ndim >= 2) == decayed]
            if chosen:
                groups.append({"params": chosen, "weight_decay": decay, "lr": part_lr})
    return groups


class _NoReportLines(logging.Filter):
    """Drops Train's per-report line ("Reporting training result N: TrainingReport(...)", every metric)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Reporting training result")


def _quiet_report_lines() -> None:
    """Keep Train's per-report INFO line off the worker's console (it stays in Train's app log file).

    Ray 2.60 logs it through a logger named after its source file, not `ray.train`, so RunConfig's
    LoggingConfig level does not reach it; it reaches the root logger's console handler.
    """
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            if not any(isinstance(f, _NoReportLines) for f in handler.filters):
                handler.addFilter(_NoReportLines())


def train_loop_per_worker(config: dict[str, Any]) -> None:
    _quiet_report_lines()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    seed = int(config["seed"])
    random.seed(seed + rank)
    np.random.seed(seed + rank)
    torch.manual_seed(seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    tcfg = config["train"]

    num_labels = len(config["labels"])
    model = build_model(config["model"], num_labels, config["tokenizer"])
    if config["init_bias"]:
        model.init_head_bias(np.asarray(config["counts"]) / max(config["num_docs"], 1))
    model = ray.train.torch.prepare_model(model)
    device = ray.train.torch.get_device()
    loss_fn = build_loss(
        config["loss_name"], config["counts"], config["num_docs"], dict(config["loss_params"])
    ).to(device)
    optimizer = torch.optim.AdamW(
        param_groups(model, tcfg["lr"], tcfg.get("head_lr"), tcfg["weight_decay"]), lr=tcfg["lr"]
    )
    steps_per_epoch = max(
        math.ceil(config["train_rows"] / world / tcfg["batch_size"] / tcfg["grad_accum"]), 1
    )
    batches_per_epoch = max(math.ceil(config["train_rows"] / world / tcfg["batch_size"]), 1)
    total_steps = steps_per_epoch * tcfg["epochs"]
    warmup = int(total_steps * tcfg["warmup_ratio"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_then_linear(total_steps, warmup))
    autocast, scaler = _autocast(device, tcfg["precision"])

    state = _State(history=[])
    best_weights: dict[str, torch.Tensor] | None = None
    # The newer of Ray's own record and the newest checkpoint folder of an earlier attempt: a job stopped
    # between a checkpoint's upload and Ray's registering it leaves Ray's record one epoch behind.
    checkpoint = newer_checkpoint(ray.train.get_checkpoint(), config.get("resume_from"))
    if checkpoint:
        with checkpoint.as_directory() as d:
            saved = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=False)
        _unwrap(model).load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        if scaler is not None and saved.get("scaler"):
            scaler.load_state_dict(saved["scaler"])
        state = _State(**saved["state"])
        best_weights = saved["best_weights"]
        if rank == 0:
            say(f"[train] resumed from checkpoint after epoch {state.epoch + 1}")

    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("validation")
    in_memory = _batches_in_memory(train_shard) if config["sampling"] != "none" else None
    metric, mode = tcfg["checkpoint_metric"], tcfg["checkpoint_mode"]
    start_time = time.perf_counter()
    progress = _Progress(tcfg["epochs"], batches_per_epoch, world, tcfg["progress_seconds"], rank)
    first_epoch = state.epoch + 1
    for epoch in range(first_epoch, tcfg["epochs"]):
        if tcfg["patience"] and state.bad_epochs >= tcfg["patience"]:
            break
        for callback in config.get("callbacks") or ():
            callback.on_epoch_start(epoch=epoch, rank=rank)
        t0 = time.perf_counter()
        model.train()
        batches = _Waited(_epoch_batches(train_shard, in_memory, config, tcfg, seed + epoch * 1000 + rank))
        loss_sum, rows, pending = 0.0, 0, False
        progress.start(epoch)
        optimizer.zero_grad(set_to_none=True)
        for step, batch in enumerate(batches):
            ids = batch["input_ids"].to(device)
            mask = batch["attention_mask"].to(device)
            y = dense_targets(batch["label_idx"].to(device), num_labels)
            with autocast:
                logits = model(ids, mask)
            loss = loss_fn(logits.float(), y) / tcfg["grad_accum"]
            (scaler.scale(loss) if scaler else loss).backward()
            pending = (step + 1) % tcfg["grad_accum"] != 0
            if not pending:
                _step(model, optimizer, scheduler, scaler, tcfg["grad_clip"])
            loss_sum += float(loss.detach()) * tcfg["grad_accum"] * len(ids)
            rows += len(ids)
            progress.step(step + 1, rows, loss_sum)
        if pending:  # the epoch ended inside an accumulation window
            _step(model, optimizer, scheduler, scaler, tcfg["grad_clip"])
        train_time = time.perf_counter() - t0

        val_loss, scores, targets = _validate(
            model, val_shard, loss_fn, device, autocast, tcfg["eval_batch_size"]
        )
        scores, targets = _gather(scores), _gather(targets)
        val_loss = float(np.mean(_gather(np.array([val_loss]))))
        metrics = {"epoch": epoch, "train_loss": loss_sum / max(rows, 1), "val_loss": val_loss}
        metrics.update(epoch_metrics(targets, scores))
        metrics["samples_per_s"] = rows * world / max(train_time, 1e-9)
        # Rank 0's share of the epoch spent waiting for batches: near 0 when the input pipeline keeps up.
        metrics["input_wait_fraction"] = batches.seconds / max(train_time, 1e-9)
        value = metrics[metric]
        improved = state.best is None or (value > state.best if mode == "max" else value < state.best)
        if improved:
            state.best, state.bad_epochs = value, 0
            best_weights = {k: v.detach().cpu().clone() for k, v in _unwrap(model).state_dict().items()}
        else:
            state.bad_epochs += 1
        state.epoch = epoch
        metrics["best_" + metric] = state.best
        state.history.append(metrics)
        done = epoch + 1 - first_epoch
        eta = (time.perf_counter() - start_time) / done * (tcfg["epochs"] - epoch - 1)
        if rank == 0:
            say(
                f"[train] epoch {epoch + 1}/{tcfg['epochs']} train_loss {metrics['train_loss']:.4f} "
                f"val_loss {val_loss:.4f} micro-F1 {metrics['val_micro_f1']:.3f} macro-F1 "
                f"{metrics['val_macro_f1']:.3f} (tuned {metrics['val_tuned_macro_f1']:.3f}) "
                f"mAP {metrics['val_macro_ap']:.3f} "
                f"{metrics['samples_per_s']:.0f} samples/s (input wait "
                f"{100 * metrics['input_wait_fraction']:.0f}%) ETA {eta:.0f}s"
            )
            progress.said()
        finished = epoch + 1 >= tcfg["epochs"] or bool(
            tcfg["patience"] and state.bad_epochs >= tcfg["patience"]
        )
        meta = {"fingerprint": config.get("fingerprint"), "epoch": epoch, "finished": finished}
        _report(
            metrics, rank, model, optimizer, scheduler, scaler, state, best_weights, config["local_dir"], meta
        )
    for callback in config.get("callbacks") or ():
        callback.on_train_end(model=_unwrap(model), rank=rank)


class _Progress:
    """Rank 0's progress line inside an epoch, once `seconds` have passed since its last line (this one's or
    the line after an epoch): a CPU epoch of a real corpus lasts tens of minutes, and the line after the
    epoch alone left the terminal silent that long. One clock for the whole run, so the validation pass
    and the next epoch's start count toward the gap too."""

    def __init__(self, epochs: int, batches: int, world: int, seconds: float, rank: int) -> None:
        self.epochs, self.batches, self.world = epochs, batches, world
        self.clock, self.on = Every(seconds), rank == 0
        self.epoch, self.t0 = 0, time.perf_counter()

    def start(self, epoch: int) -> None:
        self.epoch, self.t0 = epoch, time.perf_counter()

    def said(self) -> None:
        """Another line (the epoch's) was just printed: the next progress line is due `seconds` after it."""
        self.clock.last = time.perf_counter()

    def step(self, batch: int, rows: int, loss_sum: float) -> None:
        if not self.on or not self.clock.due():
            return
        took = time.perf_counter() - self.t0
        rate = rows / max(took, 1e-9)
        left = max(self.batches - batch, 0) * took / batch
        run_left = left + (self.epochs - self.epoch - 1) * self.batches * took / batch
        say(
            f"[train] epoch {self.epoch + 1}/{self.epochs} step {batch}/{self.batches} "
            f"{rate * self.world:.0f} samples/s loss {loss_sum / max(rows, 1):.4f} "
            f"epoch ETA {left:.0f}s, run ETA {run_left:.0f}s (without validation)"
        )


def warmup_then_linear(total_steps: int, warmup: int):
    """LR multiplier per step: linear warm-up over `warmup` steps, then linear decay to 0 at `total_steps`."""

    def factor(s: int) -> float:
        if s < warmup:
            return (s + 1) / max(warmup, 1)
        return max(0.0, (total_steps - s) / max(total_steps - warmup, 1))

    return factor


class TrainCallback:
    """Code of the caller's run inside every training worker: instrumentation, monitoring, fault drills.

    Pass instances to :func:`run_train` (``callbacks=[...]``); they are pickled to each worker, so keep them
    small and importable there (or registered with ``cloudpickle.register_pickle_by_value``). The defaults do
    nothing.
    """

    def on_epoch_start(self, *, epoch: int, rank: int) -> None:
        """Before `epoch` (0-based) of this worker, also the first epoch of a resumed attempt."""

    def on_train_end(self, *, model: torch.nn.Module, rank: int) -> None:
        """After this worker's last epoch, with its model (unwrapped from DDP)."""


def _epoch_batches(
    shard: Any, in_memory: dict[str, torch.Tensor] | None, config: dict, tcfg: dict, seed: int
):
    if in_memory is None:
        yield from shard.iter_torch_batches(
            batch_size=tcfg["batch_size"],
            local_shuffle_buffer_size=4 * tcfg["batch_size"],
            local_shuffle_seed=seed,
        )
        return
    num_labels = len(config["labels"])
    rows = csr_from_padded(in_memory["label_idx"].numpy(), num_labels)
    n = rows.shape[0]
    if config["sampling"] == "class-aware":
        idx = class_aware_indices(rows, num_labels, n, seed)
    else:
        weights = sample_weights(rows, np.asarray(config["counts"]), config["sampling"])
        idx = weighted_indices(weights, n, seed)
    idx = torch.as_tensor(np.asarray(idx), dtype=torch.long)
    for start in range(0, n, tcfg["batch_size"]):
        sel = idx[start : start + tcfg["batch_size"]]
        yield {k: v[sel] for k, v in in_memory.items()}


class _Waited:
    """Iterates `batches`, adding up the seconds spent waiting for each next one (reading, formatting,
    shuffling and collating in Ray Data's iterator, or indexing for in-memory sampling)."""

    def __init__(self, batches: Iterator[dict[str, torch.Tensor]]) -> None:
        self.batches = batches
        self.seconds = 0.0

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        it = iter(self.batches)
        while True:
            t0 = time.perf_counter()
            batch = next(it, None)
            self.seconds += time.perf_counter() - t0
            if batch is None:
                return
            yield batch


def _step(model, optimizer, scheduler, scaler, clip: float | None) -> None:
    if scaler:
        scaler.unscale_(optimizer)
    if clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


@torch.no_grad()
def _validate(
    model, shard, loss_fn, device, autocast, batch_size: int
) -> tuple[float, np.ndarray, sp.csr_matrix]:
    """(mean loss, dense scores, sparse 0/1 targets) of this worker's validation shard."""
    model.eval()
    c = _unwrap(model).head.out_features
    scores, targets, loss_sum, rows = [], [], 0.0, 0
    for batch in shard.iter_torch_batches(batch_size=batch_size):
        y = dense_targets(batch["label_idx"].to(device), c)
        with autocast:
            logits = model(batch["input_ids"].to(device), batch["attention_mask"].to(device))
        logits = logits.float()
        loss_sum += float(loss_fn(logits, y)) * len(y)
        rows += len(y)
        scores.append(torch.sigmoid(logits).cpu().numpy())
        # Ray puts the batch on the worker's device: a GPU's tensors must come back before numpy.
        targets.append(csr_from_padded(batch["label_idx"].cpu().numpy(), c))
    if not scores:
        return 0.0, np.zeros((0, c), np.float32), sp.csr_matrix((0, c), dtype=np.int8)
    return loss_sum / max(rows, 1), np.concatenate(scores), sp.vstack(targets, format="csr")


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def _report(
    metrics, rank, model, optimizer, scheduler, scaler, state: _State, best_weights, local_dir, meta
) -> None:
    if rank != 0:
        ray.train.report(metrics)
        return
    # In-process runs (num_workers=0) keep the checkpoint folder where it is, so it lives in a folder the
    # driver owns and removes; worker runs upload it to storage and drop the local copy.
    d = tempfile.mkdtemp(dir=local_dir, prefix="ckpt-")
    torch.save(
        {
            "model": _unwrap(model).state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler else None,
            "state": vars(state),
            # The best epoch's weights travel in every checkpoint, so the latest one (kept for resuming)
            # always holds the model to export.
            "best_weights": best_weights,
        },
        Path(d) / STATE_FILE,
    )
    # Small sidecar the driver reads without loading weights: which config made it, and whether it is final.
    (Path(d) / META_FILE).write_text(json.dumps(meta))
    ray.train.report(
        metrics,
        checkpoint=Checkpoint.from_directory(d),
        delete_local_checkpoint_after_upload=local_dir is None,
    )


# ------------------------------------------------------------------------------------------------ driver


REBALANCED = {"db", "r-fl", "db-0fl"}
#: Train settings that do not change the model: resources, retries, bookkeeping.
TRAIN_RESOURCE_KEYS = frozenset(
    {
        "num_workers",
        "use_gpu",
        "cpus_per_worker",
        "gpus_per_worker",
        "data_cpus",
        "placement_strategy",
        "max_failures",
        "keep_checkpoints",
        "eval_batch_size",
        "progress_seconds",
    }
)


@dataclass
class TrainInputs:
    """What every training run of a prepared run shares (one per train job, or one per Tune experiment)."""

    run: RunLayout
    labels: list[str]
    counts: list[int]
    num_docs: int
    tokenizer: Any
    #: Data-driven mu of the rebalanced weighting (average of mean and median of r over training positives).
    mu: float
    datasets: dict[str, ray.data.Dataset]
    model_cfg: ModelConfig
    #: Width of the datasets' `label_idx` column: the most labels of any train or validation row.
    label_width: int


def build_inputs(cfg: Config, tokenize: bool = True) -> TrainInputs:
    """Label statistics, tokenizer, mu and the tokenised, materialised train / validation datasets
    (`tokenize=False`: no datasets, for callers that read the prepared splits themselves)."""
    run = RunLayout.of(cfg)
    stats_loc = run.label_stats
    if not stats_loc.exists():
        raise InputError(f"{stats_loc.uri} not found: run the prepare stage first (python -m jobs.prepare)")
    stats = read_json(stats_loc)
    labels: list[str] = stats["labels"]
    counts = [stats["label_counts"][lab]["train"] for lab in labels]
    tokenizer = make_tokenizer(cfg, run, stats)
    y_train = label_matrix(run, "train", labels)
    mu = float(estimate_mu(y_train, counts))
    # One index width for both splits: Ray Data stacks the column as one fixed-shape tensor.
    width = max(row_width(y_train), row_width(label_matrix(run, "validation", labels)))
    model_cfg = ModelConfig.from_any(cfg.model.model_dump(exclude={"init_bias_from_priors"}))
    docs = stats["documents"]["train"]
    inputs = TrainInputs(run, labels, counts, docs, tokenizer, mu, {}, model_cfg, width)
    return with_datasets(cfg, inputs) if tokenize else inputs


def with_datasets(cfg: Config, inputs: TrainInputs) -> TrainInputs:
    """`inputs` with the tokenised, materialised train / validation datasets: the slow part of
    `build_inputs` (seconds of worker start-up even for a small split), so run_train does it only when it
    will fit."""
    datasets = {
        split: encode_dataset(
            read_prepared(inputs.run, split),
            inputs.tokenizer,
            cfg.model.max_length,
            inputs.labels,
            inputs.label_width,
        ).materialize()
        for split in ("train", "validation")
    }
    return replace(inputs, datasets=datasets)


def resolved_loss_params(name: str, params: dict[str, Any], inputs: TrainInputs) -> dict[str, Any]:
    """The loss parameters with the data-driven mu filled in, checked on the driver (not in a worker)."""
    out = dict(params)
    if name in REBALANCED and "mu" not in out:
        out["mu"] = inputs.mu
    build_loss(name, inputs.counts, inputs.num_docs, dict(out))
    return out


def make_trainer(
    cfg: Config,
    inputs: TrainInputs,
    run_config: RunConfig,
    loss_params: dict[str, Any],
    extra_loop_config: dict[str, Any] | None = None,
) -> TorchTrainer:
    plan = cluster_plan(cfg.train)
    loop_config = {
        "local_dir": None,
        "seed": cfg.run.seed,
        "train": cfg.train.model_dump(),
        "model": inputs.model_cfg.to_dict(),
        "tokenizer": inputs.tokenizer,
        "labels": inputs.labels,
        "counts": inputs.counts,
        "num_docs": inputs.num_docs,
        "train_rows": inputs.datasets["train"].count(),
        "loss_name": cfg.loss.name,
        "loss_params": loss_params,
        "sampling": cfg.train.sampling,
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
    log.info("resource plan: %s", plan.describe())
    # Tokenising waits until we know there is training to do: a finished run is exported, and a
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
    fp = fingerprint(cfg, inputs.labels, loss_params, inputs.tokenizer)
    resume = latest_checkpoint(run.checkpoints)
    meta = _checkpoint_meta(resume) if resume is not None else None
    if meta is not None and meta.get("fingerprint") != fp:
        raise InputError(
            f"{run.join('checkpoints').uri} holds checkpoints of a different configuration (loss, model, "
            "training settings or labels changed): use a new run.name, or delete that folder to start over"
        )
    t0 = time.perf_counter()
    if meta is not None and meta.get("finished"):
        log.info("training of this run already finished (%s); exporting its best epoch", resume.path)
        with resume.as_directory() as d:
            saved = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=False)
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
            {"resume_from": resume, "fingerprint": fp, "callbacks": list(callbacks)},
        )
    labels, tokenizer = inputs.labels, inputs.tokenizer
    model = build_model(inputs.model_cfg, len(labels), tokenizer)
    model.load_state_dict(saved["best_weights"])
    history = saved["state"]["history"]
    best = saved["state"]["best"]
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
    export_model(model, tokenizer, labels, extra, inputs.model_cfg, run.model)
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
        with result.checkpoint.as_directory() as d:
            return torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=False)
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


def fingerprint(cfg: Config, labels: list[str], loss_params: dict[str, Any], tokenizer: Any) -> str:
    """What a checkpoint must match to be resumed: everything that shapes the weights, not how long or where
    the run goes (epochs, patience, workers and resources may change between attempts)."""
    train = cfg.train.identity(set(TRAIN_RESOURCE_KEYS | {"epochs", "patience"}))
    blob = json.dumps(
        {
            "model": cfg.model.model_dump(),
            "loss": [cfg.loss.name, loss_params],
            "train": train,
            "labels": labels,
            "seed": cfg.run.seed,
            "vocab": sorted(tokenizer.get_vocab().items()),
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _checkpoint_meta(checkpoint: Checkpoint) -> dict[str, Any]:
    path = posixpath.join(checkpoint.path, META_FILE)
    try:
        with checkpoint.filesystem.open_input_stream(path) as f:
            return json.loads(f.read())
    except (FileNotFoundError, OSError):
        return {}


def newer_checkpoint(*checkpoints: Checkpoint | None) -> Checkpoint | None:
    """The checkpoint of the latest epoch among those given (None ignored; the first wins a tie)."""
    best, best_epoch = None, -2
    for checkpoint in checkpoints:
        if checkpoint is None:
            continue
        epoch = int(_checkpoint_meta(checkpoint).get("epoch", -1))
        if epoch > best_epoch:
            best, best_epoch = checkpoint, epoch
    return best


def latest_checkpoint(folder: Location) -> Checkpoint | None:
    """The newest complete checkpoint of an earlier attempt of this run, if any.

    Ray Train restores from its own snapshot file, but that file was missing after a run whose worker was
    killed (checked with Ray 2.60), so a restarted job would start over; the checkpoint folders themselves are
    the reliable record. Names sort by time; a folder without its state file is an interrupted upload.
    """
    if not folder.exists():
        return None
    candidates = sorted(
        (
            i.path
            for i in folder.fs.get_file_info(pafs.FileSelector(folder.path))
            if i.type == pafs.FileType.Directory and i.base_name.startswith("checkpoint_")
        ),
        reverse=True,
    )
    for path in candidates:
        if folder.fs.get_file_info(posixpath.join(path, STATE_FILE)).type == pafs.FileType.File:
            return Checkpoint(path=path, filesystem=folder.fs)
    return None


def export_model(
    model, tokenizer, labels: list[str], extra: dict, model_cfg: ModelConfig, dest: Location
) -> None:
    if dest.is_local:
        save_model(model, tokenizer, labels, dest.path, extra_config=extra, model_config=model_cfg)
        return
    with tempfile.TemporaryDirectory() as d:
        save_model(model, tokenizer, labels, Path(d) / "model", extra_config=extra, model_config=model_cfg)
        upload_dir(Path(d) / "model", dest)
