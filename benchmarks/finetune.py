"""Fine-tuned rows for the quality benchmark: the whole pipeline (prepare -> train -> evaluate) with the
pretrained all-MiniLM-L6-v2 fine-tuned end to end, once per loss, on the splits of the quality benchmark
(benchmarks/quality).

    .venv/bin/python -m benchmarks.finetune            # Reuters, bce and db -> results/finetune.json
    .venv/bin/python -m benchmarks.finetune --smoke    # synthetic corpus + tiny-bert, a minute
    .venv/bin/python -m benchmarks.finetune --combine a.json b.json --out all.json   # seeds side by side

benchmarks/quality trains only the classification head on frozen embeddings. Here the encoder's weights
are trained too, through `train.run_train` (in-process: train.num_workers=0, so the 2 CPUs go to
one PyTorch process) and scored by `evaluate.run_evaluate` with its per-label thresholds. On 2 CPUs
that costs about 25 samples/s at 64 tokens (12 at 128, measured by hand), so the CPU-feasible setting is
FINETUNE (max_length 64, 3 epochs); every run's figures land in the JSON as soon as they exist.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import corpora
from benchmarks.common.machine import load_average
from benchmarks.common.paths import RESULTS, ROOT
from benchmarks.common.provenance import command_line, run_header
from benchmarks.common.ray_session import benchmark_ray
from benchmarks.common.results import write_json
from benchmarks.common.runs import copy_prepared
from benchmarks.quality.config import CONFIGS, GROUPS, VERSIONED, load_bench_config

DEFAULT_OUT = RESULTS / "finetune.json"
#: The CPU-feasible fine-tuning setting (overrides on top of the dataset's benchmark config).
FINETUNE = [
    "model.max_length=64",
    "train.epochs=3",
    "train.lr=1e-4",
    "train.batch_size=32",
    "train.patience=0",
    "train.num_workers=0",
]
SMOKE = ["train.epochs=1", "train.num_workers=0"]
SUMMARY_METRICS = ("micro_f1", "macro_f1", "macro_ap", *(f"{g}_f1" for g in GROUPS))

log = logging.getLogger("benchmarks.finetune")


def row_from_metrics(doc: dict[str, Any]) -> dict[str, Any]:
    """The quality table's columns from an evaluate stage's report/metrics.json (its test figures)."""
    overall = doc["overall"]
    at_half = (doc.get("extra") or {}).get("test_at_0.5") or {}
    return {
        "micro_f1": overall["micro_f1"],
        "macro_f1": overall["macro_f1"],
        "macro_ap": overall["macro_ap"],
        **{f"{g}_f1": doc["groups"][g]["macro_f1"] for g in GROUPS},
        "p_at_1": overall["p_at_1"],
        "labels_with_f1_gt_0": doc["labels_with_f1_gt_0"]["overall"],
        "test_at_0.5": {k: at_half.get(k) for k in ("micro_f1", "macro_f1")},
    }


def run_loss(cfg_path: Path, work: Path, data_root: Path, loss: str, overrides: list[str]) -> dict[str, Any]:
    """Prepare once per dataset (reused), then train + evaluate one loss in its own run folder."""
    from pipeline.data.prepare import run_prepare
    from pipeline.evaluation.evaluate import run_evaluate
    from pipeline.training.train import run_train

    bc = load_bench_config(cfg_path, work, data_root, overrides)
    shared = work / bc.cfg.run.name
    if not (shared / "label_stats.json").exists():
        t0 = time.perf_counter()
        run_prepare(bc.cfg)
        log.info("%s: prepared in %.0fs", bc.key, time.perf_counter() - t0)
    name = f"{bc.cfg.run.name}-ft-{loss}"
    shutil.rmtree(work / name, ignore_errors=True)
    copy_prepared(shared, work / name)
    bc = load_bench_config(cfg_path, work, data_root, [*overrides, f"run.name={name}", f"loss.name={loss}"])
    t0 = time.perf_counter()
    trained = run_train(bc.cfg)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    doc = run_evaluate(bc.cfg)
    return {
        **row_from_metrics(doc),
        "loss": loss,
        "epochs_run": len(trained["history"]),
        "best_" + bc.cfg.train.checkpoint_metric: trained["best"],
        "train_seconds": round(train_s, 1),
        "evaluate_seconds": round(time.perf_counter() - t0, 1),
        "history": trained["history"],
    }


def _spread(values: list[float]) -> dict[str, float]:
    return {"mean": sum(values) / len(values), "min": min(values), "max": max(values)}


def summarise(docs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per benchmark config and loss, the mean, min and max of each test figure over the given runs.

    Runs of one setting that differ only in `run.seed` (the split has its own seed, `data.split.seed`) move
    Reuters' macro-F1 by several points, so one run's row cannot tell two losses apart.
    """
    rows: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for doc in docs:
        for loss, row in doc["rows"].items():
            rows.setdefault(doc["config"], {}).setdefault(loss, []).append(row)
    return {
        config: {
            loss: {"runs": len(rs), **{m: _spread([r[m] for r in rs]) for m in SUMMARY_METRICS}}
            for loss, rs in by_loss.items()
        }
        for config, by_loss in rows.items()
    }


def combine(paths: list[Path], out: Path | None) -> dict[str, Any]:
    """One document holding finished runs (as written) and their `summarise`."""
    docs = [json.loads(p.read_text()) for p in paths]
    unfinished = [str(p) for p, d in zip(paths, docs, strict=True) if not d.get("complete")]
    if unfinished:
        raise SystemExit(f"--combine: runs that did not finish: {', '.join(unfinished)}")
    doc = {
        "command": command_line("benchmarks.finetune", ["--combine", *map(str, paths)]),
        "summary": summarise(docs),
        "runs": docs,
    }
    if out:
        write_json(out, doc)
    print(json.dumps(doc["summary"], indent=2))
    return doc


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.finetune", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--smoke", action="store_true", help="synthetic corpus, tiny-bert, one epoch")
    parser.add_argument("--config", default=None, help="benchmark config (default: reuters21578)")
    parser.add_argument("--loss", action="append", default=None, help="losses (default: bce, db)")
    parser.add_argument("--data-root", default=str(corpora.data_root()))
    parser.add_argument("--work-dir", default=None, help="prepared splits and runs (default: a temp folder)")
    parser.add_argument(
        "--out", default=None, help="results JSON (default: benchmarks/results/finetune.json)"
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--num-cpus",
        type=int,
        default=2,
        help="CPUs of the Ray this script starts (a GPU machine: all of them; Ray finds its GPUs itself)",
    )
    parser.add_argument(
        "--combine", nargs="+", type=Path, metavar="JSON", help="summarise finished runs (trains nothing)"
    )
    args = parser.parse_args(argv)
    if args.combine:
        return combine(args.combine, Path(args.out) if args.out else None)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    cfg_path = (
        Path(args.config) if args.config else CONFIGS / ("smoke.yaml" if args.smoke else "reuters21578.yaml")
    )
    overrides = [*(SMOKE if args.smoke else FINETUNE), *args.overrides]
    losses = args.loss or ["bce", "db"]
    out = Path(args.out) if args.out else (None if args.smoke else DEFAULT_OUT)
    data_root = Path(args.data_root)
    dataset = load_bench_config(cfg_path, Path("/unused"), data_root, overrides).dataset
    doc: dict[str, Any] = {
        **run_header("benchmarks.finetune", argv, VERSIONED),
        "config": str(cfg_path.relative_to(ROOT)) if cfg_path.is_relative_to(ROOT) else str(cfg_path),
        "overrides": overrides,
        "rows": {},
        "complete": False,
    }
    if dataset and not (data_root / dataset).is_dir():
        doc["skipped"] = f"{data_root / dataset} not found"
        log.warning("skipping: %s", doc["skipped"])
        if out:
            write_json(out, doc)
        return doc

    own_work = args.work_dir is None
    work = Path(tempfile.mkdtemp(prefix="bml-finetune-")) if own_work else Path(args.work_dir).resolve()
    # A caller's Ray (the tests') is used as it is; on a GPU machine --num-cpus is all of its CPUs.
    with benchmark_ray(args.num_cpus):
        t_all = time.perf_counter()
        try:
            for loss in losses:
                doc["rows"][loss] = run_loss(cfg_path, work, data_root, loss, overrides)
                log.info("%s: %s", loss, {k: v for k, v in doc["rows"][loss].items() if k != "history"})
                if out:  # each row as soon as it exists: a later crash loses nothing measured
                    write_json(out, doc)
            doc["complete"] = True
        finally:
            doc["total_seconds"] = round(time.perf_counter() - t_all, 1)
            doc["load_average_after"] = load_average()
            if out:
                write_json(out, doc)
            if own_work:
                shutil.rmtree(work, ignore_errors=True)
    print(
        json.dumps(
            {
                k: {m: v.get(m) for m in ("micro_f1", "macro_f1", "macro_ap", "tail_f1")}
                for k, v in doc["rows"].items()
            },
            indent=2,
        )
    )
    return doc


if __name__ == "__main__":
    main()
