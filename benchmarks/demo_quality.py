"""Quality and wall time of a shipped config on this machine: the embedded default (`make run`) unless told.

    .venv/bin/python -m benchmarks.demo_quality [--loss db --loss bce ...] [--config configs/X.yaml --out F]

Runs the whole pipeline (prepare -> train -> evaluate) with the config (configs/demo.yaml) once per loss, each
into its own run under a temporary output root, and writes benchmarks/results/demo_quality.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from benchmarks.common.measure import Stopwatch
from benchmarks.common.paths import DEMO_CONFIG, RESULTS, ROOT
from benchmarks.common.provenance import run_header
from benchmarks.common.ray_session import benchmark_ray
from benchmarks.common.results import write_json
from pipeline.core.config import load_config
from pipeline.data.prepare import run_prepare
from pipeline.evaluation.evaluate import run_evaluate
from pipeline.training.train import run_train


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.demo_quality")
    parser.add_argument("--loss", action="append", default=None)
    parser.add_argument("--config", type=Path, default=DEMO_CONFIG, help="a run config (configs/demo.yaml)")
    parser.add_argument("--out", default=str(RESULTS / "demo_quality.json"))
    args = parser.parse_args(argv)
    losses = args.loss or ["db", "bce"]
    config = args.config.resolve()
    if not config.is_file():
        parser.error(f"--config {args.config}: no such file")
    header = run_header("benchmarks.demo_quality", argv, ["ray", "torch", "transformers", "scikit-learn"])
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        base = load_config(config, [f"run.output={tmp}"])  # a bad config fails here, before Ray starts
        with benchmark_ray(ray_config=base.ray):
            for loss in losses:
                cfg = load_config(config, [f"run.output={tmp}", f"run.name={loss}", f"loss.name={loss}"])
                clock = Stopwatch()
                run_prepare(cfg)
                prepare_s = clock.lap()
                train = run_train(cfg)
                train_s = clock.lap()
                doc = run_evaluate(cfg)
                evaluate_s = clock.lap()
                results.append(
                    {
                        "loss": loss,
                        "seconds": {
                            "prepare": prepare_s,
                            "train": train_s,
                            "evaluate": evaluate_s,
                            "total": prepare_s + train_s + evaluate_s,
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
    shown = config.relative_to(ROOT) if config.is_relative_to(ROOT) else config
    out = {**header, "config": str(shown), "results": results}
    write_json(Path(args.out), out)
    print(
        json.dumps(
            [{k: r[k] for k in ("loss", "seconds", "test_groups_macro_f1")} for r in results], indent=2
        )
    )


if __name__ == "__main__":
    main()
