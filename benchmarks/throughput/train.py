"""Section train: steady-state samples/s of Ray Train (the train stage's TorchTrainer, 1 worker) against the
same worker loop in a bare PyTorch process (same model, loop config, tensors, batch size and threads)."""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.throughput.context import (
    CLUSTER_TRAIN,
    PhaseSampler,
    RayContext,
    ensure_prepared,
    load_cfg,
    pickle_by_value,
)
from benchmarks.throughput.niceness import enter_bare_side, probe_threads


def _harmonic(rates: list[float]) -> float:
    """Rate of equal-sized pieces run one after the other (total work / total time)."""
    return len(rates) / sum(1.0 / r for r in rates) if rates and all(r > 0 for r in rates) else 0.0


def _train_times_callback(path: str):
    from ray.train import UserCallback

    class ReportTimes(UserCallback):
        """Runs in the Train controller: the wall-clock time of every ray.train.report, with rank 0's
        metrics (the worker's own samples_per_s covers only its training batches)."""

        def after_report(self, run_context, metrics, checkpoint):
            with open(path, "a") as f:
                f.write(json.dumps({"t": time.time(), "metrics": metrics[0]}, default=str) + "\n")

    return ReportTimes()


def timed_fit(cfg, inputs, loss_params: dict, name: str, times_path: Path) -> tuple[dict[str, Any], dict]:
    """Fit through pipeline.training.train.make_trainer (the train stage's TorchTrainer) and time it."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig

    from pipeline.training.train import make_trainer

    run_config = RunConfig(
        name=name,
        storage_path=inputs.run.path,
        storage_filesystem=inputs.run.fs,
        failure_config=FailureConfig(max_failures=0),
        checkpoint_config=CheckpointConfig(num_to_keep=1),
        callbacks=[_train_times_callback(str(times_path))],
    )
    trainer = make_trainer(
        cfg, inputs, run_config, loss_params, {"local_dir": None, "resume_from": None, "fingerprint": name}
    )
    times_path.unlink(missing_ok=True)
    t0 = time.time()
    trainer.fit()
    t1 = time.time()
    reports = [json.loads(line) for line in times_path.read_text().splitlines() if line.strip()]
    if len(reports) != cfg.train.epochs:
        raise RuntimeError(f"{name}: {len(reports)} epoch reports for {cfg.train.epochs} epochs")
    train_rows = int(trainer.train_loop_config["train_rows"])
    return _fit_summary(reports, t0, t1, train_rows), trainer.train_loop_config


def _fit_summary(reports: list[dict], t0: float, t1: float, train_rows: int) -> dict[str, Any]:
    rates = [float(r["metrics"]["samples_per_s"]) for r in reports]
    train_s = [train_rows / r for r in rates]
    walls = [reports[0]["t"] - t0] + [b["t"] - a["t"] for a, b in zip(reports, reports[1:], strict=False)]
    # Per-epoch work outside the training batches: validation, metrics, checkpoint upload, report. The
    # controller sees reports when it polls the workers, so each timestamp is late by up to a poll interval.
    between = [max(w - s, 0.0) for w, s in zip(walls[1:], train_s[1:], strict=True)]
    per_epoch_other = statistics.median(between) if between else None
    steady = rates[1:] if len(rates) > 1 else rates
    startup = max(walls[0] - train_s[0] - (per_epoch_other or 0.0), 0.0)
    waits = [float(r["metrics"]["input_wait_fraction"]) for r in reports]
    return {
        "epochs": len(rates),
        "train_rows": train_rows,
        "samples_per_s_per_epoch": [round(r, 1) for r in rates],
        # The loop's own measure: share of each epoch rank 0 spent waiting for Ray Data's next batch.
        "input_wait_fraction_per_epoch": [round(w, 4) for w in waits],
        "steady_samples_per_s": round(_harmonic(steady), 1),
        "steady_epochs": "epochs 2.." if len(rates) > 1 else "epoch 1 only (one epoch: includes warm-up)",
        "first_epoch_samples_per_s": round(rates[0], 1),
        "startup_s": round(startup, 2),
        "startup_what": "fit() to the first epoch's report, less its training batches and the per-epoch "
        "validation/report time: controller, placement group, worker process start, torch import, model "
        "build, dataset shard set-up (report times are the Train controller's, late by up to one poll)",
        "per_epoch_validation_checkpoint_s": None if per_epoch_other is None else round(per_epoch_other, 2),
        "teardown_s": round(t1 - reports[-1]["t"], 2),
        "fit_wall_s": round(t1 - t0, 2),
        "end_to_end_samples_per_s": round(len(rates) * train_rows / (t1 - t0), 1),
    }


def train_inputs(work: Path, params: dict[str, Any], ctx: RayContext) -> tuple[Any, dict[str, float]]:
    """The prepared training corpus and pipeline.training.train.build_inputs (tokenizer, mu, tokenised and
    materialised splits), once per Ray start."""
    from pipeline.training.train import build_inputs

    if "inputs" in ctx.cache:
        return ctx.cache["inputs"], {}
    t0 = time.perf_counter()
    ensure_prepared(work, params)
    t1 = time.perf_counter()
    inputs = build_inputs(load_cfg(work, params))
    t2 = time.perf_counter()
    ctx.cache["inputs"] = inputs
    return inputs, {"prepare_s": round(t1 - t0, 2), "build_inputs_s": round(t2 - t1, 2)}


def phase_train_ray(
    work: Path, params: dict[str, Any], sampler: PhaseSampler, ctx: RayContext
) -> dict[str, Any]:
    import numpy as np
    import torch

    from pipeline.training.train import resolved_loss_params

    pickle_by_value()
    info = ctx.ensure("local", "train_ray")
    extra = CLUSTER_TRAIN if ctx.kind == "cluster" else []
    sampler.reset()
    inputs, setup = train_inputs(work, params, ctx)
    cfg = load_cfg(work, params, extra)
    loss_params = resolved_loss_params(cfg.loss.name, cfg.loss.params, inputs)
    threads = probe_threads(cfg.train.cpus_per_worker, work)
    # A name of its own per child: Train V2 restores a run of the same name and storage path, so a repeat
    # would resume the previous repeat's finished run instead of training.
    tag = f"bench-1w-{os.getpid()}"
    summary, loop_config = timed_fit(cfg, inputs, loss_params, tag, work / f"{tag}.jsonl")
    memory = sampler.window()
    if ctx.kind == "cluster":  # the same fit as the scaling section's 1-worker run: reuse it there
        ctx.cache["scale_1w"] = {**summary, "reused_from": "train (same cluster and settings)"}
    # The bare loop gets the very same tensors (the materialised, tokenised train split) and loop config.
    cols: dict[str, list] = {}
    for batch in inputs.datasets["train"].iter_batches(batch_size=4096, batch_format="numpy"):
        for k, v in batch.items():
            cols.setdefault(k, []).append(v)
    np.savez(work / "train_tensors.npz", **{k: np.concatenate(v) for k, v in cols.items()})
    torch.save(dict(loop_config), work / "train_loop_config.pt")
    return {
        **summary,
        "workers": 1,
        "cpus_per_worker": cfg.train.cpus_per_worker,
        "batch_size": cfg.train.batch_size,
        "worker_threads": threads,
        **info,
        **setup,
        "setup_what": "prepare_s: run_prepare of the synthetic corpus; build_inputs_s: label stats, "
        "WordPiece tokenizer, mu, tokenisation in Ray Data, materialise (neither is in the rates)",
        "peak_memory": memory,
    }


def phase_train_bare(
    work: Path, params: dict[str, Any], sampler: PhaseSampler, ctx: RayContext
) -> dict[str, Any]:
    """The worker loop of pipeline.training.train without Ray: same config dict, same tensors, same step."""
    import numpy as np
    import torch

    from pipeline.modeling.losses import build_loss
    from pipeline.modeling.model import build_model
    from pipeline.training.worker import adamw, add_head_l2_grad, param_groups, warmup_then_linear

    niceness = enter_bare_side(work)
    t0 = time.perf_counter()
    config = torch.load(work / "train_loop_config.pt", weights_only=False)
    data = np.load(work / "train_tensors.npz")
    tensors = {k: torch.from_numpy(data[k]) for k in data.files}
    num_labels = len(config["labels"])
    # Padded label indices (the current loop): the multi-hot targets are built per batch, as the loop does.
    if "label_idx" in tensors:
        from pipeline.data.labels import dense_targets

        def targets(t: torch.Tensor) -> torch.Tensor:
            return dense_targets(t, num_labels)

        target_key = "label_idx"
    else:
        target_key = "targets"

        def targets(t: torch.Tensor) -> torch.Tensor:
            return t

    tcfg = config["train"]
    torch.manual_seed(int(config["seed"]))
    model = build_model(config["model"], len(config["labels"]), config["featurizer"])
    if config["init_bias"]:
        model.init_head_bias(np.asarray(config["counts"]) / max(config["num_docs"], 1))
    loss_fn = build_loss(
        config["loss_name"], config["counts"], config["num_docs"], dict(config["loss_params"])
    )
    optimizer = adamw(
        param_groups(model, tcfg["lr"], tcfg.get("head_lr"), tcfg["weight_decay"]),
        lr=tcfg["lr"],
        eps=tcfg["adam_eps"],
    )
    n, bs = len(tensors[target_key]), int(tcfg["batch_size"])
    total_steps = max(math.ceil(n / bs / tcfg["grad_accum"]), 1) * tcfg["epochs"]
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_then_linear(total_steps, int(total_steps * tcfg["warmup_ratio"]))
    )
    startup = time.perf_counter() - t0

    def step_optimizer() -> None:
        add_head_l2_grad(model.head, tcfg["l2"], len(config["labels"]))
        if tcfg["grad_clip"]:
            torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg["grad_clip"])
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

    gen = torch.Generator().manual_seed(int(config["seed"]))
    rates = []
    for _ in range(int(tcfg["epochs"])):
        model.train()
        order = torch.randperm(n, generator=gen)
        t_epoch = time.perf_counter()
        rows, loss_sum = 0, 0.0
        optimizer.zero_grad(set_to_none=True)
        pending = False
        for step, start in enumerate(range(0, n, bs)):
            sel = order[start : start + bs]
            ids, mask = tensors["input_ids"][sel], tensors["attention_mask"][sel]
            y = targets(tensors[target_key][sel])
            logits = model(ids, mask)
            loss = loss_fn(logits.float(), y) / tcfg["grad_accum"]
            loss.backward()
            pending = (step + 1) % tcfg["grad_accum"] != 0
            if not pending:
                step_optimizer()
            loss_sum += float(loss.detach()) * tcfg["grad_accum"] * len(ids)
            rows += len(ids)
        if pending:
            step_optimizer()
        rates.append(rows / (time.perf_counter() - t_epoch))
    steady = rates[1:] if len(rates) > 1 else rates
    return {
        "epochs": len(rates),
        "train_rows": n,
        "samples_per_s_per_epoch": [round(r, 1) for r in rates],
        "steady_samples_per_s": round(_harmonic(steady), 1),
        "first_epoch_samples_per_s": round(rates[0], 1),
        "startup_s": round(startup, 2),
        "startup_what": "load config and tensors, build the model, loss, optimiser",
        "torch_threads": torch.get_num_threads(),
        "niceness": niceness,
        "final_train_loss": round(loss_sum / max(rows, 1), 4),
        "peak_memory": sampler.window(),
    }
