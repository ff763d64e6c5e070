"""Progress lines for long Ray Data passes, printed by the driver from counts the workers send."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import ray

log = logging.getLogger(__name__)

#: Seconds between progress lines while rows are scored (evaluate, predict) or featurised (train).
PROGRESS_INTERVAL_S = 30.0


@ray.remote(num_cpus=0)
class _RowCounter:
    """Rows the tasks or actors have done so far, for progress lines on the driver."""

    def __init__(self) -> None:
        self.rows = 0

    def add(self, n: int) -> None:
        self.rows += n

    def get(self) -> int:
        return self.rows


class RowProgress:
    """Rows done / total, elapsed time and rate, logged by the driver every `interval` seconds while a Ray
    Data pass runs (`with RowProgress(...) as p: score_dataset(..., counter=p.counter)...`): scoring, and the
    featurising of the training splits (a frozen encoder embeds them for tens of minutes on CPUs).

    Counted per batch by the tasks or actors (`counter.add.remote(n)`), not per finished block on the
    driver: an input block (a Parquet file) can take minutes on CPUs, and a count of finished blocks would
    stand still that long. Printed by the driver, so it is one line for the whole pass however many workers.
    """

    def __init__(self, total: int, what: str, verb: str = "scored", interval: float | None = None) -> None:
        self.total, self.what, self.verb = total, what, verb
        self.interval = PROGRESS_INTERVAL_S if interval is None else interval
        self.counter = _RowCounter.remote()
        self.t0 = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="row-progress", daemon=True)

    def __enter__(self) -> RowProgress:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        ray.kill(self.counter)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                done = int(ray.get(self.counter.get.remote(), timeout=10))
            except Exception:  # progress is best effort; scoring goes on regardless
                continue
            _line(self.what, done, self.total, self.verb, time.perf_counter() - self.t0)


class PassProgress:
    """The same lines for a pass whose per-block results the driver reads as they come (`iter_rows` over
    one row per block): `add(rows)` per result, a line once `interval` seconds have passed since the last.
    No counter actor (a worker process of its own) and no thread: the driver already receives a result per
    block, so it counts what is done itself; fine where blocks are short (the profile's read tasks of about
    a million rows take a fraction of a second each)."""

    def __init__(self, total: int, what: str, verb: str, interval: float | None = None) -> None:
        self.total, self.what, self.verb = total, what, verb
        self.interval = PROGRESS_INTERVAL_S if interval is None else interval
        self.done = 0
        self.t0 = self.last = time.perf_counter()

    def add(self, rows: int) -> None:
        self.done += rows
        now = time.perf_counter()
        if now - self.last >= self.interval:
            self.last = now
            _line(self.what, self.done, self.total, self.verb, now - self.t0)


def _line(what: str, done: int, total: int, verb: str, elapsed: float) -> None:
    log.info(
        "%s: %d / %d rows %s (%.0f%%) in %.0fs, %.1f rows/s%s",
        what,
        done,
        total,
        verb,
        100.0 * done / max(total, 1),
        elapsed,
        done / elapsed if elapsed > 0 else 0.0,
        f", ETA {(total - done) * elapsed / done:.0f}s" if 0 < done < total else "",
    )
