"""The whole pipeline in one job: `python -m jobs.run_all --config configs/demo.yaml [--tune]`.

prepare -> (tune, with --tune) -> train -> evaluate. Each stage records its inputs in
`<run>/manifests/<stage>.json` once its outputs are written; submitting the job again skips every stage whose
inputs are unchanged and re-runs a changed stage and every stage after it (pipeline/runs/manifest.py).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from jobs._common import main
from pipeline.core.config import Config

log = logging.getLogger("jobs.run_all")


def _args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tune",
        action="store_true",
        help="search the loss and learning rate first (Ray Tune) and train with best_params.yaml",
    )


def run_all(cfg: Config, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    from pipeline.runs.orchestrator import run_stages  # torch and Ray load only once the input checked out

    results = run_stages(cfg, tune=bool(getattr(args, "tune", False)))
    ran = [s for s, r in results.items() if r["ran"]]
    skipped = [s for s, r in results.items() if not r["ran"]]
    log.info(
        "all stages done (ran: %s; skipped, inputs unchanged: %s); report at %s/report/report.html",
        ", ".join(ran) or "none",
        ", ".join(skipped) or "none",
        cfg.run_uri,
    )
    return results


def cli(argv: list[str] | None = None) -> int:
    return main(__doc__, run_all, _args, argv, reads_source=True)


if __name__ == "__main__":
    sys.exit(cli())
