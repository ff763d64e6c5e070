"""Shared plumbing of the job entry points: arguments, logging, Ray lifetime, stopping on a signal."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable
from typing import Any

from pipeline.core.config import Config, add_config_args, load_config


def check_source(cfg: Config) -> None:
    """The input's reachability and every shard's schema and row count, from Parquet footers (pyarrow only):
    a bad source fails in a second, before Ray or torch start."""
    if cfg.data.source == "synthetic":
        return
    from pipeline.data.sources import discover

    discover(cfg.data.source, cfg.data, cfg.storage)


def check_label_names(cfg: Config) -> None:
    """`evaluate.label_names`' file readable, with its columns and a named label (pyarrow only)."""
    if cfg.evaluate.label_names.source is None:
        return
    from pipeline.evaluation.label_names import check_encoder, read_label_names

    read_label_names(cfg.evaluate.label_names, cfg.storage)
    check_encoder(cfg.evaluate.label_names)


def main(
    description: str,
    body: Callable[[Config, argparse.Namespace], Any],
    extra_args: Callable[[argparse.ArgumentParser], None] | None = None,
    argv: list[str] | None = None,
    reads_source: bool = False,
    locks_run: bool = True,
) -> int:
    """Parse the config, check it (and with `reads_source`, `data.source`) before Ray or torch start, take the
    run's lease (`locks_run`: a second job on the same run stops, naming the holder), then run `body` on a
    Ray of its own or the one `RAY_ADDRESS` names. Job modules import the stages inside `body`, so a bad
    config or input costs neither."""
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

    from pipeline.core.errors import PipelineError

    lock = None
    try:
        if reads_source:
            check_source(cfg)
        check_label_names(cfg)
        if locks_run:
            from pipeline.core.layout import RunLayout
            from pipeline.runs.lock import RunLock

            lock = RunLock(RunLayout.of(cfg), job=parser.prog).acquire()
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    try:
        return _run(cfg, args, body)
    finally:
        if lock is not None:
            lock.release()


def _run(cfg: Config, args: argparse.Namespace, body: Callable[[Config, argparse.Namespace], Any]) -> int:
    import ray

    from pipeline.core.cluster import check_output_persists, check_output_shared, ensure_ray
    from pipeline.core.console import quiet_driver_logs, received_signal, restore_signals, stop_on_signals
    from pipeline.core.errors import PipelineError

    quiet_driver_logs()

    try:
        check_output_persists(cfg.run.output)
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    started, previous = False, {}
    try:
        started = ensure_ray(cfg.ray)
        quiet_driver_logs()
        previous = stop_on_signals()
        check_output_shared(cfg.run.output)
        body(cfg, args)
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except BaseException:
        signum = received_signal()
        if signum is None:
            raise
        # Checkpoints are written as each epoch ends, so what was done before the last one is kept.
        print(
            f"stopped by {signal.Signals(signum).name}: outputs and checkpoints written so far are kept; "
            f"run the same command again (run.name={cfg.run.name}) to resume",
            file=sys.stderr,
        )
        return 128 + signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM
    finally:
        if started:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the shutdown finish
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            ray.shutdown()
        restore_signals(previous)
    return 0
