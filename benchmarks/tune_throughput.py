"""Trials per hour of the tune stage on this machine, full fine-tuning against the cached-embeddings mode.

    .venv/bin/python -m benchmarks.tune_throughput [--full-trials 4 --emb-trials 24 --epochs 3]

Both searches run on the demo corpus (configs/demo.yaml), random search without a scheduler (every trial runs
all its epochs, so the figure is not flattered by early stopping), one after the other on one local Ray.
Writes benchmarks/results/tune_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

from benchmarks.common.machine import load_average, machine_record
from benchmarks.common.measure import Stopwatch
from benchmarks.common.paths import DEMO_CONFIG, RESULTS
from benchmarks.common.provenance import command_line, git_sha, package_versions
from benchmarks.common.ray_session import benchmark_ray
from benchmarks.common.results import write_json
from benchmarks.common.runs import copy_prepared
from pipeline.core.config import load_config
from pipeline.data.prepare import run_prepare
from pipeline.training.tune import run_tune


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tune_throughput")
    parser.add_argument("--full-trials", type=int, default=4)
    parser.add_argument("--emb-trials", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS / "tune_throughput.json"))
    args = parser.parse_args()
    results = {}
    load_before = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        common = [
            f"run.output={tmp}",
            f"train.epochs={args.epochs}",
            "train.patience=0",
            "tune.search=random",
            "tune.scheduler=none",
        ]
        base = load_config(DEMO_CONFIG, common)
        with benchmark_ray(ray_config=base.ray):
            clock = Stopwatch()
            run_prepare(base)
            prepare_s = clock.lap()
            for mode, trials in (("embeddings", args.emb_trials), ("full", args.full_trials)):
                cfg = load_config(
                    DEMO_CONFIG,
                    [*common, f"run.name={mode}", f"tune.mode={mode}", f"tune.num_samples={trials}"],
                )
                # Same prepared data for both: copy the prepared run instead of splitting again.
                if mode != base.run.name:
                    copy_prepared(Path(tmp) / base.run.name, Path(tmp) / mode)
                clock.lap()
                best = run_tune(cfg)
                seconds = clock.lap()
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
    out = {
        "command": command_line(
            "benchmarks.tune_throughput",
            [f"--full-trials {args.full_trials} --emb-trials {args.emb_trials} --epochs {args.epochs}"],
        ),
        "git_sha": git_sha(),
        "config": "configs/demo.yaml (3,000 docs, 40 labels, tiny-bert, max_length 64); random, no scheduler",
        "machine": {
            **machine_record(),
            "python": platform.python_version(),
            "load_average_before": load_before,
            "load_average_after": load_average(),
        },
        "versions": package_versions("ray", "torch", "transformers"),
        "prepare_seconds": round(prepare_s, 1),
        "results": results,
    }
    write_json(Path(args.out), out)


if __name__ == "__main__":
    main()
