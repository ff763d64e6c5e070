"""Timing and peak memory of a benchmark's steps."""

from __future__ import annotations

import resource
import threading
import time
from typing import Any

MIB = 1024 * 1024


def ru_maxrss_mib() -> float:
    """This process's peak RSS so far (the kernel's high-water mark; KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Stopwatch:
    """Seconds between laps: one step after another, each timed from the end of the previous one."""

    def __init__(self) -> None:
        self._last = time.perf_counter()

    def lap(self) -> float:
        now = time.perf_counter()
        seconds, self._last = now - self._last, now
        return seconds


class PeakRSS:
    """Samples on a thread the RSS of this process and of every process it started (Ray's daemons and
    workers) and keeps the peaks: `driver` (this process), `tree` (the sum over the tree: shared pages count
    once per process mapping them, so an upper bound) and `worker` (the largest single Ray worker), in bytes.

    A context manager around one step, or started once and `reset` between steps (one window each)."""

    def __init__(self, interval: float = 0.25) -> None:
        import psutil

        self._psutil = psutil
        self._me = psutil.Process()
        self.interval = interval
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.paused = threading.Event()  # set: the thread takes no samples (and costs its process nothing)
        self._thread: threading.Thread | None = None
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.driver = 0
            self.tree = 0
            self.worker = 0

    def sample(self) -> None:
        ps = self._psutil
        try:
            driver = self._me.memory_info().rss
        except ps.Error:
            return
        tree, worker = driver, 0
        for child in self._me.children(recursive=True):
            try:
                rss = child.memory_info().rss
                name = child.name()
            except ps.Error:
                continue
            tree += rss
            if name.startswith("ray::"):
                worker = max(worker, rss)
        with self._lock:
            self.driver = max(self.driver, driver)
            self.tree = max(self.tree, tree)
            self.worker = max(self.worker, worker)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            if not self.paused.is_set():
                self.sample()

    def start(self) -> PeakRSS:
        self.sample()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.sample()

    def __enter__(self) -> PeakRSS:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def vm_hwm_mib() -> float:
    """This process's peak RSS so far (MiB): Linux's VmHWM, else `ru_maxrss`.

    In a child started by fork (or vfork) and exec, `ru_maxrss` starts at the parent's peak: the kernel
    carries the replaced memory map's high-water mark into it at exec. Seen here: a benchmark child started
    from a 1.5 GB pytest process reported 1,502 MB while its own peak was about 1,000 MB. VmHWM belongs to
    the process's own memory map."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return ru_maxrss_mib()


class StepPeaks:
    """The kernel's exact peak RSS of this process per step, where a sampler can miss a short spike.

    Linux lets a process reset its RSS high-water mark (`/proc/self/clear_refs`, value 5); this keeps the
    peak over all steps in `overall`. Where the reset is refused, `stop` returns the peak so far (the same
    as `overall`) and `resettable` is False. Peaks are :func:`vm_hwm_mib`'s."""

    def __init__(self) -> None:
        self.overall = vm_hwm_mib()
        self.resettable = False

    def start(self) -> None:
        self.overall = max(self.overall, vm_hwm_mib())
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.resettable = True
        except OSError:
            self.resettable = False

    def stop(self) -> float:
        """The step's peak (MiB), from `start` on."""
        step = vm_hwm_mib()
        self.overall = max(self.overall, step)
        return step

    def peak(self) -> float:
        """This process's peak (MiB) over its whole life so far, steps and what ran between them."""
        return max(self.overall, vm_hwm_mib())
