"""The orchestrator of `run_all`: prepare -> [tune] -> train -> evaluate, each stage skipped when its manifest
(`pipeline.runs.manifest`) vouches for outputs made from the same inputs, and every stage after one that ran
run again.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import yaml

from pipeline.core.config import Config, apply_params
from pipeline.core.errors import InputError
from pipeline.core.layout import RunLayout
from pipeline.core.resources import check_run_resources
from pipeline.core.storage import delete_dir, read_bytes, read_json, write_json
from pipeline.data.prepare import run_prepare
from pipeline.evaluation.evaluate import run_evaluate
from pipeline.runs.manifest import (
    CHECKPOINTS_RECORD,
    MANIFEST_DIR,
    SEARCH_RECORD,
    STAGES,
    StageInputs,
    delete_manifest,
    digest,
    evaluate_inputs,
    manifest_location,
    prepare_inputs,
    read_manifest,
    source_identity,
    train_inputs,
    tune_inputs,
    why_run,
    write_manifest,
)
from pipeline.training.checkpoints import latest_checkpoint
from pipeline.training.train import run_train

log = logging.getLogger(__name__)


def _run_tune(cfg: Config) -> dict[str, Any]:
    """Imported here: Ray Tune and Optuna load only when a run asks for tuning."""
    from pipeline.training.tune import run_tune

    return run_tune(cfg)


def _invalidate_from(run: RunLayout, stage: str) -> None:
    """Before `stage` runs: its manifest and every later one stop vouching for their outputs."""
    for later in STAGES[STAGES.index(stage) :]:
        delete_manifest(run, later)


def _prepare_synthetic(cfg: Config, run: RunLayout, identity: dict[str, Any], old: dict | None) -> None:
    """The synthetic corpus lives under the run and prepare only writes it when absent: remove it unless the
    last completed prepare recorded the same synthetic parameters (else a changed parameter, or a corpus
    half-written by a killed job, would be used as it is)."""
    if cfg.data.source != "synthetic":
        return
    data = run.data
    if data.exists() and (old is None or (old.get("parts") or {}).get("source") != digest(identity)):
        log.info("prepare: removing the synthetic corpus at %s (not made with these parameters)", data.uri)
        delete_dir(data)


def _guard_checkpoints(run: RunLayout, prepare_hash: str) -> None:
    """Refuse checkpoints trained on other prepared data: train's fingerprint covers settings, labels and
    tokenizer, not the rows, so it would resume (or re-export) them as if nothing had changed."""
    record = run.join(MANIFEST_DIR, CHECKPOINTS_RECORD)
    has_checkpoints = latest_checkpoint(run.checkpoints) is not None
    old = read_json(record) if record.exists() else None
    if has_checkpoints and old is not None and old.get("prepare") != prepare_hash:
        raise InputError(
            f"{run.join('checkpoints').uri} holds checkpoints trained on other prepared data (the data or "
            "the data section changed since; prepare manifest "
            f"{str(old.get('prepare'))[:12]}, now {prepare_hash[:12]}): use a new run.name, or delete that "
            "folder to train from scratch"
        )
    if not has_checkpoints or old is None:
        write_json(record, {"prepare": prepare_hash})


def _fresh_search(run: RunLayout, tune_hash: str) -> None:
    """`<run>/tune/` is resumed by the tune stage (Tuner.restore) whatever inputs it was made from: remove a
    search recorded (`manifests/tune-search.json`) as made from other inputs; keep an interrupted one of these
    inputs, or one of unknown origin, for the tune stage to continue."""
    record = run.join(MANIFEST_DIR, SEARCH_RECORD)
    old = read_json(record) if record.exists() else None
    exp = run.tune
    if exp.exists() and old is not None and old.get("tune") != tune_hash:
        log.info("tune: removing the search of other inputs at %s", exp.uri)
        delete_dir(exp)
    write_json(record, {"tune": tune_hash})


def run_stages(cfg: Config, tune: bool = False) -> dict[str, dict[str, Any]]:
    """prepare -> (tune) -> train -> evaluate with manifests; returns per stage {"ran", "reason", "hash"}.

    With `tune`, train and evaluate use `best_params.yaml` applied to `cfg` (config.apply_params).
    """
    run = RunLayout.of(cfg)
    check_run_resources(cfg, tune)  # every stage's request against the cluster, before the first stage
    stages = ["prepare", "tune", "train", "evaluate"] if tune else ["prepare", "train", "evaluate"]
    results: dict[str, dict[str, Any]] = {}
    forced: str | None = None  # the earlier stage that ran in this invocation, if any

    def step(inputs: StageInputs, body) -> None:
        nonlocal forced
        stage = inputs.stage
        reason = f"an earlier stage ({forced}) ran" if forced else why_run(run, inputs)
        if reason is None:
            log.info(
                "%s: skipped: outputs exist for the same inputs (manifest %s, hash %s)",
                stage,
                manifest_location(run, stage).uri,
                inputs.hash[:12],
            )
            results[stage] = {"ran": False, "reason": "same inputs, outputs exist", "hash": inputs.hash}
            return
        log.info("%s: running: %s", stage, reason)
        _invalidate_from(run, stage)
        t0 = time.perf_counter()
        body()
        write_manifest(run, inputs, time.perf_counter() - t0)
        results[stage] = {"ran": True, "reason": reason, "hash": inputs.hash}
        forced = forced or stage

    identity = source_identity(cfg)
    prep = prepare_inputs(cfg, identity)
    # Read before `step` deletes it: what the last completed prepare was made from.
    old_prepare = read_manifest(run, "prepare")

    def do_prepare() -> None:
        _prepare_synthetic(cfg, run, identity, old_prepare)
        run_prepare(cfg)

    step(prep, do_prepare)

    train_cfg, best_params = cfg, None
    if tune:
        tune_in = tune_inputs(cfg, prep.hash)

        def do_tune() -> None:
            _fresh_search(run, tune_in.hash)
            _run_tune(cfg)

        # `tune` sorts before `train` in STAGES, so running it also invalidates train and evaluate.
        step(tune_in, do_tune)
        best_params = yaml.safe_load(read_bytes(run.best_params).decode()) or {}
        train_cfg = apply_params(cfg, best_params)

    train_in = train_inputs(train_cfg, prep.hash, best_params)

    def do_train() -> None:
        _guard_checkpoints(run, prep.hash)
        run_train(train_cfg)

    step(train_in, do_train)
    step(evaluate_inputs(train_cfg, train_in.hash), lambda: run_evaluate(train_cfg))
    return {s: results[s] for s in stages}
