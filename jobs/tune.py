"""Tune stage: `python -m jobs.tune --config configs/demo.yaml [--set tune.num_samples=24 ...]`.

Writes `<run>/best_params.yaml`; `python -m jobs.train --params <run>/best_params.yaml` trains with it.
Submitting the same job again continues an interrupted search.
"""

from __future__ import annotations

import sys

from jobs._common import main
from pipeline.training.tune import run_tune

if __name__ == "__main__":
    sys.exit(main(__doc__, lambda cfg, args: run_tune(cfg)))
