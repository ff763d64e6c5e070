"""Trials per hour of the tune stage on this machine, full fine-tuning against the cached-embeddings mode.

    .venv/bin/python -m benchmarks.tune_throughput [--full-trials 4 --emb-trials 24 --epochs 3]

Both searches run on the demo corpus (configs/demo.yaml), random search without a scheduler (every trial runs
all its epochs, so the figure is not flattered by early stopping), one after the other on one local Ray.
Writes benchmarks/results/tune_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import ray

from pipeline.core.cluster import ensure_ray
from pipeline.core.config import load_config
from pipeline.data.prepare import run_prepare
from pipeline.training.tune import run_tune

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--full-trials", type=int, default=4)
    parser.add_argument("--emb-trials", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "tune_throughput.json"))
    args = parser.parse_args()
    results = {}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        common = [
            f"run.output={tmp}",
            f"train.epochs={args.epochs}",
            "train.patience=0",
            "tune.search=random",
            "tune.scheduler=none",
        ]
        base = load_config(ROOT / "configs" / "demo.yaml", common)
        ensure_ray(base.ray)
        try:
            t0 = time.perf_counter()
            run_prepare(base)
            prepare_s = time.perf_counter() - t0
            for mode, trials in (("embeddings", args.emb_trials), ("full", args.full_trials)):
                cfg = load_config(
                    ROOT / "configs" / "demo.yaml",
                    [*common, f"run.name={mode}", f"tune.mode={mode}", f"tune.num_samples={trials}"],
                )
                # Same prepared data for both: copy the prepared run instead of splitting again.
                if mode != base.run.name:
                    _link_prepared(Path(tmp) / base.run.name, Path(tmp) / mode)
                t1 = time.perf_counter()
                best = run_tune(cfg)
                seconds = time.perf_counter() - t1
                entry = {
                    "trials": trials,
                    "epochs_per_trial": args.epochs,
                    "seconds": round(seconds, 1),
                    "trials_per_hour": round(trials / seconds * 3600, 1),
                    "best_objective": best["objective"],
                }
                if mode == "embeddings":
                    done = json.loads(next((Path(tmp) / mode / "embeddings").glob("*/done.json")).read_text())
                    entry["embedding_cache_seconds"] = done["seconds"]
                    search = seconds - done["seconds"]
                    entry["trials_per_hour_after_cache"] = round(trials / search * 3600, 1)
                results[mode] = entry
                print(json.dumps({mode: entry}, indent=2), flush=True)
        finally:
            ray.shutdown()
    out = {
        "command": "python -m benchmarks.tune_throughput "
        f"--full-trials {args.full_trials} --emb-trials {args.emb_trials} --epochs {args.epochs}",
        "config": "configs/demo.yaml (3,000 docs, 40 labels, tiny-bert, max_length 64); random, no scheduler",
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
        "prepare_seconds": round(prepare_s, 1),
        "results": results,
    }
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


def _link_prepared(src: Path, dst: Path) -> None:
    import shutil

    dst.mkdir(parents=True, exist_ok=True)
    for name in ("prepared", "label_stats.json", "tokenizer"):
        if (src / name).is_dir():
            shutil.copytree(src / name, dst / name)
        elif (src / name).exists():
            shutil.copy2(src / name, dst / name)


if __name__ == "__main__":
    main()
