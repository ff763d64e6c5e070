"""Section scale: training samples/s with 1 and 2 workers on a two-node ray.cluster_utils.Cluster (1 CPU
per node), and a model fitted on the two points that predicts N workers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.common.measure import MIB
from benchmarks.throughput.context import CLUSTER_TRAIN, PhaseSampler, RayContext, load_cfg, pickle_by_value
from benchmarks.throughput.niceness import probe_threads
from benchmarks.throughput.train import timed_fit, train_inputs


def phase_scale(work: Path, params: dict[str, Any], sampler: PhaseSampler, ctx: RayContext) -> dict[str, Any]:
    from pipeline.modeling.model import build_model
    from pipeline.training.train import resolved_loss_params

    pickle_by_value()
    results: dict[str, Any] = ctx.ensure("cluster", "scale")
    import ray

    results["nodes_cpus"] = [n["Resources"].get("CPU") for n in ray.nodes() if n.get("Alive")]
    p = {**params, "epochs": params["scale_epochs"]}
    inputs, setup = train_inputs(work, p, ctx)
    results.update(setup)
    model = build_model(inputs.model_cfg, len(inputs.labels), inputs.featurizer)
    results["model_parameters"] = sum(t.numel() for t in model.parameters())
    results["batch_size_per_worker"] = load_cfg(work, p).train.batch_size
    results["settings"] = CLUSTER_TRAIN
    for workers in (1, 2):
        if workers == 1 and "scale_1w" in ctx.cache and params["epochs"] == params["scale_epochs"]:
            results["workers_1"] = ctx.cache["scale_1w"]
            continue
        cfg = load_cfg(work, p, [*CLUSTER_TRAIN, f"train.num_workers={workers}"])
        loss_params = resolved_loss_params(cfg.loss.name, cfg.loss.params, inputs)
        sampler.reset()
        summary, _ = timed_fit(
            cfg, inputs, loss_params, f"scale-{workers}w", work / f"scale_{workers}w.jsonl"
        )
        results[f"workers_{workers}"] = {**summary, "peak_memory": sampler.window()}
    results["worker_threads"] = probe_threads(0.5)
    return results


SCALE_LIMITS = (
    "Both 'nodes' are processes on the same 2-CPU machine: they share the cores, memory bandwidth and "
    "caches, and Gloo's all-reduce runs over loopback, so comm(2) mixes CPU contention (the two workers "
    "plus Ray Data, raylets and the driver on 2 cores) with network cost that a real network would set "
    "differently (higher latency, lower bandwidth than loopback). The model is fitted on two points, "
    "assumes a fixed per-worker batch, no compute/communication overlap beyond what DDP gives, an even "
    "data split and an input pipeline that keeps up; it says nothing about stragglers, GPUs or cross-rack"
    " bandwidth. Measure on the target cluster before planning capacity from it."
)


def scale_model(res: dict[str, Any], batch_size: int, params_count: int | None) -> dict[str, Any]:
    """Two fits of the same per-worker batch: t(N) = c + comm(N), c = B / s1 (compute per step),
    comm(2) = 2B / s2 - c; ring all-reduce moves 2(N-1)/N of the gradient per worker, so
    comm(N) = (N-1)/N * 2 comm(2) and s(N) = N B / (c + comm(N))."""
    s1 = res["workers_1"]["steady_samples_per_s"]
    s2 = res["workers_2"]["steady_samples_per_s"]
    if s1 <= 0 or s2 <= 0:
        return {"note": "no positive rate measured"}
    b = batch_size
    c = b / s1
    comm2 = max(2 * b / s2 - c, 0.0)
    eff2 = s2 / (2 * s1)
    predict = {}
    for n in (1, 2, 4, 8, 16, 32):
        ring = n * b / (c + (n - 1) / n * 2 * comm2)
        predict[str(n)] = {
            "ring_allreduce_model_samples_per_s": round(ring, 1),
            "constant_efficiency_samples_per_s": round(n * s1 * (eff2 if n > 1 else 1.0), 1),
        }
    return {
        "speedup_2_workers": round(s2 / s1, 3),
        "efficiency_2_workers": round(eff2, 3),
        "compute_s_per_step": round(c, 5),
        "sync_s_per_step_2_workers": round(comm2, 5),
        "gradient_mib": round(params_count * 4 / MIB, 2) if params_count else None,
        "model": "samples/s(N) = N * B / (c + comm(N)) with B the per-worker batch, c = B / s1 the compute "
        "time of one step, comm(2) = 2B / s2 - c the synchronisation cost measured with 2 workers and "
        "comm(N) = 2 (N-1)/N * comm(2) (ring all-reduce: each worker sends and receives 2(N-1)/N of the "
        "gradient). Simpler bound: samples/s(N) = N * s1 * e with e = s2 / (2 s1) held constant.",
        "predicted": predict,
        "limits": SCALE_LIMITS,
    }
