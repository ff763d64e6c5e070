"""The label statistics benchmark at a small size: both Ray passes on local Ray and on clusters of one and
two nodes count exactly what polars counts, every figure and ratio is there, the targets name the profile
pass, and the README renders it. Starts three Rays in a child process: about a minute on 2 CPUs (e2e)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import readme
from tests.conftest import run_child


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_small_run_counts_exactly_and_reports_both_passes(no_local_ray, tmp_path: Path):
    out, log = tmp_path / "label_stats.json", tmp_path / "label_stats.log"
    argv = ["--rows", "200000", "--repeats", "1", "--cluster-repeats", "1"]
    rc = run_child(
        ["-m", "benchmarks.label_stats", *argv, "--work-dir", str(tmp_path / "w"), "--out", str(out)],
        log,
        540,
    )
    assert rc == 0, log.read_text()[-4000:]
    doc = json.loads(out.read_text())
    assert doc["command"].startswith("python -m benchmarks.label_stats") and doc["git_sha"]
    (run,) = doc["runs"]
    assert run["rows"] == 200_000 and run["polars"]["seconds"] > 0
    for name in ("profile", "prepare"):
        p = run[name]
        assert p["counts_identical"] and p["ratio"] > 0 and p["cluster"]["ratio"] > 0, name
        assert p["ray_local"]["node_cpus"] == [2.0]
        assert p["cluster"]["nodes_1"]["node_cpus"] == [1.0]
        assert p["cluster"]["nodes_2"]["node_cpus"] == [1.0, 1.0]
        assert len(p["ray_local"]["seconds_each"]) == 1
        for n in (1, 2):  # CPU by process role: the workers counted, the driver is this child process
            cpu = p["cluster"][f"nodes_{n}"]["cpu_s_per_pass"]
            assert cpu["workers"] > 0 and cpu["driver"] > 0 and "raylets" in cpu, cpu
    assert run["prepare"]["polars_same_row_work"]["ratio"] > 0
    assert {t["pass"] for t in doc["targets"].values()} == {"profile"}
    assert doc["targets"]["ray_over_polars_at_largest"]["ratio"] == run["profile"]["ratio"]
    text = "\n".join(readme.label_stats(doc))
    assert "| 200,000 | profile |" in text and "| 200,000 | prepare |" in text
    assert "CPU seconds of one profile pass by process" in text
    assert not (tmp_path / "w" / "stats_data").exists()  # the generated corpus is removed
