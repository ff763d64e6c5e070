"""Quality and wall time of the embedded default (`make run`) on this machine.

    .venv/bin/python -m benchmarks.demo_quality [--loss db --loss bce ...]

Runs the whole pipeline (prepare -> train -> evaluate) with configs/demo.yaml once per loss, each into its own
run under a temporary output root, and writes benchmarks/results/demo_quality.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import ray

from pipeline.core.cluster import ensure_ray
from pipeline.core.config import load_config
from pipeline.data.prepare import run_prepare
from pipeline.evaluation.evaluate import run_evaluate
from pipeline.training.train import run_train

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--loss", action="append", default=None)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "demo_quality.json"))
    args = parser.parse_args()
    losses = args.loss or ["db", "bce"]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        base = load_config(ROOT / "configs" / "demo.yaml", [f"run.output={tmp}"])
        ensure_ray(base.ray)
        try:
            for loss in losses:
                cfg = load_config(
                    ROOT / "configs" / "demo.yaml",
                    [f"run.output={tmp}", f"run.name={loss}", f"loss.name={loss}"],
                )
                t0 = time.perf_counter()
                run_prepare(cfg)
                t1 = time.perf_counter()
                train = run_train(cfg)
                t2 = time.perf_counter()
                doc = run_evaluate(cfg)
                t3 = time.perf_counter()
                results.append(
                    {
                        "loss": loss,
                        "seconds": {
                            "prepare": t1 - t0,
                            "train": t2 - t1,
                            "evaluate": t3 - t2,
                            "total": t3 - t0,
                        },
                        "epochs_run": len(train["history"]),
                        "validation_last_epoch_at_0.5": {
                            k: v for k, v in train["history"][-1].items() if k.startswith("val_")
                        },
                        "test_tuned_thresholds": doc["overall"],
                        "test_at_0.5": doc["extra"]["test_at_0.5"],
                        "test_groups_macro_f1": {g: m["macro_f1"] for g, m in doc["groups"].items()},
                        "labels_with_f1_gt_0": doc["labels_with_f1_gt_0"],
                    }
                )
        finally:
            ray.shutdown()
    out = {
        "command": "python -m benchmarks.demo_quality " + " ".join(f"--loss {x}" for x in losses),
        "config": "configs/demo.yaml",
        "machine": {"cpus": 2, "platform": platform.platform(), "python": sys.version.split()[0]},
        "results": results,
    }
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(
        json.dumps(
            [{k: r[k] for k in ("loss", "seconds", "test_groups_macro_f1")} for r in results], indent=2
        )
    )


if __name__ == "__main__":
    main()
