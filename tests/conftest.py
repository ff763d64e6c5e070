"""Shared fixtures: one local Ray per test session, shut down at the end; the small corpora, object-storage
buckets and run configs that the tests build."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from benchmarks.corpora import data_root
from pipeline.core.config import Config, load_config

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = data_root()


def shared_dataset(name: str) -> Path:
    """Path of a corpus in the corpora folder (benchmarks.corpora, $BML_DATA_DIR), or skip with why."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"{path} is absent: this test needs the evaluation corpus '{name}' (set BML_DATA_DIR)")
    return path


#: Temp folders of the Ray instances this test session started (removed at the end).
_RAY_TEMP_DIRS: list[str] = []


def ray_temp_dir() -> str:
    """A short folder of its own for one Ray instance (Ray's socket paths must stay under 107 bytes)."""
    path = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    _RAY_TEMP_DIRS.append(path)
    return path


def start_own_ray(include_dashboard: bool = False) -> None:
    """A fresh local 2-CPU Ray of this test session's own: free ports, its own temp folder, its address given
    to its processes (cluster.start_local_ray), so another Ray on the machine cannot interfere."""
    from pipeline.core.cluster import start_local_ray

    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    start_local_ray(2, include_dashboard=include_dashboard, log_to_driver=False, temp_dir=ray_temp_dir())


def missing_tool(reason: str) -> None:
    """Skip a test whose tool (a Debian or PyPI package) is missing on a developer's machine; under CI
    (CI=true), whose set-up installs every tool, a missing one is a failure, never a silent skip."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason}; CI installs it (.ci/run, Makefile), so its absence is a set-up error")
    pytest.skip(reason)


def _start_local_ray() -> None:
    start_own_ray(include_dashboard=False)


@pytest.fixture(scope="session")
def ray_session():
    """A local 2-CPU Ray for the whole test session (never local_mode), shut down at the end."""
    import ray

    if not ray.is_initialized():
        _start_local_ray()
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="session", autouse=True)
def _remove_ray_temp_dirs():
    """Ray leaves its session folders behind after shutdown; remove those of the instances we started."""
    yield
    for path in _RAY_TEMP_DIRS:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(autouse=True)
def _ray_alive(request):
    """Restart the session's Ray for tests that need it if an earlier test had to shut it down."""
    if "ray_session" in request.fixturenames:
        import ray

        if not ray.is_initialized():
            _start_local_ray()
    yield


@pytest.fixture
def no_local_ray():
    """Shut the session's Ray down for a test that starts a cluster of its own: with two Ray instances on one
    machine, Ray Train's placement-group cleaner joined the wrong one and the run was killed (seen here)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    yield


@pytest.fixture(scope="session")
def moto_storage():
    """`storage.*` settings of an S3 server (moto's server mode) on a free loopback port, for the session."""
    server = Path(sys.executable).with_name("moto_server")
    if not server.exists():
        missing_tool("moto_server (PyPI moto[server]) is not installed")
    from pipeline.core.cluster import free_port

    port = free_port()
    proc = subprocess.Popen(
        [str(server), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail(f"moto_server did not start on port {port}")
                time.sleep(0.2)
        yield {
            "endpoint_override": f"127.0.0.1:{port}",
            "scheme": "http",
            "access_key": "testing",
            "secret_key": "testing",
            "region": "us-east-1",
        }
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# ------------------------------------------------------------------------------------------ corpora, configs

#: A small encoder without early stopping, for every run that trains end to end in a few seconds on 2 CPUs;
#: a module adds its own vocabulary size, layers, epochs and learning rate.
#: Short EU-law sentences and their three labels: the model-kind tests' corpus (tests/test_lexical.py,
#: tests/test_frozen.py).
LAW_TEXTS = [
    "the council adopted the regulation on fishing quotas",
    "fishing quotas for the baltic sea are set by regulation",
    "a directive on the protection of animals during transport",
    "animals transport rules and the protection of welfare",
    "customs duties on imports of steel products",
    "steel imports and anti dumping duties",
] * 3
LAW_LABELS = ["fisheries", "animal welfare", "trade"]

TINY_RUN = [
    "model.max_length=32",
    "model.hidden_size=64",
    "model.intermediate_size=128",
    "model.pooling=mean",
    "train.patience=0",
]


def synthetic_settings(num_docs: int, num_labels: int, words_per_doc: int = 20, **more: Any) -> list[str]:
    """`data.synthetic.*` overrides for a small synthetic corpus of short documents."""
    fields = {"num_docs": num_docs, "num_labels": num_labels, "words_per_doc": words_per_doc, **more}
    return [f"data.synthetic.{key}={value}" for key, value in fields.items()]


def run_config(output: Path | str, name: str, *overrides: str) -> Config:
    """The default config for run `name` under `output`, then `overrides` in order (a later one wins)."""
    return load_config(None, [f"run.output={output}", f"run.name={name}", *overrides])


def corpus_table(texts: Sequence[str | None], labels: Sequence[list[str] | None], **extra: Any) -> pa.Table:
    """Rows in the input contract: `text` (string) and `labels` (list<string>), then `extra` columns such as
    id or split, typed as given or inferred."""
    columns = {"text": pa.array(texts, pa.string()), "labels": pa.array(labels, pa.list_(pa.string()))}
    return pa.table({**columns, **extra})


def write_parquet(path: Path, table: pa.Table | Mapping[str, Any]) -> Path:
    """One Parquet file at `path`, its folders made; a mapping is written as its columns as they are, so that
    a test can give a column of the wrong type on purpose."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table if isinstance(table, pa.Table) else pa.table(dict(table)), path)
    return path


def storage_overrides(storage: Mapping[str, Any]) -> list[str]:
    """`storage.*` overrides for the settings of an S3 server (moto_storage)."""
    return [f"storage.{key}={value}" for key, value in storage.items()]


def s3_bucket(storage: Mapping[str, Any], name: str) -> pafs.S3FileSystem:
    """A filesystem on the S3 server of `storage` (moto_storage) with bucket `name` made: this one may create
    buckets, the pipeline's own may not."""
    fs = pafs.S3FileSystem(**storage, allow_bucket_creation=True)
    fs.create_dir(name)
    return fs


def put_parquet(fs: pafs.FileSystem, path: str, table: pa.Table) -> None:
    """`table` as one Parquet object at `path` (bucket/key) on `fs`."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    with fs.open_output_stream(path) as out:
        out.write(sink.getvalue().to_pybytes())


def run_child(argv: Sequence[str], log: Path, timeout: float) -> int | str:
    """A Python child (`argv` after the interpreter) in a process group of its own, from the repository root,
    its output in `log` (a file, not a pipe: Ray's daemons inherit the child's pipes and would keep them
    open); the group, Ray's daemons included, is killed at `timeout`. Its exit code, or "timeout"."""
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, *argv],
            cwd=Path(__file__).resolve().parents[1],
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the process group this test started
            proc.wait()
            return "timeout"
