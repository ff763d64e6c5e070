"""What a job shows on the terminal: library lines a user cannot act on stay in Ray's log files, and a stop
by Ctrl-C or SIGTERM ends the job with one line instead of a stack.

Call `quiet_libraries()` before `import ray` (Ray reads its log-forwarding settings at import: the `jobs`
package does it first thing) and `stop_on_signals()` after `ray.init` (which installs a SIGTERM handler of
its own in the driver).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import time
from typing import Any

#: Lines of Ray's worker output that are not forwarded to the driver's terminal (they stay in the workers'
#: log files under the Ray session folder): per-dataset execution notices of Ray Data, Ray core's warning
#: about actor constructor arguments (Train's PreemptionWatcher, Ray Data's scoring actors), deprecation
#: notices from inside Ray, and Hugging Face progress bars.
WORKER_NOISE = "|".join(
    [
        r"Starting execution of Dataset",
        r"Execution plan of Dataset",
        r"Dataset .* execution finished in",
        r"Progress bars disabled",
        r"has constructor arguments in the object store",
        r"RayDeprecationWarning",
        r"self\.exclude_resources = exclude_resources",
        r"Loading weights:",
        r"Writing model shards:",
    ]
)
#: The driver's own Ray / Ray Data log lines of the same kinds.
DRIVER_NOISE = re.compile(
    r"Starting execution of Dataset|Execution plan of Dataset|execution finished in|Progress bars disabled"
    r"|Data sink .* finished|has constructor arguments in the object store"
    # The V1 Parquet reader's sizing of its read tasks (pipeline.core.parquet_reader), at every read.
    r"|Estimated parquet encoding ratio|Estimated parquet reader batch size"
    # A local Ray started in-process is reachable from this machine only; the notice is for clusters.
    r"|Token authentication is enabled for this Ray cluster"
)


class _Drop(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not DRIVER_NOISE.search(record.getMessage())


def quiet_libraries() -> None:
    """Keep Ray's and Hugging Face's routine notices off the terminal (an explicit setting of the user's
    environment wins)."""
    os.environ.setdefault("RAY_DEDUP_LOGS_SKIP_REGEX", WORKER_NOISE)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def quiet_driver_logs() -> None:
    """Filter the driver's console handlers of the `ray` and `ray.data` loggers (after `import ray.data`);
    Ray Data's file handler keeps every line in the session's ray-data.log."""
    for name in ("ray", "ray.data"):
        for handler in logging.getLogger(name).handlers:
            if not isinstance(handler, logging.StreamHandler) or isinstance(handler, logging.FileHandler):
                continue
            if not any(isinstance(f, _Drop) for f in handler.filters):
                handler.addFilter(_Drop())
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass


class Stopped(KeyboardInterrupt):
    """Raised in the main thread by SIGINT / SIGTERM. A KeyboardInterrupt, because that is what Ray's blocking
    calls (ray.get inside TorchTrainer.fit) check for while they wait: another exception raised there was
    only noticed when the call returned (the job went on training, then failed with a SystemError). Ray may
    re-raise it as a plain KeyboardInterrupt: `received_signal()` says whether a stop was asked for."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_received: list[int] = []


def received_signal() -> int | None:
    """The signal that asked this job to stop, or None."""
    return _received[-1] if _received else None


def stop_on_signals() -> dict[int, Any]:
    """SIGINT and SIGTERM raise `Stopped` once (a second one acts as the default: it kills); returns the
    handlers they replace, for `restore_signals`."""
    _received.clear()

    def handler(signum: int, frame: Any) -> None:
        signal.signal(signum, signal.SIG_DFL)
        _received.append(signum)
        raise Stopped(signum)

    return {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}


def restore_signals(previous: dict[int, Any]) -> None:
    """Put back the handlers `stop_on_signals` replaced (a job run in-process, as tests do, leaves none)."""
    for sig, old in previous.items():
        signal.signal(sig, old if old is not None else signal.SIG_DFL)


def say(line: str) -> None:
    """One line on this process's stdout; from a Ray worker, Ray forwards it to the driver once.

    Not print(): Train V2 replaces print in its workers with a logger call that also copies the line to
    stdout (Ray wraps sys.stdout there), so every printed line reached the terminal twice.
    """
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class Every:
    """True at most once every `seconds` (the first call after `seconds` have passed since creation)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.start = self.last = time.perf_counter()

    def due(self) -> bool:
        now = time.perf_counter()
        if now - self.last < self.seconds:
            return False
        self.last = now
        return True

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start
