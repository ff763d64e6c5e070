"""Evaluate stage: `python -m jobs.evaluate --config configs/demo.yaml [--compare OTHER_RUN]`."""

from __future__ import annotations

import sys

from jobs._common import main
from pipeline.evaluation.evaluate import run_evaluate


def _args(parser) -> None:
    parser.add_argument(
        "--compare", default=None, help="another run (name under run.output, or URI) to show beside"
    )


if __name__ == "__main__":
    sys.exit(main(__doc__, lambda cfg, args: run_evaluate(cfg, compare=args.compare), _args))
