"""Prepare stage: `python -m jobs.prepare --config configs/demo.yaml [--set a.b=c ...]`."""

from __future__ import annotations

import sys

from jobs._common import main
from pipeline.data.prepare import run_prepare

if __name__ == "__main__":
    sys.exit(main(__doc__, lambda cfg, args: run_prepare(cfg)))
