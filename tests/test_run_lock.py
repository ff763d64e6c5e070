"""#24 item 2: one job per run. A second job on a run is refused with the holder's name; an abandoned lease
is taken over; the holder's heartbeat keeps its lease fresh; on object storage too."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.core.storage import locate
from pipeline.runs.lock import LOCK_FILE, RunLock, RunLockedError
from tests.conftest import corpus_table, s3_bucket, write_parquet

ROOT = Path(__file__).resolve().parents[1]


def _lease(run: Path, **fields) -> None:
    run.mkdir(parents=True, exist_ok=True)
    record = {"token": "other", "job": "run_all.py", "user": "cron", "host": socket.gethostname()}
    record.update(pid=os.getpid(), started_at="2026-12-04T00:00:00Z", heartbeat=time.time())
    record.update(fields)
    (run / LOCK_FILE).write_text(json.dumps(record))


def test_second_job_is_refused_until_the_first_releases(tmp_path):
    run = locate(str(tmp_path / "r"))
    first = RunLock(run, job="run_all.py").acquire()
    try:
        held = json.loads((tmp_path / "r" / LOCK_FILE).read_text())
        assert (
            held["pid"] == os.getpid()
            and held["host"] == socket.gethostname()
            and held["token"] == first.token
        )
        with pytest.raises(RunLockedError, match=rf"in use by .*@{socket.gethostname()} PID {os.getpid()}"):
            RunLock(run, job="retrain.py").acquire()
    finally:
        first.release()
    assert not (tmp_path / "r").exists()  # the lease was all the job wrote: no empty run folder is left
    second = RunLock(run, job="retrain.py").acquire()
    second.release()


def test_abandoned_leases_are_taken_over(tmp_path, caplog):
    run = tmp_path / "r"
    _lease(run, heartbeat=time.time() - 3600)  # no heartbeat for an hour
    with caplog.at_level(logging.WARNING, logger="pipeline.runs.lock"):
        lock = RunLock(locate(str(run)), job="run_all.py").acquire()
    assert "taking over the abandoned lease of cron@" in caplog.text
    assert json.loads((run / LOCK_FILE).read_text())["token"] == lock.token
    lock.release()

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    _lease(run, pid=int(dead.stdout))  # a fresh heartbeat, but its process on this host is gone
    lock = RunLock(locate(str(run)), job="run_all.py").acquire()
    lock.release()
    _lease(run, host="another-host", pid=1)  # another host's fresh lease is respected
    with pytest.raises(RunLockedError, match="cron@another-host PID 1"):
        RunLock(locate(str(run)), job="run_all.py").acquire()


def test_heartbeat_keeps_the_lease_fresh_and_notices_a_lost_one(tmp_path):
    run = locate(str(tmp_path / "r"))
    lock = RunLock(run, job="train.py", heartbeat_s=0.05, stale_after_s=0.5).acquire()
    try:
        first = json.loads((tmp_path / "r" / LOCK_FILE).read_text())["heartbeat"]
        time.sleep(0.3)
        later = json.loads((tmp_path / "r" / LOCK_FILE).read_text())["heartbeat"]
        assert later > first and not lock.lost
        _lease(tmp_path / "r", token="usurper")
        deadline = time.monotonic() + 5
        while not lock.lost and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lock.lost
    finally:
        lock.release()
    assert json.loads((tmp_path / "r" / LOCK_FILE).read_text())["token"] == "usurper"  # not ours to delete


def test_lease_on_object_storage(moto_storage):
    s3_bucket(moto_storage, "leases")
    from pipeline.core.config import StorageSection

    run = locate("s3://leases/runs/r", StorageSection(**moto_storage))
    lock = RunLock(run, job="run_all.py", settle_s=0.1).acquire()
    try:
        with pytest.raises(RunLockedError, match="in use by"):
            RunLock(run, job="run_all.py", settle_s=0.1).acquire()
    finally:
        lock.release()
    assert not run.join(LOCK_FILE).exists()
    RunLock(run, job="run_all.py", settle_s=0.1).acquire().release()


def test_job_on_a_held_run_stops_before_ray_naming_the_holder(tmp_path):
    write_parquet(
        tmp_path / "src" / "a.parquet", corpus_table(["a text", "b text", "c text"], [["x"], ["y"], ["x"]])
    )
    _lease(tmp_path / "runs" / "r")  # held by this (live) test process
    probe = (
        "import sys; from jobs.run_all import cli; rc = cli(sys.argv[1:]); "
        "print('imported:', sorted(m for m in ('ray', 'torch') if m in sys.modules)); sys.exit(rc)"
    )
    sets = [f"run.output={tmp_path / 'runs'}", "run.name=r", f"data.source={tmp_path / 'src'}"]
    done = subprocess.run(
        [sys.executable, "-c", probe, *[a for s in sets for a in ("--set", s)]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert f"this run is in use by cron@{socket.gethostname()} PID {os.getpid()}" in done.stderr
    assert "imported: []" in done.stdout
    assert json.loads((tmp_path / "runs" / "r" / LOCK_FILE).read_text())["token"] == "other"
