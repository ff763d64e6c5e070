"""The throughput document's sections from the phases' results: each side's median run, the ratios and
the checks that both sides did the same work."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.common.paths import RESULTS, ROOT
from benchmarks.throughput.scale import scale_model
from benchmarks.throughput.schedule import REPEAT_SEP
from benchmarks.throughput.stats import compare_counts

#: Training and scoring through Ray: at least this share of the bare loop's rate (issue #25).
TARGET_RATIO = 0.95
SPLIT_RESULTS = RESULTS / "split_scaling.json"


def _median_run(runs: list[dict[str, Any]], rate: str) -> dict[str, Any]:
    """The run with the median rate (the lower median for an even count), plus every run's rate."""
    ordered = sorted(runs, key=lambda r: r[rate])
    return {**ordered[(len(ordered) - 1) // 2], "runs": [r[rate] for r in runs]}


def _ratio(ray_rate: float, base_rate: float) -> float | None:
    return round(ray_rate / base_rate, 3) if base_rate > 0 else None


def assemble(work: Path, selected: list[str], params: dict[str, Any]) -> dict[str, Any]:
    def res(name: str) -> dict[str, Any]:
        return json.loads((work / "results" / f"{name}.json").read_text())

    def repeats(name: str) -> list[dict[str, Any]]:
        """A phase's results: one per repeat (name@0, name@1, ...), or the single run of --smoke."""
        n = params["repeats"] if not params.get("smoke") else 0
        return [res(f"{name}{REPEAT_SEP}{i}") for i in range(n)] if n else [res(name)]

    out: dict[str, Any] = {}
    if "stats" in selected:
        ray_side, pol = res("stats_ray"), res("stats_polars")
        out["stats"] = {
            "data": res("stats_gen"),
            "ray_data": ray_side,
            "polars": pol,
            "ratio_ray_over_polars": _ratio(ray_side["rows_per_s"], pol["rows_per_s"]),
            "target": None,
            "target_note": "no target: this records the cost of the Ray Data path against the fastest "
            "single-process tool at this size",
            "counts": compare_counts(work),
            "attribution": res("stats_profile"),
        }
    for section, ray_key, bare_key, rate in (
        ("train", "ray_train", "bare_pytorch", "steady_samples_per_s"),
        ("score", "ray_data", "bare_loop", "steady_docs_per_s"),
    ):
        if section not in selected:
            continue
        ray_runs, bare_runs = repeats(f"{section}_ray"), repeats(f"{section}_bare")
        ray_side, bare = _median_run(ray_runs, rate), _median_run(bare_runs, rate)
        ratio = _ratio(ray_side[rate], bare[rate])
        out[section] = {
            **({"setup": res("score_setup")} if section == "score" else {}),
            ray_key: ray_side,
            bare_key: bare,
            "ratio_ray_over_bare": ratio,
            "target": TARGET_RATIO,
            "target_met": ratio is not None and ratio >= TARGET_RATIO,
            "repeats": len(ray_runs),
            "pair_ratios": [_ratio(r[rate], b[rate]) for r, b in zip(ray_runs, bare_runs, strict=True)],
            "how": "each side ran `repeats` times, alternating Ray and bare child processes; each side's "
            "figures are those of its median run (by rate), every run's rate is in `runs`, and "
            "pair_ratios divides each Ray run by the bare run right after it",
        }
    if "train" in selected:
        out["train"]["same_work"] = (
            "same loop config dict (make_trainer's), same model builder, same tokenised tensors (the "
            "materialised train split), batch size, torch threads and niceness; Ray Train draws batches with "
            "iter_torch_batches and a local shuffle buffer, the bare loop indexes in-memory tensors"
        )
    if "score" in selected:
        part = out["score"]
        ray_side, bare = part["ray_data"], part["bare_loop"]
        sums = [r["score_sum"] for r in repeats("score_ray") + repeats("score_bare")]
        rel = (max(sums) - min(sums)) / max(abs(min(sums)), 1e-12)
        two_point, end_to_end = ray_side["two_point_docs_per_s"], ray_side["end_to_end_docs_per_s"]
        part["ratio_two_point_over_bare"] = _ratio(two_point, bare["steady_docs_per_s"])
        part["ratio_end_to_end"] = _ratio(end_to_end, bare["end_to_end_docs_per_s"])
        part["scores_agree"] = rel < 1e-4
        part["score_sum_relative_difference"] = rel
    if SPLIT_RESULTS.exists():
        split = json.loads(SPLIT_RESULTS.read_text())
        out["split"] = {
            "reference": str(SPLIT_RESULTS.relative_to(ROOT)),
            "produced_by": (split.get("command") if isinstance(split, dict) else None)
            or "python -m benchmarks.split_scaling",
            "note": "not re-run here; a copy of that file as it was when this benchmark ran",
            "results": split,
        }
    else:
        out["split"] = {"reference": str(SPLIT_RESULTS.relative_to(ROOT)), "results": None, "note": "absent"}
    if "scale" in selected:
        scale = res("scale")
        scale["model"] = scale_model(scale, scale["batch_size_per_worker"], scale["model_parameters"])
        out["scale"] = scale
    return out
