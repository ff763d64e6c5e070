"""Evaluate stage: `python -m jobs.evaluate --config configs/demo.yaml [--compare OTHER_RUN]`."""

from __future__ import annotations

import argparse
import sys

from jobs._common import main
from pipeline.core.config import Config


def _args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--compare", default=None, help="another run (name under run.output, or URI) to show beside"
    )


def evaluate(cfg: Config, args: argparse.Namespace) -> None:
    from pipeline.evaluation.evaluate import run_evaluate  # Ray loads only once the config checked out

    run_evaluate(cfg, compare=args.compare)


def cli(argv: list[str] | None = None) -> int:
    return main(__doc__, evaluate, _args, argv=argv)


if __name__ == "__main__":
    sys.exit(cli())
