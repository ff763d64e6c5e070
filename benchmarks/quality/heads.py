"""The classification head per loss row on the frozen features: trained with `head_train.train_head`, its best
epoch kept, thresholds fitted on validation as the evaluate stage does, measured on test."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.quality.config import GROUPS, LOSS_ROWS, BenchConfig, with_loss, with_train
from benchmarks.quality.features import Features

log = logging.getLogger("benchmarks.quality")


def train_and_score(cfg: Any, inputs: Any, feats: Features, name: str, params: dict[str, Any]) -> dict:
    """Train the head with `train_head`, keep the best epoch's weights (checkpoint_metric on validation, the
    train stage's rule), and return its validation and test scores."""
    import torch

    from pipeline.training.head_train import build_head, train_head
    from pipeline.training.train import resolved_loss_params

    cfg = with_loss(cfg, name, params)
    loss_params = resolved_loss_params(name, params, inputs)
    metric, mode = cfg.train.checkpoint_metric, cfg.train.checkpoint_mode
    best: dict[str, Any] = {"value": None, "epoch": None, "head": None}

    def keep_best(epoch: int, metrics: dict[str, float], state: dict[str, Any]) -> None:
        value = metrics[metric]
        if best["value"] is None or (value > best["value"] if mode == "max" else value < best["value"]):
            # state_dict tensors share storage with the live parameters: copy them.
            best.update(
                value=value, epoch=epoch, head={k: v.detach().clone() for k, v in state["head"].items()}
            )

    # One intra-op thread, as in a Tune trial (tune.trial_cpus=1): on the shared 2-CPU machine two threads
    # made these small per-batch ops 10-17x slower (measured on 2 epochs of the Reuters head).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    try:
        out = train_head(
            cfg, feats.train, feats.val, inputs.counts, inputs.num_docs, loss_params, report=keep_best
        )
    finally:
        torch.set_num_threads(threads)
    seconds = time.perf_counter() - t0
    priors = np.asarray(inputs.counts, dtype=np.float64) / max(inputs.num_docs, 1)
    head = build_head(feats.train.x.shape[1], len(inputs.labels), cfg.model.dropout, priors)
    head.load_state_dict(best["head"])
    head.eval()
    with torch.no_grad():
        s_val = torch.sigmoid(head(torch.from_numpy(np.asarray(feats.val.x)))).numpy()
        s_test = torch.sigmoid(head(torch.from_numpy(feats.x_test))).numpy()
    return {
        "loss": name,
        "loss_params": {k: (float(v) if isinstance(v, np.floating) else v) for k, v in loss_params.items()},
        "epochs_run": len(out["history"]),
        "best_epoch": best["epoch"],
        "best_" + metric: out["best"],
        "seconds": round(seconds, 1),
        "s_val": s_val,
        "s_test": s_test,
    }


def select_head(bc: BenchConfig, inputs: Any, feats: Features, timings: dict[str, float]) -> tuple:
    """The head hyper-parameters for every loss row, chosen on validation only. Returns (config, the
    candidates' validation figures, the chosen candidate's trained rows: reused, as training is
    deterministic)."""
    cfg = bc.cfg
    if len(bc.head_grid) == 1:
        return with_train(cfg, **bc.head_grid[0]), [], {}
    metric = cfg.train.checkpoint_metric
    trials = []
    scored: list[dict[str, dict[str, Any]]] = []
    t0 = time.perf_counter()
    for cand in bc.head_grid:
        cand_cfg = with_train(cfg, **cand)
        runs = {}
        for row in bc.selection_losses:
            name, params = LOSS_ROWS[row]
            runs[row] = train_and_score(cand_cfg, inputs, feats, name, params)
        per_loss = {row: r["best_" + metric] for row, r in runs.items()}
        score = float(np.mean(list(per_loss.values())))
        trials.append({"head": cand, "validation_" + metric: per_loss, "mean": score})
        scored.append(runs)
        log.info("head candidate %s: validation %s %s (mean %.4f)", cand, metric, per_loss, score)
    timings["head_selection"] = round(time.perf_counter() - t0, 1)
    i = int(np.argmax([t["mean"] for t in trials]))
    trials[i]["chosen"] = True
    return with_train(cfg, **trials[i]["head"]), trials, scored[i]


def measure(
    bc: BenchConfig,
    stats: dict[str, Any],
    inputs: Any,
    y_test: np.ndarray,
    pred: np.ndarray,
    scores: np.ndarray,
) -> dict[str, Any]:
    """Test metrics with our `metrics.evaluate` and the groups of label_stats.json, plus the
    test-oracle figures: each label's best F1 over every threshold on these test scores. No decision rule on
    the scores does better, so they bound what threshold fitting alone could recover."""
    from pipeline.data.groups import assign_groups
    from pipeline.evaluation.metrics import evaluate
    from pipeline.evaluation.thresholds import best_f1_thresholds

    ev = evaluate(
        y_test.astype(np.int64),
        np.asarray(pred).astype(np.int64),
        np.asarray(scores, dtype=np.float64),
        inputs.labels,
        np.asarray(inputs.counts),
        head_min=stats["groups"]["head_min"],
        tail_max=stats["groups"]["tail_max"],
    )
    overall = ev["overall"]
    row = {
        "micro_f1": overall["micro_f1"],
        "macro_f1": overall["macro_f1"],
        "macro_ap": overall["macro_ap"],
        **{f"{g}_f1": ev["groups"][g]["macro_f1"] for g in GROUPS},
        "micro_precision": overall["micro_precision"],
        "micro_recall": overall["micro_recall"],
        "macro_precision": overall["macro_precision"],
        "macro_recall": overall["macro_recall"],
        "p_at_1": overall["p_at_1"],
        "labels_with_f1_gt_0": ev["labels_with_f1_gt_0"],
        "never_correct": len(ev["never_correct"]),
        "groups_micro_f1": {g: ev["groups"][g]["micro_f1"] for g in GROUPS},
    }
    _, oracle, _ = best_f1_thresholds(y_test, np.asarray(scores, dtype=np.float32))
    limits = stats["groups"]
    tail = assign_groups(np.asarray(inputs.counts), limits["head_min"], limits["tail_max"]) == "tail"
    row["oracle_macro_f1"] = float(oracle.mean())
    row["oracle_tail_f1"] = float(oracle[tail].mean()) if tail.any() else None
    return row


def threshold_and_measure(
    bc: BenchConfig, stats: dict[str, Any], inputs: Any, feats: Features, scored: dict[str, Any]
) -> dict[str, Any]:
    """The evaluate stage's decision: thresholds fitted on validation, applied to test."""
    from pipeline.evaluation.thresholds import fit_thresholds_with

    # The global fallback, as the committed quality rows were measured (before the prior fallback existed).
    ecfg = bc.cfg.evaluate.model_copy(update={"fallback": "global"})
    thr = fit_thresholds_with(ecfg, feats.y_val, scored["s_val"], inputs.labels)
    s_test = scored["s_test"]
    row = measure(bc, stats, inputs, feats.y_test, thr.apply(s_test), s_test)
    at_half = measure(bc, stats, inputs, feats.y_test, s_test >= 0.5, s_test)
    row["test_at_0.5"] = {k: at_half[k] for k in ("micro_f1", "macro_f1", "tail_f1")}
    row["validation_after_thresholds"] = thr.validation["chosen"]
    row["thresholds"] = {
        "global": thr.global_threshold,
        "per_label": sum(s == "per_label" for s in thr.source),
        "fallback_or_reverted_to_global": sum(s == "global" for s in thr.source),
        "floor_action": thr.floor_action,
    }
    row.update({k: v for k, v in scored.items() if k not in ("s_val", "s_test")})
    return row


def tuned_row(
    bc: BenchConfig, cfg: Any, stats: dict[str, Any], inputs: Any, feats: Features, timings: dict[str, float]
) -> dict[str, Any]:
    """run_tune (embeddings mode) over the loss families, then its best_params replayed as replay_head does
    (best loss and parameters, the trial's head lr, same seed and cache) and evaluated like the other rows."""
    from pipeline.core.config import apply_params
    from pipeline.training.tune import EXPERIMENT, run_tune

    run = inputs.run
    if run.is_local:  # a reused work folder: search again rather than restore the finished experiment
        shutil.rmtree(Path(run.path) / EXPERIMENT, ignore_errors=True)
        Path(run.path, "best_params.yaml").unlink(missing_ok=True)
    t0 = time.perf_counter()
    best_params = run_tune(cfg)
    timings["tune"] = round(time.perf_counter() - t0, 1)
    objective = best_params["objective"]
    replay_cfg = apply_params(cfg, {k: v for k, v in best_params.items() if k != "objective"})
    replay_cfg = with_train(replay_cfg, lr=objective["head_lr"])
    t0 = time.perf_counter()
    scored = train_and_score(replay_cfg, inputs, feats, replay_cfg.loss.name, dict(replay_cfg.loss.params))
    timings["tuned_replay"] = round(time.perf_counter() - t0, 1)
    row = threshold_and_measure(bc, stats, inputs, feats, scored)
    metric = cfg.tune.metric
    row["tune"] = {
        "best_params": best_params,
        "objective": objective,
        "replay_best_" + metric: row.get("best_" + metric),
        "head_lr": objective["head_lr"],
        "summary_csv": (Path(run.path) / EXPERIMENT / "summary.csv").read_text() if run.is_local else None,
    }
    return row
