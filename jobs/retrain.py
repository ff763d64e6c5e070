"""Scheduled retraining: `python -m jobs.retrain --config configs/x.yaml --set data.source=s3://bucket/shards`.

Trains a challenger run `<run.name>-<hash>` when the shards of data.source changed since the promoted model
(`<run.output>/<run.name>/current.json`) was trained, compares it with that model on the challenger's test
split, and promotes it only if it is not worse on retrain.metrics (within retrain.tolerance). With no new or
changed shards it does nothing. Meant for cron or a KubeRay RayCronJob:
`ray job submit --working-dir . -- python -m jobs.retrain --config ...`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from jobs._common import main
from pipeline.core.config import Config


def retrain(cfg: Config, args: argparse.Namespace) -> dict[str, Any]:
    from pipeline.runs.retrain import run_retrain  # torch and Ray load only once the input checked out

    return run_retrain(cfg)


def cli(argv: list[str] | None = None) -> int:
    return main(__doc__, retrain, argv=argv, reads_source=True)


if __name__ == "__main__":
    sys.exit(cli())
