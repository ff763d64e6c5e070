"""The tune stage: Ray Tune over Ray Train, searching the loss family and its weighting parameters.

Train V2 pattern: each trial is a driver function that builds and fits a `TorchTrainer` with
`TuneReportCallback`, so every epoch's validation metrics reach Tune (and ASHA can stop a bad trial early).
With `tune.mode: embeddings` the encoder's pooled embeddings are computed once (embeddings.py) and
each trial trains only the head on them in its own process (head_train.py): no Ray Train start-up
per trial, so a CPU cluster can afford many more trials.
The experiment lives in `<run>/tune/`; submitting the same job again calls `Tuner.restore` on it so that only
unfinished trials run. The driver also keeps its own record of finished trials
(`<run>/tune/finished_trials.json`, rewritten atomically as each trial completes): when Tune's saved state
cannot be read (a killed driver once left a truncated searcher file, and Ray then silently restarted the
search with fewer trials), the search starts again from that record, with the finished trials' results given
to the searcher, and runs only the rest.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import posixpath
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from ray import tune
from ray.train import CheckpointConfig, FailureConfig, RunConfig
from ray.tune.integration.ray_train import TuneReportCallback

from pipeline.core.config import Config
from pipeline.core.errors import InputError, ResourceError
from pipeline.core.resources import cluster_plan
from pipeline.core.storage import Location, locate, read_bytes, read_json, write_bytes, write_json
from pipeline.training.checkpoints import latest_checkpoint
from pipeline.training.search_space import loss_from_trial, optuna_space, random_space, resolve_space
from pipeline.training.train import TrainInputs, build_inputs, make_trainer, resolved_loss_params

log = logging.getLogger(__name__)

EXPERIMENT = "tune"
#: The driver's own record of finished trials, inside the experiment folder.
LEDGER = "finished_trials.json"


def trial_config(cfg: Config, config: dict[str, Any], space: dict[str, dict]) -> Config:
    """The run config of one trial: the base config with the trial's loss, parameters, learning rate and
    train.l2 (a constant range, which Optuna does not suggest, gives its value)."""
    name, params = loss_from_trial(config, space)
    data = cfg.model_dump()
    data["loss"] = {"name": name, "params": params}
    for key, span in (("lr", cfg.tune.lr), ("l2", cfg.tune.l2)):
        value = config.get(key)
        if value is None and span is not None and span[0] == span[1]:
            value = span[0]
        if value is not None:
            data["train"][key] = float(value)
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
    # A restored trial continues from its newest Train checkpoint (Train's own restore was unreliable after
    # a kill, see checkpoints.latest_checkpoint).
    resume = latest_checkpoint(run.join(run_config.name))
    make_trainer(cfg, inputs, run_config, params, {"resume_from": resume}).fit()


def _head_trial(
    config: dict[str, Any], *, base: dict, cache: str, space: dict[str, dict], data: dict[str, Any]
) -> None:
    """One trial of the embeddings mode: the head alone, trained here on the cached features."""
    import torch

    from pipeline.training.checkpoints import read_state
    from pipeline.training.embeddings import load_split
    from pipeline.training.head_train import train_head

    cfg = trial_config(Config.model_validate(base), config, space)
    torch.set_num_threads(max(1, int(cfg.tune.trial_cpus)))
    folder = locate(cache, cfg.storage)
    train = load_split(folder, "train", data["labels"])
    val = load_split(folder, "validation", data["labels"])
    resume = None
    checkpoint = tune.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            resume = read_state(Path(d) / "head.pt")

    def report(epoch: int, metrics: dict[str, float], state: dict[str, Any]) -> None:
        with tempfile.TemporaryDirectory() as d:
            torch.save(state, Path(d) / "head.pt")
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))

    params = _loss_params(cfg, data)
    train_head(cfg, train, val, data["counts"], data["num_docs"], params, report=report, resume=resume)


def _loss_params(cfg: Config, data: dict[str, Any]) -> dict[str, Any]:
    from pipeline.training.train import REBALANCED

    params = dict(cfg.loss.params)
    if cfg.loss.name in REBALANCED and "mu" not in params:
        params["mu"] = data["mu"]
    return params


def run_tune(cfg: Config) -> dict[str, Any]:
    """Search, then write `<run>/best_params.yaml` and `<run>/tune/summary.csv`; returns the best params."""
    import ray

    tcfg = cfg.tune
    space = resolve_space(tcfg.families, tcfg.space)
    if tcfg.mode == "embeddings" and cfg.model.kind != "encoder":
        raise InputError(
            "tune.mode=embeddings trains the encoder kind's head on frozen encoder embeddings; with "
            f"model.kind={cfg.model.kind} use tune.mode=full (the frozen and combined kinds embed once "
            "per experiment there too)"
        )
    if tcfg.mode == "embeddings":
        from pipeline.training.embeddings import ensure_embeddings

        cpus = float(ray.cluster_resources().get("CPU", 0.0))
        if tcfg.trial_cpus > cpus:
            raise ResourceError(f"tune.trial_cpus={tcfg.trial_cpus:g} but the cluster has CPU={cpus:g}")
        concurrent = tcfg.max_concurrent or max(1, int(cpus // tcfg.trial_cpus))
        inputs = build_inputs(cfg, tokenize=False)
        stats = read_json(inputs.run.label_stats)
        cache = ensure_embeddings(cfg, inputs.run, stats, inputs.featurizer.tokenizer)
        data = {
            "labels": inputs.labels,
            "counts": inputs.counts,
            "num_docs": inputs.num_docs,
            "mu": inputs.mu,
        }
        trainable = tune.with_resources(
            tune.with_parameters(_head_trial, base=cfg.model_dump(), cache=cache.uri, space=space, data=data),
            {"CPU": tcfg.trial_cpus},
        )
        how = f"head-only trials on cached embeddings, {tcfg.trial_cpus:g} CPU each"
    else:
        if cfg.train.num_workers < 1:
            # In-process training (num_workers=0) calls ray.train.* inside the Tune trial, which Ray 2.60
            # refuses.
            raise InputError(
                "tune needs train.num_workers >= 1 (each trial runs a TorchTrainer with workers), "
                "or tune.mode=embeddings"
            )
        plan = cluster_plan(cfg.train)
        concurrent = tcfg.max_concurrent or plan.concurrent_trials
        inputs = build_inputs(cfg)
        trainable = tune.with_resources(
            tune.with_parameters(_trial, base=cfg.model_dump(), inputs=inputs, space=space),
            {"CPU": tcfg.driver_cpus},
        )
        how = plan.describe()
    log.info("tune: %d trials over %s, %d at a time (%s)", tcfg.num_samples, tcfg.families, concurrent, how)
    run = inputs.run
    exp = run.join(EXPERIMENT)
    if tcfg.mode == "embeddings":
        # Those per-checkpoint saves are what we want; Tune warns about them when they come < 5 s apart.
        os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    t0 = time.perf_counter()
    ledger_loc = exp.join(LEDGER)
    finished = read_ledger(ledger_loc)
    ledger = TrialLedger(ledger_loc, tcfg.metric, cfg.train.epochs, space)
    restorable = tune.Tuner.can_restore(exp.path, storage_filesystem=run.fs)
    broken = unreadable_state(exp) if restorable else []
    if restorable and not broken:
        log.info("tune: restoring the experiment at %s (finished trials are kept)", exp.uri)
        tuner = tune.Tuner.restore(
            exp.path,
            trainable=trainable,
            resume_unfinished=True,
            resume_errored=True,
            storage_filesystem=run.fs,
        )
    else:
        if broken:
            aside = _set_aside(exp, broken)
            log.warning(
                "tune: Tune's saved state cannot be read (%s; the driver was probably stopped while writing "
                "it), moved to %s; restarting the search from the %d finished trial(s) recorded in %s",
                ", ".join(posixpath.basename(b) for b in broken),
                aside.uri,
                len(finished),
                ledger_loc.uri,
            )
        remaining = tcfg.num_samples - len(finished)
        tuner = None
        if remaining > 0:
            if finished:
                log.info("tune: %d trial(s) finished before, %d to run", len(finished), remaining)
            search, param_space = _searcher(tcfg, space, concurrent, finished)
            scheduler = (
                tune.schedulers.ASHAScheduler(
                    max_t=cfg.train.epochs,
                    grace_period=tcfg.grace_period,
                    reduction_factor=tcfg.reduction_factor,
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
                    num_samples=remaining,
                    max_concurrent_trials=concurrent if tcfg.search == "optuna" else None,
                    # Head-only trials last seconds: a fresh actor (torch import) per trial dominated.
                    reuse_actors=tcfg.mode == "embeddings",
                ),
                run_config=tune.RunConfig(
                    name=EXPERIMENT,
                    storage_path=run.path,
                    storage_filesystem=run.fs,
                    callbacks=[ledger],
                    # Head trials checkpoint every epoch. num_to_keep makes Tune save the experiment state
                    # after each trial checkpoint instead of every >= 10 s: with the 10 s period, a driver
                    # killed seconds after trials finished lost them, and the restored search ran them again.
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=1)
                    if tcfg.mode == "embeddings"
                    else None,
                ),
            )
    new_rows = summarise(tuner.fit(), cfg.train.epochs, tcfg.metric, space) if tuner is not None else []
    # Rows of this fit win over the record (a restored trial's row covers all its epochs).
    by_id = {trial_id: entry["row"] for trial_id, entry in finished.items()}
    by_id.update({r["trial_id"]: r for r in new_rows})
    rows = list(by_id.values())
    if len(rows) < tcfg.num_samples:
        raise RuntimeError(
            f"tune: only {len(rows)} of tune.num_samples={tcfg.num_samples} trials have results in "
            f"{exp.uri}; the search was not completed (submit the same job again to run the rest)"
        )
    ok = [r for r in rows if r[tcfg.metric] is not None]
    if not ok:
        raise RuntimeError(f"tune: no trial reported {tcfg.metric}; see {exp.uri}")
    best = max(ok, key=lambda r: r[tcfg.metric])
    best_params: dict[str, Any] = {"loss": {"name": best["loss"], "params": best["params"]}}
    objective = {tcfg.metric: best[tcfg.metric], "trial_id": best["trial_id"], "mode": tcfg.mode}
    lr = _resolved(best["lr"], tcfg.lr)
    if tcfg.mode == "full":
        best_params["train"] = {"lr": lr}
    else:
        # The head's learning rate, as train.head_lr: fine-tuning then runs the encoder at train.lr and the
        # head at the rate that trained it best on the frozen features. On Reuters a fine-tuned MiniLM learned
        # the rare labels only with a head lr of this order (see README, Benchmarks).
        best_params["train"] = {"head_lr": lr}
        objective["head_lr"] = lr
    if tcfg.l2 is not None:
        best_params["train"]["l2"] = _resolved(best.get("l2"), tcfg.l2)
    best_params["objective"] = objective
    write_bytes(run.best_params, yaml.safe_dump(best_params, sort_keys=False).encode())
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


def _resolved(value: float | None, span: tuple[float, float]) -> float | None:
    """A trial's value of a searched range; a constant range (not suggested by Optuna) gives its value."""
    return span[0] if value is None and span[0] == span[1] else value


def _searcher(
    tcfg: Any, space: dict[str, dict], concurrent: int, finished: dict[str, dict]
) -> tuple[Any, dict | None]:
    """(search algorithm, param_space) of a new search; the finished trials of an earlier, unrestorable one
    are told to Optuna as completed trials and left out of the points still to evaluate."""
    done = [entry["config"] for entry in finished.values()]
    points = [p for p in (tcfg.points_to_evaluate or []) if p not in done] or None
    if tcfg.search == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        define = optuna_space(space, tcfg.lr, tcfg.l2)
        storage, study_name = None, None
        if finished:
            # Ray's OptunaSearch takes no evaluated_rewards with a define-by-run space; a study of our own
            # that already holds those trials gives TPE the same knowledge.
            storage, study_name = optuna.storages.InMemoryStorage(), EXPERIMENT
            study = optuna.create_study(storage=storage, study_name=study_name, direction="maximize")
            for entry in finished.values():
                value = entry["row"].get(tcfg.metric)
                if value is None:
                    continue
                fixed = optuna.trial.FixedTrial(entry["config"])
                try:
                    define(fixed)
                    study.add_trial(
                        optuna.trial.create_trial(
                            params=fixed.params, distributions=fixed.distributions, value=value
                        )
                    )
                except ValueError as err:  # the space changed since: the row still counts, TPE skips it
                    log.warning("tune: a finished trial is outside the current space, not told: %s", err)
        search = OptunaSearch(
            space=define,
            metric=tcfg.metric,
            mode="max",
            seed=tcfg.seed,
            points_to_evaluate=points,
            storage=storage,
            study_name=study_name,
        )
        return search, None
    from ray.tune.search.basic_variant import BasicVariantGenerator

    search = BasicVariantGenerator(
        points_to_evaluate=points,
        # Another stream after a restart, so the new trials do not repeat the finished ones' draws.
        random_state=tcfg.seed + len(finished),
        max_concurrent=concurrent,
    )
    return search, random_space(space, tcfg.lr, tcfg.l2)


class TrialLedger(tune.Callback):
    """Driver-side record of finished trials: config and summary row, rewritten as each trial completes."""

    def __init__(self, loc: Location, metric: str, max_epochs: int, space: dict[str, dict]) -> None:
        self.loc, self.metric, self.max_epochs, self.space = loc, metric, max_epochs, space

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        analysis = trial.metric_analysis or {}
        config = dict(trial.config or {})
        row = trial_row(
            trial.trial_id,
            config,
            (analysis.get(self.metric) or {}).get("max"),
            (analysis.get("val_tuned_micro_f1") or {}).get("max"),
            int((trial.last_result or {}).get("training_iteration") or 0),
            None,
            self.max_epochs,
            self.metric,
            self.space,
        )
        entries = read_ledger(self.loc)
        entries[trial.trial_id] = {"config": config, "row": row}
        write_json(self.loc, entries)


def read_ledger(loc: Location) -> dict[str, dict]:
    """trial id -> {"config", "row"} of the finished trials recorded at `loc` ({} when there is none)."""
    if not loc.exists():
        return {}
    return json.loads(read_bytes(loc))


def unreadable_state(exp: Location) -> list[str]:
    """Paths of Tune's saved state files in `exp` that are cut short or corrupt (checked without running
    them: JSON parsed, pickles walked opcode by opcode)."""
    import pickletools

    prefixes = ("experiment_state-", "searcher-state-", "basic-variant-state-", "search_gen_state-")
    bad = []
    for path in exp.files():
        name = posixpath.relpath(path, exp.path)
        if "/" in name or not (name.startswith(prefixes) or name in ("tuner.pkl", "trainable.pkl")):
            continue
        data = read_bytes(Location(exp.fs, path, exp.uri.rstrip("/") + "/" + name))
        try:
            if name.endswith(".json"):
                json.loads(data)
            else:
                for _ in pickletools.genops(data):
                    pass
                if not data:
                    raise ValueError("empty")
        except (ValueError, UnicodeDecodeError):
            bad.append(path)
    return bad


def _set_aside(exp: Location, paths: list[str]) -> Location:
    """Move every saved-state file of the experiment (the unreadable ones included) into a dated folder, so
    the next start neither restores from nor trips over them."""
    aside = exp.join(time.strftime("unreadable-state-%Y%m%d-%H%M%S"))
    aside.fs.create_dir(aside.path)
    prefixes = ("experiment_state-", "searcher-state-", "basic-variant-state-", "search_gen_state-")
    names = {posixpath.basename(p) for p in paths}
    for path in exp.files():
        name = posixpath.relpath(path, exp.path)
        if "/" not in name and (name in names or name.startswith(prefixes) or name == "tuner.pkl"):
            exp.fs.move(path, posixpath.join(aside.path, name))
    return aside


def trial_row(
    trial_id: str | None,
    config: dict[str, Any],
    best: float | None,
    best_micro: float | None,
    epochs: int,
    error: BaseException | None,
    max_epochs: int,
    metric: str,
    space: dict[str, dict],
) -> dict[str, Any]:
    """The summary row of one trial: params, best metrics, epochs run and why it stopped."""
    name, params = loss_from_trial(config, space) if config.get("loss") else (None, {})
    if error is not None:
        reason = f"error: {type(error).__name__}"
    elif epochs < max_epochs:
        reason = "stopped early (scheduler or patience)"
    else:
        reason = "completed"
    return {
        "trial_id": trial_id,
        "loss": name,
        "params": params,
        "lr": config.get("lr"),
        "l2": config.get("l2"),
        metric: None if best is None else float(best),
        "val_tuned_micro_f1": None if best_micro is None else float(best_micro),
        "epochs_run": epochs,
        "stop_reason": reason,
    }


def summarise(results: Any, max_epochs: int, metric: str, space: dict[str, dict]) -> list[dict[str, Any]]:
    """One row per trial of a Tune result grid (see trial_row)."""
    rows = []
    for result in results:
        df = result.metrics_dataframe
        has = df is not None and len(df) > 0
        rows.append(
            trial_row(
                (result.metrics or {}).get("trial_id"),
                result.config or {},
                df[metric].max() if has and metric in df else None,
                df["val_tuned_micro_f1"].max() if has and "val_tuned_micro_f1" in df else None,
                int(df["training_iteration"].max()) if has else 0,
                result.error,
                max_epochs,
                metric,
                space,
            )
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


def replay_head(cfg: Config, best_params: dict[str, Any]) -> dict[str, Any]:
    """Embeddings mode: train the head again with `best_params` (its loss and head_lr) on the same cache and
    seed; returns {"history", "best"}. The best trial's objective is reproduced exactly (see tests)."""
    from pipeline.core.config import apply_params
    from pipeline.training.embeddings import ensure_embeddings, load_split
    from pipeline.training.head_train import train_head

    objective = best_params.get("objective") or {}
    if objective.get("mode") != "embeddings":
        raise ValueError(
            "replay_head replays an embeddings-mode search; for a full search run jobs.train --params"
        )
    cfg = apply_params(cfg, {k: v for k, v in best_params.items() if k != "objective"})
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"lr": objective["head_lr"]})})
    inputs = build_inputs(cfg, tokenize=False)
    cache = ensure_embeddings(cfg, inputs.run, read_json(inputs.run.label_stats), inputs.featurizer.tokenizer)
    data = {"labels": inputs.labels, "counts": inputs.counts, "num_docs": inputs.num_docs, "mu": inputs.mu}
    return train_head(
        cfg,
        load_split(cache, "train", inputs.labels),
        load_split(cache, "validation", inputs.labels),
        inputs.counts,
        inputs.num_docs,
        _loss_params(cfg, data),
    )
