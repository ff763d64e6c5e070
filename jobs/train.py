"""Train stage: `python -m jobs.train --config configs/demo.yaml [--set train.num_workers=2 ...]`."""

from __future__ import annotations

import sys

from jobs._common import main
from pipeline.train import run_train

if __name__ == "__main__":
    sys.exit(main(__doc__, lambda cfg, args: run_train(cfg)))
