"""The throughput benchmark's smoke mode: every section is there, every rate is positive, both stats
implementations agree. The whole smoke starts its own two-node Ray cluster in a child process (one Ray start
for every section) and runs three Ray Train fits: two and a half to three and a half minutes on 2 CPUs
(marked e2e). The schedule of a full run is tested here without Ray."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_child

ROOT = Path(__file__).resolve().parents[1]


def _smoke(tmp_path: Path, *args: str) -> dict[str, Any]:
    """`python -m benchmarks.throughput --smoke [args]` in a process group of its own; its JSON."""
    out = tmp_path / "throughput.json"
    log = tmp_path / "throughput.log"
    rc = run_child(["-m", "benchmarks.throughput", "--smoke", "--out", str(out), *args], log, 600)
    assert rc == 0, log.read_text()[-4000:]
    doc = json.loads(out.read_text())
    assert doc["mode"] == "smoke" and doc["command"].startswith("python -m benchmarks.throughput")
    assert {"ray", "torch", "polars", "pyarrow"} <= set(doc["versions"])
    assert doc["machine"]["summary"]
    assert doc["split"]["reference"].endswith("split_scaling.json")
    return doc


def _check_stats(doc: dict[str, Any]) -> None:
    stats = doc["stats"]
    assert stats["ray_data"]["rows_per_s"] > 0 and stats["polars"]["rows_per_s"] > 0
    assert stats["counts"]["identical"], stats["counts"]["checks"]
    assert stats["ratio_ray_over_polars"] > 0
    assert stats["ray_data"]["peak_memory"]["driver_peak_mib"] > 0


def _check_paired(doc: dict[str, Any], section: str, ray_key: str, base_key: str, rate: str) -> None:
    part = doc[section]
    assert part[ray_key][rate] > 0 and part[base_key][rate] > 0, part
    assert part["ratio_ray_over_bare"] > 0
    assert part["target"] == 0.95 and isinstance(part["target_met"], bool)
    assert part[ray_key]["startup_s"] >= 0
    assert part[ray_key]["peak_memory"]["driver_peak_mib"] > 0
    # The bare side was not sampled (no thread in its loop's process): its tree is that process alone.
    bare = part[base_key]["peak_memory"]
    assert bare["driver_rss_peak_sampled_mib"] is None and bare["ray_worker_rss_peak_max_mib"] is None
    assert bare["process_tree_rss_peak_sum_mib"] == bare["driver_peak_mib"] > 0
    assert part["repeats"] == 1 and part[ray_key]["runs"] == [part[ray_key][rate]]


def _check_score(doc: dict[str, Any]) -> None:
    _check_paired(doc, "score", "ray_data", "bare_loop", "steady_docs_per_s")
    assert doc["score"]["scores_agree"]
    # The bare loop ran at the niceness Ray gave its scoring actor (Ray's workers run niced; see the script).
    assert doc["score"]["bare_loop"]["niceness"] == doc["score"]["ray_data"]["worker_threads"]["niceness"]
    # The scoring rate comes from Ray Data's own metrics of the Scorer operator, found in its log.
    score = doc["score"]["ray_data"]
    assert score["steady_method"].startswith("operator"), score["steady_method"]
    operator = score["scorer_operator"]
    assert operator["rows_task_outputs_generated"] == doc["sizes"]["score_docs"]
    assert 0 < operator["function_body_time_s"] <= operator["task_completion_time_s"]


@pytest.mark.e2e
@pytest.mark.timeout(660)
def test_smoke_writes_every_section(no_local_ray, tmp_path):
    doc = _smoke(tmp_path)
    _check_stats(doc)
    _check_score(doc)
    _check_paired(doc, "train", "ray_train", "bare_pytorch", "steady_samples_per_s")
    waits = doc["train"]["ray_train"]["input_wait_fraction_per_epoch"]
    assert len(waits) == doc["sizes"]["epochs"] and all(0 <= w < 1 for w in waits)
    # Both sides of each comparison ran with the same torch thread count and niceness.
    ray_worker, bare = doc["train"]["ray_train"]["worker_threads"], doc["train"]["bare_pytorch"]
    assert ray_worker["torch_threads"] == bare["torch_threads"]
    assert ray_worker["niceness"] == bare["niceness"] > 0
    scale = doc["scale"]
    assert scale["workers_1"]["steady_samples_per_s"] > 0 and scale["workers_2"]["steady_samples_per_s"] > 0
    assert scale["model"]["predicted"]["4"]["ring_allreduce_model_samples_per_s"] > 0
    assert "same 2-CPU machine" in scale["model"]["limits"]


def test_bare_side_takes_the_niceness_ray_gave_its_workers(tmp_path):
    """In a child process: niceness only goes up without privileges, and this test's own must not change."""
    code = (
        "import os, sys; from pathlib import Path; from benchmarks.throughput import niceness as t; "
        "w = Path(sys.argv[1]); before = os.nice(0); default = t._adopt_ray_niceness(w); "
        "(w / t.NICENESS_FILE).write_text(str(default + 2)); "
        "print(before, default, t._adopt_ray_niceness(w), t._adopt_niceness(0))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    before, default, saved, lower = map(int, proc.stdout.split())
    expected = max(before, 15)  # Ray's default when its side has not run here
    assert (default, saved, lower) == (expected, expected + 2, expected + 2)


def test_full_runs_alternate_the_ray_and_bare_sides():
    from benchmarks.throughput import driver as throughput

    names = [name for name, _, _ in throughput.PHASES]
    assert throughput._groups(list(throughput.PHASES), smoke=True, repeats=1) == [names]
    groups = throughput._groups(list(throughput.PHASES), smoke=False, repeats=2)
    assert all(len(g) == 1 for g in groups)
    order = [g[0] for g in groups]
    for section in ("train", "score"):
        i = order.index(f"{section}_ray@0")
        pairs = [f"{section}_{side}@{n}" for n in (0, 1) for side in ("ray", "bare")]
        assert order[i : i + 4] == pairs
        assert f"{section}_ray" not in order and f"{section}_bare" not in order
    assert order.index("score_setup") < order.index("score_ray@0")
    assert {"stats_gen", "stats_polars", "stats_profile", "stats_ray", "scale"} <= set(order)


def test_median_run_keeps_that_runs_figures_and_every_rate():
    from benchmarks.throughput.assemble import _median_run

    runs = [{"rate": 3.0, "x": "a"}, {"rate": 1.0, "x": "b"}, {"rate": 2.0, "x": "c"}]
    assert _median_run(runs, "rate") == {"rate": 2.0, "x": "c", "runs": [3.0, 1.0, 2.0]}
    assert _median_run(runs[:2], "rate")["x"] == "b"  # even count: the lower median


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--smoke", "--repeats", "2"], "--repeats applies to full runs"),
        (["--repeats", "0"], "--repeats must be at least 1"),
    ],
)
def test_bad_repeats_are_refused_before_anything_runs(argv, message, capsys):
    from benchmarks.throughput import driver as throughput

    with pytest.raises(SystemExit):
        throughput.main(argv)
    assert message in capsys.readouterr().err


def test_a_quiet_window_takes_no_samples_and_reports_the_process_alone():
    from benchmarks.throughput.context import PhaseSampler

    sampler = PhaseSampler()
    try:
        sampler.reset(quiet=True)
        calls = []
        sampler.sample = lambda: calls.append(1)  # the thread (every 0.25 s) would call this
        held = bytearray(64 * 1024 * 1024)  # a 64 MiB peak inside the window
        held[::4096] = b"x" * len(held[::4096])
        time.sleep(0.6)
        quiet = sampler.window()
        assert calls == []
        assert quiet["driver_rss_peak_sampled_mib"] is None and quiet["ray_worker_rss_peak_max_mib"] is None
        assert quiet["process_tree_rss_peak_sum_mib"] == quiet["driver_peak_mib"] >= 64
        del held, sampler.sample
        sampler.reset()  # a Ray phase's window samples again
        time.sleep(0.6)
        assert sampler.window()["driver_rss_peak_sampled_mib"] > 0
    finally:
        sampler.stop()
