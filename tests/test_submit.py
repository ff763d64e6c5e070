"""The real client path against real components: `ray start --head` (token auth) + `ray job submit`, with the
shards read from and every output written to an S3-compatible server (moto's server mode) on 127.0.0.1.

One submission is stopped with `ray job stop` once training has written a checkpoint; submitting the same
job again finishes it, resuming training from that checkpoint. Everything this module starts it stops by
process group (never `ray stop`, which would end every Ray on the machine).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from pipeline.core.cluster import free_port
from pipeline.core.config import StorageSection, SyntheticSection
from pipeline.core.storage import Location
from pipeline.data.synthetic import write_shards
from tests.conftest import TINY_RUN, ray_temp_dir, s3_bucket, storage_overrides

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BUCKET = "bml-test"
pytestmark = [pytest.mark.timeout(900), pytest.mark.e2e]


def _start(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    # Its own session (process group) so it and all it spawns are stopped together; output to a file because
    # Ray's daemons inherit pipes and would keep them open.
    return subprocess.Popen(
        cmd, env=env, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )


def _stop(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=20)
            if sig == signal.SIGTERM:
                time.sleep(2)  # let `ray start --block` stop the daemons it started, then make sure
        except subprocess.TimeoutExpired:
            continue


def _wait_http(url: str, seconds: float, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError as err:
            if getattr(err, "code", None):  # any HTTP answer means the server is up
                return
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer in {seconds}s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 server on a free loopback port, with a bucket holding 4 synthetic shards."""
    tmp = tmp_path_factory.mktemp("s3")
    port = free_port()
    log = tmp / "moto.log"
    proc = _start([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], log, dict(os.environ))
    try:
        _wait_http(f"http://127.0.0.1:{port}/", 60, proc, log)
        storage = StorageSection(
            endpoint_override=f"127.0.0.1:{port}",
            scheme="http",
            access_key="testing",
            secret_key="testing",
            region="us-east-1",
        )
        fs = s3_bucket(storage.model_dump(), BUCKET)
        shards = Location(fs, f"{BUCKET}/shards", f"s3://{BUCKET}/shards")
        write_shards(SyntheticSection(num_docs=600, num_labels=10, words_per_doc=20, num_shards=4), shards)
        yield storage, fs
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """`ray start --head --block` with token authentication (this test's own token, via the environment)."""
    tmp = tmp_path_factory.mktemp("ray")
    dash = free_port()
    env = {
        **os.environ,
        # The job's `python` is the one on the PATH where `ray start` ran: the venv's.
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
    }
    env.pop("RAY_ADDRESS", None)
    gcs_port = free_port()
    cmd = [
        str(BIN / "ray"),
        "start",
        "--head",
        "--block",
        "--num-cpus=2",
        f"--port={gcs_port}",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dash}",
        # Every other fixed default port too, and a temp folder of its own: another Ray on the machine
        # (a developer's, another test run's) must not make this one fail or share its files.
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--metrics-export-port={free_port()}",
        f"--ray-client-server-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
        f"--temp-dir={ray_temp_dir()}",
        "--disable-usage-stats",
    ]
    log = tmp / "head.log"
    # `ray start` records its address here and every later address-less ray.init() on the machine would try to
    # join it; killing the head leaves the file behind, so it is put back as it was.
    current = Path("/tmp/ray/ray_current_cluster")
    before = current.read_text() if current.exists() else None
    proc = _start(cmd, log, env)
    try:
        _wait_http(f"http://127.0.0.1:{dash}/api/version", 120, proc, log)
        yield f"http://127.0.0.1:{dash}", env, tmp
    finally:
        _stop(proc)
        if current.exists() and current.read_text().strip().endswith(f":{gcs_port}"):
            if before is None:
                current.unlink()
            else:
                current.write_text(before)


def _ray(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + 90
    while True:
        out = subprocess.run(
            [str(BIN / "ray"), *args],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            timeout=timeout,
        )
        # Right after start-up the dashboard answers before its job agent has registered.
        if "No available agent" in out.stdout and time.monotonic() < deadline:
            time.sleep(2)
            continue
        assert out.returncode == 0, out.stdout[-3000:]
        return out.stdout


def _status(address: str, env: dict[str, str], job: str) -> str:
    text = _ray(env, "job", "status", "--address", address, job)
    # e.g. "Job 'x' succeeded", "Job 'x' was stopped", "Job 'x' is currently RUNNING" (case varies).
    for state in ("SUCCEEDED", "FAILED", "STOPPED", "RUNNING", "PENDING"):
        if state.lower() in text.lower():
            return state
    raise AssertionError(text)


def _files(fs: pafs.FileSystem, prefix: str) -> list[str]:
    infos = fs.get_file_info(pafs.FileSelector(prefix, recursive=True, allow_not_found=True))
    return sorted(i.path[len(prefix) + 1 :] for i in infos if i.type == pafs.FileType.File)


@pytest.mark.usefixtures("no_local_ray")
def test_job_submit_on_s3_stop_and_resubmit(s3, head):
    storage, fs = s3
    address, env, tmp = head
    overrides = [
        f"run.output=s3://{BUCKET}/runs",
        "run.name=sub",
        f"data.source=s3://{BUCKET}/shards",
        *storage_overrides(storage.model_dump()),
        *TINY_RUN,
        "model.vocab_size=800",
        "train.epochs=6",
        "train.num_workers=1",
        "train.cpus_per_worker=0.5",
        "evaluate.cpus_per_actor=0.5",
    ]
    entry = ["python", "-m", "jobs.run_all", "--config", "configs/demo.yaml"]
    entry += [a for o in overrides for a in ("--set", o)]

    def submit(job_id: str) -> None:
        _ray(env, "job", "submit", "--address", address, "--submission-id", job_id, "--working-dir", ".",
             "--no-wait", "--", *entry)  # fmt: skip

    run = f"{BUCKET}/runs/sub"
    submit("first")
    deadline = time.monotonic() + 400
    polls = 0
    # Poll the bucket often (cheap) and the job status rarely (each `ray` CLI call costs a second or two): the
    # job must be stopped soon after its first checkpoint, well before training ends.
    while not any(f.endswith("state.pt") for f in _files(fs, f"{run}/checkpoints")):
        polls += 1
        if polls % 20 == 0 and _status(address, env, "first") not in ("PENDING", "RUNNING"):
            raise AssertionError(_ray(env, "job", "logs", "--address", address, "first")[-4000:])
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.25)
    _ray(env, "job", "stop", "--address", address, "first")
    assert _status(address, env, "first") == "STOPPED"
    assert "report/metrics.json" not in _files(fs, run)

    submit("second")
    deadline = time.monotonic() + 500
    while (state := _status(address, env, "second")) in ("PENDING", "RUNNING"):
        assert time.monotonic() < deadline, "second submission did not finish in time"
        time.sleep(2)
    logs = _ray(env, "job", "logs", "--address", address, "second")
    (tmp / "second.log").write_text(logs)
    assert state == "SUCCEEDED", logs[-4000:]
    assert "training resumes from it" in logs, logs[-4000:]

    files = _files(fs, run)
    for required in (
        "label_stats.json",
        "thresholds.json",
        "model/model_config.json",
        "model/head.pt",
        "report/metrics.json",
        "report/report.html",
        "report/per_label.csv",
    ):
        assert required in files, (required, files)
    for folder in ("prepared/train/", "prepared/test/", "predictions/test/", "checkpoints/"):
        assert any(f.startswith(folder) for f in files), (folder, files)
    # Nothing half-written is left visible: no staging folders or temporary files in the run.
    assert not [f for f in files if ".staging" in f or ".tmp" in f], files
    # Each folder output is marked whole (its readers refuse it without: tests/test_storage.py).
    for folder in ("prepared", "model", "report", "predictions/test"):
        assert f"{folder}/_COMPLETE" in files, (folder, files)
    metrics = json.loads(fs.open_input_stream(f"{run}/report/metrics.json").read())
    assert metrics["overall"]["n_docs"] > 0 and 0.0 <= metrics["overall"]["micro_f1"] <= 1.0


@pytest.mark.usefixtures("no_local_ray")
def test_job_submit_with_a_relative_output_fails_fast(head):
    """The demo as it is (run.output: runs) under `ray job submit`: refused before any work, with the fix."""
    address, env, _ = head
    entry = ["python", "-m", "jobs.run_all", "--config", "configs/demo.yaml"]
    _ray(env, "job", "submit", "--address", address, "--submission-id", "relative", "--working-dir", ".",
         "--no-wait", "--", *entry)  # fmt: skip
    deadline = time.monotonic() + 120
    while (state := _status(address, env, "relative")) in ("PENDING", "RUNNING"):
        assert time.monotonic() < deadline, "the job did not stop in time"
        time.sleep(1)
    logs = _ray(env, "job", "logs", "--address", address, "relative")
    assert state == "FAILED", logs[-3000:]
    assert "run.output='runs' is a relative path" in logs and "s3://" in logs, logs[-3000:]
    # Refused before the job joined the cluster, with no traceback.
    assert "Traceback" not in logs and "joined Ray cluster" not in logs, logs[-3000:]
