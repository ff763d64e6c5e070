"""The whole pipeline in one job: `python -m jobs.run_all --config configs/demo.yaml`."""

from __future__ import annotations

import argparse
import logging
import sys

from jobs._common import main
from pipeline.config import Config
from pipeline.evaluate import run_evaluate
from pipeline.prepare import run_prepare
from pipeline.train import run_train

log = logging.getLogger("jobs.run_all")


def run_all(cfg: Config, args: argparse.Namespace) -> None:
    stats = run_prepare(cfg)
    log.info(
        "prepare: %s documents, %d labels (groups %s)",
        stats["documents"],
        stats["num_labels"],
        stats["groups"]["sizes"],
    )
    run_train(cfg)
    run_evaluate(cfg)
    log.info(
        "all stages done; report at %s/report/report.html (tune: python -m jobs.tune)",
        cfg.run_uri,
    )


if __name__ == "__main__":
    sys.exit(main(__doc__, run_all))
