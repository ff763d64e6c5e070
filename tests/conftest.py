"""Shared fixtures: one local Ray per test session, shut down at the end."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from benchmarks.corpora import data_root

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
