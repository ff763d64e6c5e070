"""The quality benchmark's driver: every dataset's rows into one JSON document."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import quality as package
from benchmarks.common.machine import load_average
from benchmarks.common.paths import RESULTS
from benchmarks.common.provenance import run_header, utc_now
from benchmarks.common.ray_session import benchmark_ray
from benchmarks.common.results import write_json
from benchmarks.corpora import data_root
from benchmarks.quality.config import (
    ALL_ROWS,
    CONFIGS,
    FULL_CONFIGS,
    LOSS_ROWS,
    SMOKE_CONFIG,
    VERSIONED,
    BenchConfig,
    load_bench_config,
)
from benchmarks.quality.features import load_features
from benchmarks.quality.heads import select_head, threshold_and_measure, train_and_score, tuned_row
from benchmarks.quality.peer import libmultilabel_available, libmultilabel_rows
from benchmarks.quality.report import METRICS, check_targets, markdown_table

DEFAULT_OUT = RESULTS / "quality.json"
log = logging.getLogger("benchmarks.quality")


def run_dataset(bc: BenchConfig, with_libmultilabel: bool | str) -> dict[str, Any]:
    """One dataset: prepare (or reuse), embed, every loss row, the tuned row and the peer rows; its result."""
    from pipeline.core.storage import read_json
    from pipeline.data.prepare import run_prepare
    from pipeline.training.train import build_inputs

    cfg = bc.cfg
    # Steps reused from an earlier invocation on the same --work-dir report the seconds they took then.
    timings: dict[str, Any] = {"reused": {}}
    run_dir = Path(cfg.run_uri)
    record = run_dir / "bench" / "prepare_seconds.json"
    t_all = time.perf_counter()
    t0 = time.perf_counter()
    if (run_dir / "label_stats.json").exists():
        log.info("%s: reusing the prepared splits in %s", bc.key, run_dir)
        timings["prepare"] = json.loads(record.read_text())["seconds"] if record.exists() else None
        timings["reused"]["prepare"] = True
    else:
        run_prepare(cfg)
        timings["prepare"] = round(time.perf_counter() - t0, 1)
        timings["reused"]["prepare"] = False
        if run_dir.is_dir():
            record.parent.mkdir(parents=True, exist_ok=True)
            record.write_text(json.dumps({"seconds": timings["prepare"]}))
    t0 = time.perf_counter()
    inputs = build_inputs(cfg, tokenize=False)
    stats = read_json(inputs.run.join("label_stats.json"))
    timings["inputs_and_mu"] = round(time.perf_counter() - t0, 1)
    feats = load_features(cfg, inputs, stats, timings)
    log.info(
        "%s: features train %s validation %s test %s",
        bc.key,
        feats.train.x.shape,
        feats.val.x.shape,
        feats.x_test.shape,
    )

    head_cfg, selection, trained = select_head(bc, inputs, feats, timings)
    rows: dict[str, dict[str, Any]] = {}
    for row, (name, params) in LOSS_ROWS.items():
        scored = trained.get(row) or train_and_score(head_cfg, inputs, feats, name, params)
        rows[row] = threshold_and_measure(bc, stats, inputs, feats, scored)
        timings[row] = scored["seconds"]
        log.info("%s %s: %s", bc.key, row, {k: rows[row][k] for k in METRICS})
    rows["tuned"] = tuned_row(bc, head_cfg, stats, inputs, feats, timings)
    log.info("%s tuned: %s", bc.key, {k: rows["tuned"][k] for k in METRICS})

    lml_note = None
    if with_libmultilabel is True:
        rows.update(libmultilabel_rows(bc, stats, inputs, feats, timings))
    else:
        lml_note = f"libmultilabel rows skipped: {with_libmultilabel}"
        print(lml_note, flush=True)
    timings["total"] = round(time.perf_counter() - t_all, 1)

    config = describe_setup(bc, head_cfg, selection, stats, inputs)
    data = {
        "documents": stats["documents"],
        "num_labels": stats["num_labels"],
        "split": stats.get("split"),
        "feature_dim": int(feats.train.x.shape[1]),
    }
    result = {
        "dataset": bc.dataset or "synthetic",
        "config": config,
        "data": data,
        "rows": {k: rows[k] for k in ALL_ROWS if k in rows},
        "timings_s": timings,
        "table_markdown": markdown_table(bc.key, rows, stats),
    }
    if lml_note:
        result["libmultilabel_skipped"] = lml_note
    return result


def describe_setup(
    bc: BenchConfig, head_cfg: Any, selection: list[dict[str, Any]], stats: dict[str, Any], inputs: Any
) -> dict[str, Any]:
    """Every setting a dataset's rows were measured with (the result's `config`)."""
    cfg = bc.cfg
    tcfg = head_cfg.train
    tune_cfg = head_cfg.tune
    return {
        "source": cfg.data.source if bc.dataset is None else f"<corpora folder>/{bc.dataset}",
        "encoder": cfg.model.encoder,
        "pooling": cfg.model.pooling,
        "max_length": cfg.model.max_length,
        "frozen_encoder": True,
        "head": {
            "architecture": "dropout + linear on the pooled embeddings (head_train.build_head)",
            "epochs": tcfg.epochs,
            "lr": tcfg.lr,
            "batch_size": tcfg.batch_size,
            "weight_decay": tcfg.weight_decay,
            "warmup_ratio": tcfg.warmup_ratio,
            "grad_clip": tcfg.grad_clip,
            "dropout": cfg.model.dropout,
            "patience": tcfg.patience,
            "torch_threads": 1,
            "epoch_selection": f"best {tcfg.checkpoint_metric} on validation",
            "selection_on_validation": selection,
        },
        "thresholds": {
            "strategy": cfg.evaluate.threshold_strategy,
            "min_support": cfg.evaluate.min_support,
            "shrinkage": cfg.evaluate.shrinkage,
            "at_least_one": cfg.evaluate.at_least_one,
            "fitted_on": "validation",
        },
        "groups": {
            "head_min": stats["groups"]["head_min"],
            "tail_max": stats["groups"]["tail_max"],
            "sizes": stats["groups"]["sizes"],
            "by": "training documents per label (prepared train split)",
        },
        "losses": {row: {"name": n, "params": p or "library defaults"} for row, (n, p) in LOSS_ROWS.items()},
        "db_mu": inputs.mu,
        "tune": {
            "mode": tune_cfg.mode,
            "families": tune_cfg.families,
            "num_samples": tune_cfg.num_samples,
            "search": tune_cfg.search,
            "scheduler": tune_cfg.scheduler,
            "grace_period": tune_cfg.grace_period,
            "reduction_factor": tune_cfg.reduction_factor,
            "lr_range": list(tune_cfg.lr),
            "metric": tune_cfg.metric,
            "trial_cpus": tune_cfg.trial_cpus,
        },
        "libmultilabel": {
            "features": "libmultilabel.linear.Preprocessor() (sklearn TfidfVectorizer, default parameters) "
            "fitted on the prepared train split",
            "training_split": "prepared train (the documents our heads train on; validation unused)",
            "liblinear_options": bc.libmultilabel_options or "'' (library default: -s 1, no bias)",
            "methods": {
                "libmultilabel-1vsrest": "train_1vsrest, decision value > 0",
                "libmultilabel-thresholding": "train_thresholding (0.10.0: micromacro-freq, 3-fold CV "
                "thresholds per label optimising micro-F1 + macro-F1)",
            },
        },
        "seeds": {
            "run": cfg.run.seed,
            "split": cfg.data.split.seed,
            "tune": tune_cfg.seed,
            "libmultilabel_numpy": cfg.run.seed,
        },
        "embedding": {
            "train_validation": "embeddings.ensure_embeddings: Ray Data map_batches(Embed), "
            f"{cfg.evaluate.concurrency} actor(s) x {cfg.evaluate.cpus_per_actor:g} CPU",
            "test": "the same Embed class called in the driver on prepared/test",
            "encoder_batch_size": cfg.train.eval_batch_size,
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        },
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.quality", description=package.__doc__.split("\n\n")[0]
    )
    parser.add_argument("--smoke", action="store_true", help="tiny synthetic run into a temp folder")
    parser.add_argument("--out", default=None, help="results JSON (default: benchmarks/results/quality.json)")
    parser.add_argument(
        "--config",
        action="append",
        default=None,
        help="benchmark config(s) (default: benchmarks/configs/{reuters21578,goemotions}.yaml)",
    )
    parser.add_argument("--data-root", default=str(data_root()), help="folder holding the datasets")
    parser.add_argument(
        "--work-dir",
        default=None,
        help="where prepared splits, embeddings and Tune state go; kept and reused (default: a fresh "
        "temporary folder, removed at the end)",
    )
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray (default 2)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.config:
        config_paths = [Path(c) for c in args.config]
    elif args.smoke:
        config_paths = [CONFIGS / f"{SMOKE_CONFIG}.yaml"]
    else:
        config_paths = [CONFIGS / f"{name}.yaml" for name in FULL_CONFIGS]
    own_work = args.work_dir is None
    work_dir = Path(tempfile.mkdtemp(prefix="bml-quality-")) if own_work else Path(args.work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    if args.out:
        out_path = Path(args.out)
    elif args.smoke:
        out_path = work_dir / "quality.json" if not own_work else Path(tempfile.mkdtemp()) / "quality.json"
    else:
        out_path = DEFAULT_OUT
    data_root = Path(args.data_root)

    lml = libmultilabel_available()
    with_lml: bool | str = True if lml is None else lml
    doc: dict[str, Any] = {
        **run_header("benchmarks.quality", argv, VERSIONED),
        "smoke": bool(args.smoke),
        "datasets": {},
        "skipped": {},
        "targets": [],
    }
    try:
        # Ray gives a 1-CPU actor OMP_NUM_THREADS=1 unless set: let the embedding actor use both cores.
        with benchmark_ray(args.num_cpus, env_defaults={"OMP_NUM_THREADS": str(args.num_cpus)}):
            _tune_ray_data()
            t_start = time.perf_counter()
            for path in config_paths:
                bc = load_bench_config(path, work_dir, data_root, args.overrides)
                if bc.dataset is not None and not (data_root / bc.dataset).is_dir():
                    reason = f"{data_root / bc.dataset} is absent: dataset '{bc.dataset}' skipped"
                    print(reason, flush=True)
                    doc["skipped"][bc.key] = reason
                    continue
                result = run_dataset(bc, with_lml)
                doc["datasets"][bc.key] = result
                doc["targets"].extend(check_targets(bc.key, result, bc.targets))
                print("\n" + result["table_markdown"] + "\n", flush=True)
                write_json(out_path, {**doc, "complete": False})  # a later dataset failing keeps this one
    finally:
        if own_work:
            shutil.rmtree(work_dir, ignore_errors=True)
    doc["finished"] = utc_now()
    doc["total_seconds"] = round(time.perf_counter() - t_start, 1)
    doc["load_average_after"] = load_average()
    for t in doc["targets"]:
        print(f"target {t['dataset']}: {t['target']}: {'met' if t['met'] else 'NOT met'} ({t['value']})")
    doc["complete"] = True
    write_json(out_path, doc)
    print(f"wrote {out_path}", flush=True)
    doc["out"] = str(out_path)
    return doc


def _tune_ray_data() -> None:
    """A map task emits nothing until its output reaches target_max_block_size (128 MiB by default). When
    ensure_embeddings still fed GoEmotions' 43k-row train split to Embed as one block (before it
    repartitioned to 2,048-row blocks), that took longer than Ray Data's 1800 s no-progress timeout on the
    shared machine and failed the run. Kept as a backstop: smaller output blocks, a 2 h timeout."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.target_max_block_size = 8 * 1024 * 1024
    ctx.execution_no_progress_timeout_s = 7200
