"""Predict: `python -m jobs.predict --config configs/demo.yaml --set predict.source=PATH_OR_URI`.

Scores new Parquet shards with the run's model (or the promoted one in <run>/current.json) and its
thresholds; writes <run>/predictions/<predict.name>/ (or predict.output) and a `_SUCCESS` summary.
"""

from __future__ import annotations

import sys

from jobs._common import main as run_job
from pipeline.serving.predict import run_predict


def main(argv: list[str] | None = None) -> int:
    # No run lease: predict only reads the model and thresholds (current.json is replaced in one write) and
    # writes a predictions folder of its own, so it may run beside a retraining of the same run.
    return run_job(__doc__, lambda cfg, args: run_predict(cfg), argv=argv, locks_run=False)


if __name__ == "__main__":
    sys.exit(main())
