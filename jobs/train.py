"""Train stage: `python -m jobs.train --config configs/demo.yaml [--params best_params.yaml] [--set ...]`."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from jobs._common import main
from pipeline.core.config import apply_params
from pipeline.training.train import run_train


def _args(parser) -> None:
    parser.add_argument("--params", default=None, help="best_params.yaml from the tune stage (loss and lr)")


def _train(cfg, args) -> None:
    if args.params:
        cfg = apply_params(cfg, yaml.safe_load(Path(args.params).read_text()) or {})
    run_train(cfg)


if __name__ == "__main__":
    sys.exit(main(__doc__, _train, _args))
