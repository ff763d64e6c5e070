"""The tune stage: Ray Tune over Ray Train, searching the loss family and its weighting parameters.

Train V2 pattern: each trial is a driver function that builds and fits a `TorchTrainer` with
`TuneReportCallback`, so every epoch's validation metrics reach Tune (and ASHA can stop a bad trial early).
The experiment lives in `<run>/tune/`; submitting the same job again calls `Tuner.restore` on it so that only
unfinished trials run (that path has no test yet).
"""

from __future__ import annotations

import csv
import io
import logging
import time
from typing import Any

import yaml
from ray import tune
from ray.train import CheckpointConfig, FailureConfig, RunConfig
from ray.tune.integration.ray_train import TuneReportCallback

from pipeline.config import Config
from pipeline.resources import cluster_plan
from pipeline.search_space import loss_from_trial, optuna_space, random_space, resolve_space
from pipeline.storage import write_bytes
from pipeline.train import TrainInputs, build_inputs, make_trainer, resolved_loss_params

log = logging.getLogger(__name__)

EXPERIMENT = "tune"


def trial_config(cfg: Config, config: dict[str, Any], space: dict[str, dict]) -> Config:
    """The run config of one trial: the base config with the trial's loss, parameters and learning rate."""
    name, params = loss_from_trial(config, space)
    data = cfg.model_dump()
    data["loss"] = {"name": name, "params": params}
    if config.get("lr") is not None:
        data["train"]["lr"] = float(config["lr"])
    return Config.model_validate(data)


def _trial(config: dict[str, Any], *, base: dict, inputs: TrainInputs, space: dict[str, dict]) -> None:
    """One trial: a TorchTrainer whose epochs report to Tune (use ray.tune.* here, not ray.train.*)."""
    cfg = trial_config(Config.model_validate(base), config, space)
    ctx = tune.get_context()
    run = inputs.run.join(EXPERIMENT, "trials")
    run_config = RunConfig(
        name=f"train_{ctx.get_trial_id()}",
        storage_path=run.path,
        storage_filesystem=run.fs,
        failure_config=FailureConfig(max_failures=cfg.train.max_failures),
        checkpoint_config=CheckpointConfig(num_to_keep=1),
        callbacks=[TuneReportCallback()],
    )
    params = resolved_loss_params(cfg.loss.name, cfg.loss.params, inputs)
    make_trainer(cfg, inputs, run_config, params).fit()


def run_tune(cfg: Config) -> dict[str, Any]:
    """Search, then write `<run>/best_params.yaml` and `<run>/tune/summary.csv`; returns the best params."""
    tcfg = cfg.tune
    if cfg.train.num_workers < 1:
        # In-process training (num_workers=0) calls ray.train.* inside the Tune trial, which Ray 2.60 refuses.
        raise ValueError("tune needs train.num_workers >= 1 (each trial runs a TorchTrainer with workers)")
    plan = cluster_plan(cfg.train)
    space = resolve_space(tcfg.families, tcfg.space)
    concurrent = tcfg.max_concurrent or plan.concurrent_trials
    log.info(
        "tune: %d trials over %s, %d at a time (%s)",
        tcfg.num_samples,
        tcfg.families,
        concurrent,
        plan.describe(),
    )
    inputs = build_inputs(cfg)
    run = inputs.run
    exp = run.join(EXPERIMENT)
    trainable = tune.with_resources(
        tune.with_parameters(_trial, base=cfg.model_dump(), inputs=inputs, space=space),
        {"CPU": tcfg.driver_cpus},
    )
    t0 = time.perf_counter()
    if tune.Tuner.can_restore(exp.path, storage_filesystem=run.fs):
        log.info("tune: restoring the experiment at %s (finished trials are kept)", exp.uri)
        tuner = tune.Tuner.restore(
            exp.path,
            trainable=trainable,
            resume_unfinished=True,
            resume_errored=True,
            storage_filesystem=run.fs,
        )
    else:
        if tcfg.search == "optuna":
            from ray.tune.search.optuna import OptunaSearch

            search = OptunaSearch(
                space=optuna_space(space, tcfg.lr),
                metric=tcfg.metric,
                mode="max",
                seed=tcfg.seed,
                points_to_evaluate=tcfg.points_to_evaluate or None,
            )
            param_space = None
        else:
            from ray.tune.search.basic_variant import BasicVariantGenerator

            search = BasicVariantGenerator(
                points_to_evaluate=tcfg.points_to_evaluate or None,
                random_state=tcfg.seed,
                max_concurrent=concurrent,
            )
            param_space = random_space(space, tcfg.lr)
        scheduler = (
            tune.schedulers.ASHAScheduler(
                max_t=cfg.train.epochs, grace_period=tcfg.grace_period, reduction_factor=tcfg.reduction_factor
            )
            if tcfg.scheduler == "asha"
            else None
        )
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                metric=tcfg.metric,
                mode="max",
                search_alg=search,
                scheduler=scheduler,
                num_samples=tcfg.num_samples,
                max_concurrent_trials=concurrent if tcfg.search == "optuna" else None,
            ),
            run_config=tune.RunConfig(name=EXPERIMENT, storage_path=run.path, storage_filesystem=run.fs),
        )
    results = tuner.fit()
    rows = summarise(results, cfg.train.epochs, tcfg.metric, space)
    ok = [r for r in rows if r[tcfg.metric] is not None]
    if not ok:
        raise RuntimeError(f"tune: no trial reported {tcfg.metric}; see {exp.uri}")
    best = max(ok, key=lambda r: r[tcfg.metric])
    best_params = {
        "loss": {"name": best["loss"], "params": best["params"]},
        "train": {"lr": best["lr"]},
        "objective": {tcfg.metric: best[tcfg.metric], "trial_id": best["trial_id"]},
    }
    write_bytes(run.join("best_params.yaml"), yaml.safe_dump(best_params, sort_keys=False).encode())
    write_bytes(exp.join("summary.csv"), _csv(rows).encode())
    log.info(
        "tune done in %.0fs: %d trials, best %s %.4f (%s)",
        time.perf_counter() - t0,
        len(rows),
        tcfg.metric,
        best[tcfg.metric],
        best["loss"],
    )
    return best_params


def summarise(results: Any, max_epochs: int, metric: str, space: dict[str, dict]) -> list[dict[str, Any]]:
    """One row per trial: params, best and last metrics, epochs run and why it stopped."""
    rows = []
    for result in results:
        config = result.config or {}
        name, params = loss_from_trial(config, space) if config.get("loss") else (None, {})
        df = result.metrics_dataframe
        epochs = int(df["training_iteration"].max()) if df is not None and len(df) else 0
        best = float(df[metric].max()) if df is not None and metric in df else None
        if result.error is not None:
            reason = f"error: {type(result.error).__name__}"
        elif epochs < max_epochs:
            reason = "stopped early (scheduler or patience)"
        else:
            reason = "completed"
        rows.append(
            {
                "trial_id": (result.metrics or {}).get("trial_id"),
                "loss": name,
                "params": params,
                "lr": config.get("lr"),
                metric: best,
                "val_tuned_micro_f1": float(df["val_tuned_micro_f1"].max())
                if df is not None and "val_tuned_micro_f1" in df
                else None,
                "epochs_run": epochs,
                "stop_reason": reason,
            }
        )
    return rows


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    k: (yaml.safe_dump(v, default_flow_style=True).strip() if isinstance(v, dict) else v)
                    for k, v in row.items()
                }
            )
    return buf.getvalue()
