"""Prepare stage: `python -m jobs.prepare --config configs/demo.yaml [--set a.b=c ...]`."""

from __future__ import annotations

import argparse
import sys

from jobs._common import main
from pipeline.core.config import Config


def prepare(cfg: Config, args: argparse.Namespace) -> None:
    from pipeline.data.prepare import run_prepare  # Ray and the stage load only once the input checked out

    run_prepare(cfg)


def cli(argv: list[str] | None = None) -> int:
    return main(__doc__, prepare, argv=argv, reads_source=True)


if __name__ == "__main__":
    sys.exit(cli())
