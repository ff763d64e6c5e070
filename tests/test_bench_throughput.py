"""The throughput benchmark's smoke mode: every section is there, every rate is positive, both stats
implementations agree. It starts its own two-node Ray cluster in a child process (one Ray start for every
section): about a minute and a half on 2 idle CPUs, many times that on a busy machine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.e2e
@pytest.mark.timeout(660)
def test_smoke_writes_every_section(no_local_ray, tmp_path):
    out = tmp_path / "throughput.json"
    log = tmp_path / "throughput.log"
    with log.open("w") as sink:
        # Output to a file, not a pipe: Ray's daemons inherit the child's pipes and would keep them open.
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.throughput", "--smoke", "--out", str(out)],
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            rc = proc.wait(timeout=600)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the process group this test started, Ray included
            proc.wait()
            rc = "timeout"
    assert rc == 0, log.read_text()[-4000:]
    doc = json.loads(out.read_text())

    assert doc["mode"] == "smoke" and doc["command"].startswith("python -m benchmarks.throughput")
    assert {"ray", "torch", "polars", "pyarrow"} <= set(doc["versions"])
    assert doc["machine"]["summary"]
    for section in ("stats", "train", "score", "split", "scale"):
        assert section in doc, section

    stats = doc["stats"]
    assert stats["ray_data"]["rows_per_s"] > 0 and stats["polars"]["rows_per_s"] > 0
    assert stats["counts"]["identical"], stats["counts"]["checks"]
    assert stats["ratio_ray_over_polars"] > 0
    assert stats["ray_data"]["peak_memory"]["driver_ru_maxrss_mib"] > 0

    for section, ray_key, base_key, rate in (
        ("train", "ray_train", "bare_pytorch", "steady_samples_per_s"),
        ("score", "ray_data", "bare_loop", "steady_docs_per_s"),
    ):
        part = doc[section]
        assert part[ray_key][rate] > 0 and part[base_key][rate] > 0, part
        assert part["ratio_ray_over_bare"] > 0
        assert part["target"] == 0.9 and isinstance(part["target_met"], bool)
        assert part[ray_key]["startup_s"] >= 0
        assert part[ray_key]["peak_memory"]["driver_ru_maxrss_mib"] > 0
    # Both sides of each comparison ran with the same torch thread count.
    assert (
        doc["train"]["ray_train"]["worker_threads"]["torch_threads"]
        == doc["train"]["bare_pytorch"]["torch_threads"]
    )
    assert doc["score"]["scores_agree"]

    assert doc["split"]["reference"].endswith("split_scaling.json")
    scale = doc["scale"]
    assert scale["workers_1"]["steady_samples_per_s"] > 0 and scale["workers_2"]["steady_samples_per_s"] > 0
    assert scale["model"]["predicted"]["4"]["ring_allreduce_model_samples_per_s"] > 0
    assert "same 2-CPU machine" in scale["model"]["limits"]
