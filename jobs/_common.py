"""Shared plumbing of the job entry points: arguments, logging, Ray lifetime."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import Any

from pipeline.config import Config, add_config_args, load_config


def main(
    description: str,
    body: Callable[[Config, argparse.Namespace], Any],
    extra_args: Callable[[argparse.ArgumentParser], None] | None = None,
    argv: list[str] | None = None,
) -> int:
    parser = add_config_args(argparse.ArgumentParser(description=description))
    if extra_args:
        extra_args(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    try:
        cfg = load_config(args.config, args.overrides)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    import ray

    from pipeline.cluster import check_output_persists, check_output_shared, ensure_ray
    from pipeline.dataset import InputError
    from pipeline.resources import ResourceError

    try:
        check_output_persists(cfg.run.output)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    started = ensure_ray(cfg.ray)
    try:
        check_output_shared(cfg.run.output)
        body(cfg, args)
    except (InputError, ResourceError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        if started:
            ray.shutdown()
    return 0
