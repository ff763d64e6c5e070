"""Starting or joining Ray: the run's worker niceness, and outputs that must outlive a submitted job and be
the same folder on every node."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from pipeline.core.cluster import _niceness_env, check_output_persists, nodes_without
from pipeline.core.errors import InputError
from tests.conftest import ROOT, ray_temp_dir

JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def test_relative_output_is_refused_only_in_a_submitted_job(monkeypatch, tmp_path):
    monkeypatch.delenv(JOB_ENV, raising=False)
    check_output_persists("runs")  # a local run: relative to where the user started it, kept
    monkeypatch.setenv(JOB_ENV, json.dumps({"runtime_env": {"working_dir": "."}}))
    with pytest.raises(InputError, match=r"run.output='runs' is a relative path.*s3://bucket/runs"):
        check_output_persists("runs")
    with pytest.raises(InputError, match="relative path"):
        check_output_persists("./out/runs")
    for ok in (str(tmp_path), "s3://bucket/runs", "gs://bucket/runs", "~/runs"):
        check_output_persists(ok)


def test_worker_niceness_env(monkeypatch):
    monkeypatch.delenv(JOB_ENV, raising=False)
    assert _niceness_env(None) is None
    assert _niceness_env(0) == {"env_vars": {"RAY_worker_niceness": "0"}}
    # A submission that sets it already keeps its own (two values for one variable would not merge).
    monkeypatch.setenv(JOB_ENV, json.dumps({"runtime_env": {"env_vars": {"RAY_worker_niceness": "5"}}}))
    assert _niceness_env(0) is None
    monkeypatch.setenv(JOB_ENV, json.dumps({"runtime_env": {"env_vars": {"X": "1"}}}))
    assert _niceness_env(2) == {"env_vars": {"RAY_worker_niceness": "2"}}


def test_nodes_without_a_path(ray_session, tmp_path):
    (tmp_path / "marker").write_text("x")
    assert nodes_without(str(tmp_path / "marker")) == []
    missing = nodes_without(str(tmp_path / "absent"))
    assert missing == [n["NodeManagerAddress"] for n in ray_session.nodes() if n["Alive"]]


def test_ray_worker_niceness_reaches_the_workers():
    """In a child process (its own local Ray): workers run at ray.worker_niceness, not Ray's 15."""
    code = textwrap.dedent(
        f"""
        import os, ray
        from pipeline.core.cluster import ensure_ray
        from pipeline.core.config import RaySection
        os.environ["RAY_TMPDIR"] = {ray_temp_dir()!r}
        ensure_ray(RaySection(num_cpus=1, worker_niceness=3))
        try:
            print("niceness", ray.get(ray.remote(lambda: os.nice(0)).remote()))
        finally:
            ray.shutdown()
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", JOB_ENV)}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "niceness 3" in proc.stdout, proc.stdout
