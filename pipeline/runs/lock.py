"""One job at a time per run: a lease file `<run>/run.lock` with its holder and a heartbeat.

A cron retrain overlapping a manual run, or two `run_all` on the same run, would both write checkpoints and
outputs. Every job that writes a run takes its lease first: the file names the holder (user, host, PID,
start) and a heartbeat the holder rewrites every `heartbeat_s`. A second job finds a fresh lease and stops
with a message naming the holder; a lease whose heartbeat is older than `stale_after_s`, or whose holder ran
on this host and its process is gone, belongs to a job that died, and is taken over (with a warning).

Taking the lease is atomic on a local or mounted folder (`O_CREAT | O_EXCL`, and for a takeover a rename).
Object stores reached through pyarrow have no create-if-absent, so there the lease is written, read back
after `settle_s`, and kept only if it still holds this job's token: two jobs starting within the same
fraction of a second could both read their own write on a store that is not read-after-write consistent
(S3 is, since 2020).
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from pipeline.core.errors import PipelineError
from pipeline.core.storage import Location, read_bytes, write_bytes

log = logging.getLogger(__name__)

LOCK_FILE = "run.lock"
#: Seconds between heartbeats, and the age at which a lease is considered abandoned.
HEARTBEAT_S = 30.0
STALE_AFTER_S = 300.0


class RunLockedError(PipelineError):
    """Another job holds the run's lease."""


def _alive(holder: dict[str, Any]) -> bool:
    """False only when the holder ran on this host and its process is gone (a job killed outright)."""
    if holder.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(holder.get("pid", -1)), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, OverflowError):
        return True
    return True


def _describe(holder: dict[str, Any], now: float) -> str:
    age = now - float(holder.get("heartbeat", 0.0))
    return (
        f"{holder.get('user', '?')}@{holder.get('host', '?')} PID {holder.get('pid', '?')} "
        f"(job {holder.get('job', '?')}, started {holder.get('started_at', '?')}, "
        f"last heartbeat {age:.0f} s ago)"
    )


class RunLock:
    """The lease of one run; a context manager. ``job`` names the holder's job in messages."""

    def __init__(
        self,
        run: Location,
        job: str,
        heartbeat_s: float = HEARTBEAT_S,
        stale_after_s: float = STALE_AFTER_S,
        settle_s: float = 1.0,
    ) -> None:
        if stale_after_s <= heartbeat_s:
            raise ValueError("stale_after_s must exceed heartbeat_s")
        self.loc = run.join(LOCK_FILE)
        self.job, self.heartbeat_s, self.stale_after_s, self.settle_s = (
            job,
            heartbeat_s,
            stale_after_s,
            settle_s,
        )
        self.token = uuid.uuid4().hex
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _record(self) -> dict[str, Any]:
        return {
            "token": self.token,
            "job": self.job,
            "user": getpass.getuser(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._started)),
            "heartbeat": time.time(),
        }

    def holder(self) -> dict[str, Any] | None:
        """The lease as stored, or None (absent or unreadable: a half-written lease counts as none)."""
        try:
            return json.loads(read_bytes(self.loc))
        except (FileNotFoundError, ValueError):
            return None
        except OSError:
            if not self.loc.exists():
                return None
            raise

    def _create_local(self, data: bytes) -> bool:
        os.makedirs(os.path.dirname(self.loc.path), exist_ok=True)
        try:
            fd = os.open(self.loc.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return True

    def acquire(self) -> RunLock:
        self._started = time.time()
        data = json.dumps(self._record()).encode()
        holder = self.holder()
        now = time.time()
        fresh = holder is not None and now - float(holder.get("heartbeat", 0.0)) < self.stale_after_s
        if fresh and _alive(holder):
            raise RunLockedError(
                f"{self.loc.uri}: this run is in use by {_describe(holder, now)}; wait for that job to end "
                f"(its lease lapses {self.stale_after_s:.0f} s after its last heartbeat) or use another "
                "run.name"
            )
        if holder is not None:
            log.warning("run lock: taking over the abandoned lease of %s", _describe(holder, now))
        if self.loc.is_local and holder is None:
            if not self._create_local(data):  # another job created it a moment ago
                return self.acquire()
        else:
            write_bytes(self.loc, data)  # a rename locally, a single PUT on object storage
            time.sleep(self.settle_s)
            mine = self.holder()
            if not mine or mine.get("token") != self.token:
                raise RunLockedError(
                    f"{self.loc.uri}: another job took this run's lease at the same moment"
                    + (f": {_describe(mine, time.time())}" if mine else "")
                )
        self._thread = threading.Thread(target=self._beat, name="run-lock-heartbeat", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                current = self.holder()
                if not current or current.get("token") != self.token:
                    self.lost = True
                    log.error(
                        "run lock: %s no longer holds this job's lease (now: %s)", self.loc.uri, current
                    )
                    return
                write_bytes(self.loc, json.dumps({**current, "heartbeat": time.time()}).encode())
            except OSError as err:  # a storage hiccup: the next beat tries again
                log.warning("run lock: heartbeat to %s failed (%s)", self.loc.uri, err)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        current = self.holder()
        if current and current.get("token") == self.token:
            self.loc.fs.delete_file(self.loc.path)
            if self.loc.is_local:  # a job refused before writing anything leaves no empty run folder
                try:
                    os.rmdir(os.path.dirname(self.loc.path))
                except OSError:
                    pass

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
