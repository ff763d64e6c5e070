"""Profile stage: label statistics of the corpus as read, without preparing it:
`python -m jobs.profile --config configs/demo.yaml --set data.source=/data/corpus [--set a.b=c ...]`."""

from __future__ import annotations

import argparse
import sys

from jobs._common import main
from pipeline.core.config import Config


def profile(cfg: Config, args: argparse.Namespace) -> None:
    from pipeline.data.profile import run_profile  # Ray loads only once the input checked out

    run_profile(cfg)


def cli(argv: list[str] | None = None) -> int:
    return main(__doc__, profile, argv=argv, reads_source=True)


if __name__ == "__main__":
    sys.exit(cli())
