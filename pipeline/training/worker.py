"""The train stage's loop in every Ray Train worker (Train V2 API): batches, steps, validation metrics,
progress lines and a checkpoint per epoch; it resumes from the newest of `ray.train.get_checkpoint()`, the
checkpoint the driver found (`resume_from`) and the newest complete one in the run's checkpoint folder as the
worker starts (`checkpoints`: a worker restarted within the same fit finds an epoch Ray had not yet recorded).

`train_loop_per_worker(config)` takes the loop config that `pipeline.training.train.make_trainer` builds;
`config["callbacks"]` holds :class:`TrainCallback` instances, the caller's own code in every worker.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray.train
import ray.train.torch
import scipy.sparse as sp
import torch
from ray.train import Checkpoint

from pipeline.core.console import Every, say
from pipeline.data.labels import csr_from_padded, dense_targets
from pipeline.evaluation.thresholds import fit_thresholds
from pipeline.modeling.frozen import choose_mix
from pipeline.modeling.losses import build_loss
from pipeline.modeling.model import build_model, unwrap
from pipeline.modeling.sampling import class_aware_indices, sample_weights, weighted_indices
from pipeline.training import checkpoints
from pipeline.training.checkpoints import latest_checkpoint, load_state, newer_checkpoint, save_state
from pipeline.training.validation_scores import ScoreBuffer, all_gather


def epoch_metrics(y: Any, scores: Any) -> dict[str, float]:
    """Validation metrics at 0.5 and after per-label threshold tuning; macro averages over the whole
    vocabulary, zero_division=0. `y` is 0/1, dense or scipy.sparse (the loop passes CSR); `scores` an array
    or ``ScoreBlocks`` (the loop passes ``validation_scores.RankBlocks``)."""
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


def mixed_epoch_metrics(y: Any, branch_scores: Any, metric: str, mode: str) -> dict[str, float]:
    """:func:`epoch_metrics` of the best mix of two branches' probabilities (see
    ``pipeline.modeling.frozen.choose_mix``) by the checkpoint metric, with that weight as ``mix``."""
    if metric == "val_loss":  # the loss is the branches' own; it cannot choose between mixes
        metric, mode = "val_tuned_macro_f1", "max"
    sign = 1.0 if mode == "max" else -1.0

    def score(mixed: np.ndarray) -> tuple[float, dict[str, float]]:
        m = epoch_metrics(y, mixed)
        return sign * m[metric], m

    w, metrics = choose_mix(branch_scores, score)
    return {**metrics, "mix": w}


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
    parts = all_gather(arr)
    if len(parts) == 1:
        return arr
    return sp.vstack(parts, format="csr") if sp.issparse(arr) else np.concatenate(parts, axis=0)


def content_order(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """Row indices that sort the rows of equally long `arrays` by a digest of their content: the same order
    whatever order the rows came in (rows of equal content are interchangeable)."""
    keys = [np.ascontiguousarray(arrays[k]).reshape(len(arrays[k]), -1) for k in sorted(arrays)]
    n = len(keys[0]) if keys else 0
    digests = np.empty(n, dtype="S16")
    for i in range(n):
        h = hashlib.blake2b(digest_size=16)
        for key in keys:
            h.update(key[i].tobytes())
        digests[i] = h.digest()
    return np.argsort(digests, kind="stable")


def _batches_in_memory(shard: Any, columns: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """This worker's whole shard as tensors, shuffled or sampled each epoch (`_epoch_batches`).

    Ray Data hands a worker its blocks in the order they become ready, which changes from run to run; put
    in :func:`content_order` first, the seeded per-epoch order is the same in every run of one worker."""
    cols: dict[str, list[np.ndarray]] = {c: [] for c in (*columns, "label_idx")}
    for batch in shard.iter_batches(batch_size=4096, batch_format="numpy"):
        for k in cols:
            cols[k].append(batch[k])
    # One column's batches (then its unordered copy) freed as the next is made: the peak stays near one shard.
    arrays = {k: np.concatenate(cols.pop(k)) for k in list(cols)}
    order = content_order(arrays)
    return {k: torch.from_numpy(arrays.pop(k)[order]) for k in list(arrays)}


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
        head_ids = {id(p) for p in unwrap(model).head.parameters()}
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


def adamw(params: Any, lr: float, eps: float, weight_decay: float = 0.0) -> torch.optim.AdamW:
    """AdamW with torch's fused kernel (CPU and CUDA): one pass over each weight where the default makes
    about five; the lexical kind's step over EURLEX57K's 100k x 4,108 weights took 2.0 s -> 0.4 s on 2 CPU
    cores. Each weight's update is the same formula."""
    return torch.optim.AdamW(params, lr=lr, eps=eps, weight_decay=weight_decay, fused=True)


def add_head_l2_grad(head: torch.nn.Module, l2: float, num_labels: int) -> None:
    """Add the gradient of ``l2 / num_labels x`` the squared norm of the head's weight matrices (biases and
    1-D parameters excluded) to their ``.grad``, in place. With a loss that is the mean over the batch's
    (document, label) cells, each label's objective is its mean loss plus ``l2 x |w_label|^2``, whatever the
    label count. Called once per optimizer step, after the gradients are accumulated (and unscaled), before
    clipping: the same update as the penalty in the objective, without the full-size temporaries autograd
    makes for it (about 3 s of a 7 s step on EURLEX57K's 100k x 4,108 weights, 2 CPU cores)."""
    if not l2:
        return
    alpha = 2.0 * l2 / max(num_labels, 1)
    with torch.no_grad():
        for p in head.parameters():
            if p.ndim < 2 or not p.requires_grad:  # as autograd: a frozen weight gets no gradient
                continue
            if p.grad is None:
                p.grad = p.detach() * alpha
            else:
                p.grad.add_(p.detach(), alpha=alpha)


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


def worker_threads(cpus: float) -> int:
    """Torch threads of a training worker that reserved ``cpus`` CPUs: rounded up. Ray's default
    (OMP_NUM_THREADS = the floor) gave the lexical kind's 1.5-CPU worker on a 2-CPU machine one thread, and
    its AdamW and EmbeddingBag passes over 100k x 4,108 weights run on every thread they get."""
    return max(1, math.ceil(cpus))


def train_loop_per_worker(config: dict[str, Any]) -> None:
    _quiet_report_lines()
    if config["train"]["num_workers"] >= 1:  # in-process (0): the driver's own settings stay
        # Denormal floats (below 1.2e-38) as zero, before the thread pool grows (a new thread inherits the
        # flag; one started earlier keeps its own). AdamW's second moments of weights whose gradients are
        # tiny (a rare label's, on a document far from it) sink below that range, and the CPU handles such
        # numbers in microcode: on EURLEX57K's lexical kind 13% of them were denormal after 2 epochs and a
        # fused AdamW step took 1.0 s against 0.25 s flushed (2 threads). A value that small is 0 beside eps.
        torch.set_flush_denormal(True)
        torch.set_num_threads(worker_threads(config["train"]["cpus_per_worker"]))
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    seed = int(config["seed"])
    random.seed(seed + rank)
    np.random.seed(seed + rank)
    torch.manual_seed(seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    tcfg = config["train"]

    num_labels = len(config["labels"])
    featurizer = config["featurizer"]
    columns = tuple(featurizer.columns)
    model = build_model(config["model"], num_labels, featurizer)
    # Models of several branches (the combined kind) put the loss on each branch and mix them on validation.
    branched = getattr(model, "num_branches", 1) > 1
    if config["init_bias"]:
        model.init_head_bias(np.asarray(config["counts"]) / max(config["num_docs"], 1))
    model = ray.train.torch.prepare_model(model)
    device = ray.train.torch.get_device()
    loss_fn = build_loss(
        config["loss_name"], config["counts"], config["num_docs"], dict(config["loss_params"])
    ).to(device)
    optimizer = adamw(
        param_groups(model, tcfg["lr"], tcfg.get("head_lr"), tcfg["weight_decay"]),
        lr=tcfg["lr"],
        eps=tcfg["adam_eps"],
    )

    def penalty() -> None:
        add_head_l2_grad(unwrap(model).head, tcfg["l2"], num_labels)

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
    # The newest of Ray's own record and the newest complete checkpoint folder (found by the driver, and again
    # now): a worker killed between a checkpoint's upload and Ray's registering it leaves Ray's record one
    # epoch behind, both across jobs and when Ray restarts the worker group within one fit.
    folder = config.get("checkpoints")
    checkpoint = newer_checkpoint(
        ray.train.get_checkpoint(),
        config.get("resume_from"),
        latest_checkpoint(folder) if folder is not None else None,
    )
    if checkpoint:
        saved = load_state(checkpoint)
        unwrap(model).load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        if scaler is not None and saved.get("scaler"):
            scaler.load_state_dict(saved["scaler"])
        state = _State(**saved["state"])
        best_weights = checkpoints.best_weights(saved)
        if rank == 0:
            say(f"[train] resumed from checkpoint after epoch {state.epoch + 1}")

    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("validation")
    in_memory = _batches_in_memory(train_shard, columns) if config["in_memory"] else None
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
        # The loss is summed on the device and read once an epoch (or when a progress line is due): reading it
        # every step made the CPU wait for the GPU, which then idled while the next step was launched.
        loss_total, rows, pending = torch.zeros((), dtype=torch.float64, device=device), 0, False
        progress.start(epoch)
        optimizer.zero_grad(set_to_none=True)
        for step, batch in enumerate(batches):
            features = {c: batch[c].to(device, non_blocking=True) for c in columns}
            y = dense_targets(batch["label_idx"].to(device, non_blocking=True), num_labels)
            with autocast:
                logits = model(**features, branches=True) if branched else model(**features)
            if branched:
                loss = sum(loss_fn(z.float(), y) for z in logits) / tcfg["grad_accum"]
            else:
                loss = loss_fn(logits.float(), y) / tcfg["grad_accum"]
            (scaler.scale(loss) if scaler else loss).backward()
            pending = (step + 1) % tcfg["grad_accum"] != 0
            if not pending:
                _step(model, optimizer, scheduler, scaler, tcfg["grad_clip"], penalty)
            loss_total += loss.detach().double() * (tcfg["grad_accum"] * len(y))
            rows += len(y)
            progress.step(step + 1, rows, loss_total)
        if pending:  # the epoch ended inside an accumulation window
            _step(model, optimizer, scheduler, scaler, tcfg["grad_clip"], penalty)
        loss_sum = float(loss_total)  # waits for the epoch's last step
        train_time = time.perf_counter() - t0

        val_loss, scores, targets = _validate(
            model,
            val_shard,
            loss_fn,
            device,
            autocast,
            tcfg["eval_batch_size"],
            columns,
            num_labels,
            branched,
        )
        targets = _gather(targets)
        val_loss = float(np.mean(_gather(np.array([val_loss]))))
        metrics = {"epoch": epoch, "train_loss": loss_sum / max(rows, 1), "val_loss": val_loss}
        if branched:
            metrics.update(mixed_epoch_metrics(targets, scores, metric, mode))
            unwrap(model).mix.fill_(metrics["mix"])  # before best_weights are copied: they carry it
        else:
            metrics.update(epoch_metrics(targets, scores))
        del scores  # the stored validation scores leave the object store
        metrics["samples_per_s"] = rows * world / max(train_time, 1e-9)
        # Rank 0's share of the epoch spent waiting for batches: near 0 when the input pipeline keeps up.
        metrics["input_wait_fraction"] = batches.seconds / max(train_time, 1e-9)
        value = metrics[metric]
        improved = state.best is None or (value > state.best if mode == "max" else value < state.best)
        if improved:  # copied for the epochs to come; this epoch's checkpoint stores them once, as its model
            state.best, state.bad_epochs = value, 0
            best_weights = {k: v.detach().cpu().clone() for k, v in unwrap(model).state_dict().items()}
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
                + (f"mix {metrics['mix']:.1f} " if branched else "")
                + f"{metrics['samples_per_s']:.0f} samples/s (input wait "
                f"{100 * metrics['input_wait_fraction']:.0f}%) ETA {eta:.0f}s"
            )
            progress.said()
        stopped_early = bool(tcfg["patience"] and state.bad_epochs >= tcfg["patience"])
        finished = epoch + 1 >= tcfg["epochs"] or stopped_early
        meta = {
            "fingerprint": config.get("fingerprint"),
            "epoch": epoch,
            "finished": finished,
            "stopped_early": stopped_early,
        }
        _report(
            metrics,
            rank,
            model,
            optimizer,
            scheduler,
            scaler,
            state,
            checkpoints.BEST_IS_MODEL if improved else best_weights,
            config["local_dir"],
            meta,
        )
    for callback in config.get("callbacks") or ():
        callback.on_train_end(model=unwrap(model), rank=rank)


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

    def step(self, batch: int, rows: int, loss_sum: torch.Tensor | float) -> None:
        if not self.on or not self.clock.due():
            return
        loss_sum = float(loss_sum)  # a device tensor: read only when a line is due
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

    Pass instances to :func:`pipeline.training.train.run_train` (``callbacks=[...]``); they are pickled to
    each worker, so keep them small and importable there (or registered with
    ``cloudpickle.register_pickle_by_value``). The defaults do nothing.
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
    n = int(in_memory["label_idx"].shape[0])
    if config["sampling"] == "none":
        idx = np.random.default_rng(seed).permutation(n)  # each row once, in a new order every epoch
    else:
        num_labels = len(config["labels"])
        rows = csr_from_padded(in_memory["label_idx"].numpy(), num_labels)
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


def _step(model, optimizer, scheduler, scaler, clip: float | None, penalty: Callable[[], None]) -> None:
    if scaler:
        scaler.unscale_(optimizer)
    penalty()
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
    model,
    shard,
    loss_fn,
    device,
    autocast,
    batch_size: int,
    columns: tuple[str, ...],
    c: int,
    branched: bool = False,
) -> tuple[float, Any, sp.csr_matrix]:
    """(mean loss, scores, sparse 0/1 targets) of this worker's validation shard. The scores of all ranks as
    blocks in the object store (``validation_scores.RankBlocks``: no documents x labels matrix here);
    ``branched``: blocks of both branches, mixed by their ``mixed(w)``, the loss the branches' sum (what
    training minimises). Collective: every rank calls it."""
    model.eval()
    scores, targets, loss_sum, rows = ScoreBuffer(c, 2 if branched else 1), [], 0.0, 0
    for batch in shard.iter_torch_batches(batch_size=batch_size):
        y = dense_targets(batch["label_idx"].to(device), c)
        features = {k: batch[k].to(device) for k in columns}
        with autocast:
            logits = model(**features, branches=True) if branched else model(**features).unsqueeze(0)
        logits = logits.float()
        loss_sum += sum(float(loss_fn(z, y)) for z in logits) * len(y)
        rows += len(y)
        scores.add(list(torch.sigmoid(logits).cpu().numpy()))
        # Ray puts the batch on the worker's device: a GPU's tensors must come back before numpy.
        targets.append(csr_from_padded(batch["label_idx"].cpu().numpy(), c))
    y = sp.vstack(targets, format="csr") if targets else sp.csr_matrix((0, c), dtype=np.int8)
    return loss_sum / max(rows, 1), scores.finish(), y


def _report(
    metrics, rank, model, optimizer, scheduler, scaler, state: _State, best_weights, local_dir, meta
) -> None:
    if rank != 0:
        ray.train.report(metrics)
        return
    # In-process runs (num_workers=0) keep the checkpoint folder where it is, so it lives in a folder the
    # driver owns and removes; worker runs upload it to storage and drop the local copy.
    d = tempfile.mkdtemp(dir=local_dir, prefix="ckpt-")
    save_state(
        Path(d),
        {
            "model": unwrap(model).state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler else None,
            "state": vars(state),
            # The best epoch's weights travel in every checkpoint, so the latest one (kept for resuming)
            # always holds the model to export.
            "best_weights": best_weights,
        },
        # Small sidecar the driver reads without loading weights: which config made it, whether it is final.
        meta,
    )
    ray.train.report(
        metrics,
        checkpoint=Checkpoint.from_directory(d),
        delete_local_checkpoint_after_upload=local_dir is None,
    )
