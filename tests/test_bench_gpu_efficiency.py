"""The GPU efficiency benchmark: its pure helpers exactly, and its smoke mode on a CPU (a bare sweep, then one
matched pair through the real prepare and train stages) in a child process with a Ray of its own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.gpu_efficiency import model_tflops, saturating_batch
from tests.conftest import run_child


def test_saturating_batch_is_the_smallest_within_the_share_of_the_best() -> None:
    rates = {16: 1000.0, 32: 1900.0, 64: 1960.0, 128: 2000.0}
    assert saturating_batch(rates) == 32  # 1900 >= 0.95 * 2000
    assert saturating_batch(rates, share=0.99) == 128
    assert saturating_batch({8: 5.0}) == 8
    with pytest.raises(ValueError, match="no measured batch"):
        saturating_batch({})


def test_model_tflops_is_six_flops_per_parameter_and_token() -> None:
    assert model_tflops(10**6, 10**6) == pytest.approx(6.0)
    assert model_tflops(22_700_000, 2_000_000) == pytest.approx(272.4)


@pytest.mark.e2e
def test_smoke_measures_a_sweep_and_a_matched_pair(tmp_path: Path) -> None:
    out, log = tmp_path / "gpu.json", tmp_path / "gpu.log"
    rc = run_child(["-m", "benchmarks.gpu_efficiency", "--smoke", "--out", str(out)], log, 600)
    assert rc == 0, log.read_text()[-4000:]
    doc = json.loads(out.read_text())
    assert doc["complete"] and doc["command"].startswith("python -m benchmarks.gpu_efficiency")
    assert {(r["seq"], r["batch"]) for r in doc["sweep"]} == {(16, 4), (16, 8), (32, 4), (32, 8)}
    for r in doc["sweep"]:
        assert r["samples_per_s"] > 0
        assert r["tokens_per_s"] == pytest.approx(r["samples_per_s"] * r["seq"], abs=0.05 * r["seq"] + 1)
        tflops = model_tflops(doc["params"]["params"], r["tokens_per_s"])
        assert r["tflops"] == pytest.approx(tflops, abs=0.01)
    assert set(doc["saturating_batch"]) == {"16", "32"}
    (pair,) = doc["pairs"]
    assert pair["seq"] == 16 and pair["batch"] == doc["saturating_batch"]["16"]
    assert len(pair["ray"]["epochs"]) == 2 and pair["ray"]["samples_per_s"] > 0
    mean_bare = (pair["bare_before"] + pair["bare_after"]) / 2
    assert pair["ratio"] == pytest.approx(pair["ray"]["samples_per_s"] / mean_bare, rel=1e-3)
    assert pair["ratio_range"][0] <= pair["ratio"] <= pair["ratio_range"][1]
