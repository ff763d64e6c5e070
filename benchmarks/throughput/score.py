"""Section score: steady-state documents/s of Ray Data batch scoring (`score_dataset`, one Scorer actor)
against `load_model(...).predict_scores` in a loop with the same batch size."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from benchmarks.throughput.context import PhaseSampler, RayContext, load_cfg, ray_data_operator_metrics
from benchmarks.throughput.niceness import enter_bare_side, probe_threads


def phase_score_setup(
    work: Path, params: dict[str, Any], sampler: PhaseSampler, ctx: RayContext
) -> dict[str, Any]:
    """A saved tiny-bert model (configs/demo.yaml's model, random weights: throughput does not depend on
    them) and `score_docs` synthetic documents in 8 Parquet shards (columns id, text, as predict reads)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from pipeline.core.config import SyntheticSection
    from pipeline.data.synthetic import generate
    from pipeline.modeling.encoder import train_wordpiece_tokenizer
    from pipeline.modeling.model import ModelConfig, build_model, save_model

    cfg = load_cfg(work, params)
    corpus = generate(SyntheticSection(num_docs=min(2000, params["score_docs"]), num_labels=40, seed=7))
    texts = corpus.column("text").to_pylist()
    tokenizer = train_wordpiece_tokenizer(iter(texts), vocab_size=cfg.model.vocab_size, lowercase=True)
    model_cfg = ModelConfig.from_any(cfg.model.model_dump(exclude={"init_bias_from_priors"}))
    torch.manual_seed(0)
    model = build_model(model_cfg, 40, tokenizer)
    save_model(
        model, tokenizer, [f"label_{i:03d}" for i in range(40)], work / "score_model", model_config=model_cfg
    )
    n = params["score_docs"]
    idx = np.arange(n) % len(texts)
    all_texts = pa.array([texts[i] for i in idx], pa.string())
    ids = pa.array([f"s{i}" for i in range(n)], pa.string())
    out = work / "score_data"
    out.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, n, 9).astype(int)
    for i in range(8):
        lo, hi = int(bounds[i]), int(bounds[i + 1])
        pq.write_table(pa.table({"id": ids[lo:hi], "text": all_texts[lo:hi]}), out / f"part-{i:05d}.parquet")
    # One batch of the same documents: the short run of the two-point start-up measurement (score_ray).
    small = min(cfg.evaluate.batch_size, n)
    (work / "score_small").mkdir(exist_ok=True)
    pq.write_table(
        pa.table({"id": ids[:small], "text": all_texts[:small]}), work / "score_small" / "part-00000.parquet"
    )
    return {
        "docs": n,
        "small_run_docs": small,
        "distinct_texts": len(texts),
        "max_length": cfg.model.max_length,
    }


def _scorer_operator_metrics() -> list[dict[str, Any]]:
    """Ray Data's metrics of every finished `MapBatches(Scorer)` operator of this session, oldest first."""
    return [op for op in ray_data_operator_metrics(0.0) or [] if op["operator"] == "MapBatches(Scorer)"]


def _ray_score_pass(folder: Path, model: Path, ecfg: Any) -> dict[str, Any]:
    """One Ray Data scoring run as evaluate/predict do it: read_parquet -> score_dataset (a Scorer actor
    pool) -> consumed on the driver. Its wall time includes the actor's start and model load; the Scorer
    operator's own metrics (Ray Data logs them when the run ends) time the actor's work alone."""
    import numpy as np

    from pipeline.core.parquet_reader import read_parquet
    from pipeline.evaluation.scoring import score_dataset

    known = len(_scorer_operator_metrics())
    t0 = time.perf_counter()
    scored = score_dataset(
        read_parquet(str(folder)),
        str(model),
        settings=ecfg,
    )
    rows, blocks, score_sum, first = 0, 0, 0.0, None
    for batch in scored.iter_batches(batch_size=None, batch_format="numpy"):
        first = first if first is not None else time.perf_counter() - t0
        rows += len(batch["id"])
        blocks += 1
        score_sum += float(np.asarray(batch["scores"], dtype=np.float64).sum())
    seconds = time.perf_counter() - t0
    operator = None
    for _ in range(50):  # the log line may land a moment after the last block
        found = _scorer_operator_metrics()
        if len(found) > known:
            operator = found[-1]
            break
        time.sleep(0.2)
    return {
        "seconds": seconds,
        "docs": rows,
        "blocks": blocks,
        "first_block_s": first,
        "sum": score_sum,
        "scorer_operator": operator,
    }


def phase_score_ray(
    work: Path, params: dict[str, Any], sampler: PhaseSampler, ctx: RayContext
) -> dict[str, Any]:
    """Steady rate: rows / `task_completion_time_s` of the Scorer operator, from Ray Data's own metrics: the
    actor's time from receiving its input block to handing back its output (batching, format conversion,
    the model, output building and serialisation), without the read, the actor's start or the driver.

    The scored output reaches the driver in whole blocks (here one), too coarse to time batches there. So a
    two-point estimate is reported beside it: a run of one batch (S + b / r) and one of all documents
    (S + N / r) give r = (N - b) / (T_N - T_b) and the start-up S. Measured here, S varies by several
    seconds from run to run (worker start, imports), which moves the two-point r by 10-20% at 20,000
    documents; the operator's time does not contain S. Order: a warm-up run of the single batch on a fresh
    Ray (its first-use costs), the full run, the single batch again."""
    from pipeline.core.config import load_config

    ecfg = load_config(None, []).evaluate
    info = ctx.ensure("local", "score_ray")
    sampler.reset()
    model = work / "score_model"
    # A fresh Ray pays first-use costs once (worker pool, imports); with Ray already used they are paid.
    cold = _ray_score_pass(work / "score_small", model, ecfg) if "ray_shared_with" not in info else None
    full = _ray_score_pass(work / "score_data", model, ecfg)
    small = _ray_score_pass(work / "score_small", model, ecfg)
    if full["docs"] != params["score_docs"]:
        raise RuntimeError(f"Ray Data scored {full['docs']} rows, expected {params['score_docs']}")
    memory = sampler.window()
    dt = full["seconds"] - small["seconds"]
    if dt > 0 and full["docs"] > small["docs"]:
        two_point = (full["docs"] - small["docs"]) / dt
    else:  # start-up noise larger than the scoring time (tiny --score-docs, busy machine)
        two_point = full["docs"] / full["seconds"]
    op = full["scorer_operator"] or {}
    busy = op.get("task_completion_time_s")
    if busy:
        steady = full["docs"] / busy
        method = "operator: rows / task_completion_time_s of MapBatches(Scorer)"
    else:  # Ray Data's log could not be read: the two-point estimate stands in
        steady, method = two_point, "two-point (Ray Data's operator metrics not found in its log)"
    return {
        "docs": full["docs"],
        "steady_docs_per_s": round(steady, 1),
        "steady_method": method,
        "two_point_docs_per_s": round(two_point, 1),
        "startup_s": round(max(small["seconds"] - small["docs"] / two_point, 0.0), 3),
        "end_to_end_docs_per_s": round(full["docs"] / full["seconds"], 1),
        "full_run_s": round(full["seconds"], 3),
        "single_batch_run_s": round(small["seconds"], 3),
        "single_batch_first_run_s": round(cold["seconds"], 3) if cold else None,
        "output_blocks_full_run": full["blocks"],
        "scorer_operator": full["scorer_operator"],
        "udf_share_of_actor_time": round(op["function_body_time_s"] / busy, 4)
        if busy and op.get("function_body_time_s")
        else None,
        "steady_what": "documents / the Scorer actor's task time (Ray Data's operator metrics): "
        "everything Ray Data does around the model per block, without the read, the actor's start or "
        "the driver",
        "two_point_what": "(N - b) / (T_N - T_b) from the wall times of a run of N documents and a run of "
        "one batch b",
        "startup_what": "T_b - b / r (two-point r): plan, read, actor start (process, imports), model load",
        "batch_size": ecfg.batch_size,
        "actors": ecfg.concurrency,
        "cpus_per_actor": ecfg.cpus_per_actor,
        "worker_threads": probe_threads(ecfg.cpus_per_actor, work),
        "score_sum": full["sum"],
        **info,
        "peak_memory": memory,
    }


def _score_summary(t0: float, arrivals: list[tuple[float, int]], expected: int) -> dict[str, Any]:
    rows = sum(n for _, n in arrivals)
    if rows != expected:
        raise RuntimeError(f"scored {rows} rows, expected {expected}")
    t_first, n_first = arrivals[0]
    t_last = arrivals[-1][0]
    steady = (rows - n_first) / (t_last - t_first) if len(arrivals) > 1 and t_last > t_first else 0.0
    return {
        "docs": rows,
        "batches": len(arrivals),
        "startup_s": round(t_first - t0, 3),
        "steady_docs_per_s": round(steady, 1),
        "end_to_end_docs_per_s": round(rows / (t_last - t0), 1),
        "steady_what": "documents after the first batch / time from the first batch to the last",
    }


def phase_score_bare(
    work: Path, params: dict[str, Any], sampler: PhaseSampler, ctx: RayContext
) -> dict[str, Any]:
    """`load_model(...).predict_scores` over the same documents in batches of evaluate.batch_size."""
    import numpy as np
    import pyarrow.parquet as pq
    import torch

    from pipeline.core.config import load_config
    from pipeline.modeling.model import load_model

    niceness = enter_bare_side(work)
    bs = load_config(None, []).evaluate.batch_size
    t0 = time.perf_counter()
    texts = pq.read_table(work / "score_data", columns=["text"]).column("text").to_pylist()
    model = load_model(work / "score_model")
    t_loaded = time.perf_counter()
    arrivals = []
    score_sum = 0.0
    for start in range(0, len(texts), bs):
        scores = model.predict_scores(texts[start : start + bs], batch_size=bs)
        arrivals.append((time.perf_counter(), len(scores)))
        score_sum += float(scores.astype(np.float64).sum())
    return _score_summary(t0, arrivals, params["score_docs"]) | {
        "batch_size": bs,
        "load_model_s": round(t_loaded - t0, 3),
        "startup_what": "read the texts, load_model and the first batch",
        "torch_threads": torch.get_num_threads(),
        "niceness": niceness,
        "score_sum": score_sum,
        "peak_memory": sampler.window(),
    }
