"""Shared fixtures: one local Ray per test session, shut down at the end."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def shared_dataset(name: str) -> Path:
    """Path of a corpus under ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"{path} is absent: this test needs the shared evaluation corpus '{name}'")
    return path


def _start_local_ray() -> None:
    import ray

    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    # address="local": always a fresh instance of our own. With no address, ray.init joins the cluster named
    # in /tmp/ray/ray_current_cluster whenever any other Ray runs on the machine (a `ray start` of another
    # test), and then refuses num_cpus.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)


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
        pytest.skip("moto_server (PyPI moto[server]) is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
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
