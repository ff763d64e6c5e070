"""What Ray costs: each stage's throughput through the pipeline against a single-process baseline.

    .venv/bin/python -m benchmarks.throughput [--rows 5000000] [--only stats,train,score,scale] [--out PATH]
    .venv/bin/python -m benchmarks.throughput --smoke          # tiny sizes, one Ray start, temp output

Sections of benchmarks/results/throughput.json (each one ratio, both sides measured in this one invocation):

- stats: the prepare stage's label statistics (`read_normalised` + `_collect_partials`: Ray Data reads the
  shards, normalises every row and folds per-block partials) against one polars query over the same shards
  (per-split documents, label counts and summed cardinality); both results must be identical.
  Also an attribution of the Ray figure: `Normalise` and `block_partial` timed on one shard in-process,
  without Ray (what the map_batches functions cost before any Ray overhead).
- train: steady-state samples/s of Ray Train (`make_trainer` -> TorchTrainer, 1 worker) against a bare PyTorch
  loop: the same model (`build_model`), the same loop config (loss, optimiser, schedule, clipping), the same
  tokenised tensors and batch size, the same torch thread count. Epoch 0 is excluded; start-up is reported.
- score: steady-state documents/s of Ray Data batch scoring (`score_dataset`, one `Scorer` actor) against
  `load_model(...).predict_scores` in a loop with the same batch size. Ray's steady rate is rows / the
  Scorer operator's task time from Ray Data's own metrics; a two-point estimate and the start-up are
  reported beside it (see phase_score_ray). The score sums of both sides must agree.
- train and score run each side --repeats times (default 3), Ray and bare child processes alternating, and
  report each side's median run (see _groups: this machine's speed drifts over minutes).
- split: a reference to benchmarks/results/split_scaling.json (benchmarks/split_scaling.py), not re-run here.
- scale: training samples/s with 1 and 2 workers on a two-node ray.cluster_utils.Cluster (1 CPU per node)
  and a model that predicts N nodes.

Every measured side runs in a child process of its own (its ru_maxrss is that side's driver peak) with the
machine otherwise idle; Ray's workers are separate processes again, so a sampler also records the peak RSS of
every process the child started (raylet, GCS, dashboard, workers; that sum counts shared object-store pages
once per process mapping them). With --smoke all phases share one child and one Ray start (the two-node
cluster): ru_maxrss is then the child's high-water mark so far, and `shared_process_with` lists the earlier
phases. Torch runs --threads threads (default 1) on both sides and the Hugging Face tokenizer one thread.
Both sides run at the niceness Ray gives its workers (15 by default; see _adopt_ray_niceness): in --smoke the
shared child takes it at the first bare phase, which only smoke's own figures feel.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.machine import machine_summary, memory_gib

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "throughput.json"
SPLIT_RESULTS = ROOT / "benchmarks" / "results" / "split_scaling.json"
SECTIONS = ("stats", "train", "score", "scale")
TARGET_RATIO = 0.9
#: Ray's default worker niceness (PR ray-project/ray#24928); the bare sides adopt what the workers really had.
RAY_DEFAULT_WORKER_NICENESS = 15
NICENESS_FILE = "ray_worker_niceness.txt"
MIB = 1024 * 1024

#: Sizes of the full benchmark and of --smoke.
FULL = {
    "rows": 5_000_000,
    "labels": 1000,
    "shards": 20,
    "train_docs": 6_000,
    "epochs": 4,
    "score_docs": 20_000,
    "repeats": 3,
    "scale_epochs": 3,
}
SMOKE = {
    "rows": 20_000,
    "labels": 1000,
    "shards": 4,
    "train_docs": 400,
    "epochs": 2,
    "score_docs": 1024,
    "repeats": 1,
    "scale_epochs": 2,
}

#: Phases in the order they run (score_setup before score_*, train_ray before train_bare; the Ray phases
#: next to each other, so that --smoke starts Ray once). A full run alternates the Ray and bare sides of
#: train and score instead (see _groups).
PHASES = (
    ("stats_gen", "stats", None),
    ("stats_polars", "stats", None),
    ("stats_profile", "stats", None),
    ("score_setup", "score", None),
    ("stats_ray", "stats", "local"),
    ("train_ray", "train", "local"),
    ("score_ray", "score", "local"),
    ("scale", "scale", "cluster"),
    ("train_bare", "train", None),
    ("score_bare", "score", None),
)


# ------------------------------------------------------------------------------------------------ memory


def _ru_maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class PeakSampler:
    """Samples the RSS of this process and of every process it started (Ray's daemons and workers) until
    stopped; peaks are kept per sampling window (one window per phase)."""

    def __init__(self, interval: float = 0.25) -> None:
        import psutil

        self._psutil = psutil
        self._me = psutil.Process()
        self.interval = interval
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.reset()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._thread.start()

    def reset(self) -> None:
        with self._lock:
            self.driver = 0
            self.tree = 0
            self.worker = 0

    def _sample(self) -> None:
        ps = self._psutil
        try:
            driver = self._me.memory_info().rss
        except ps.Error:
            return
        tree, worker = driver, 0
        for child in self._me.children(recursive=True):
            try:
                rss = child.memory_info().rss
                name = child.name()
            except ps.Error:
                continue
            tree += rss
            if name.startswith("ray::"):
                worker = max(worker, rss)
        with self._lock:
            self.driver = max(self.driver, driver)
            self.tree = max(self.tree, tree)
            self.worker = max(self.worker, worker)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def window(self) -> dict[str, float]:
        self._sample()
        with self._lock:
            return {
                "driver_ru_maxrss_mib": round(_ru_maxrss_mib(), 1),
                "driver_rss_peak_sampled_mib": round(self.driver / MIB, 1),
                "process_tree_rss_peak_sum_mib": round(self.tree / MIB, 1),
                "ray_worker_rss_peak_max_mib": round(self.worker / MIB, 1) if self.worker else None,
            }

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# ------------------------------------------------------------------------------------------------ helpers


def _harmonic(rates: list[float]) -> float:
    """Rate of equal-sized pieces run one after the other (total work / total time)."""
    return len(rates) / sum(1.0 / r for r in rates) if rates and all(r > 0 for r in rates) else 0.0


#: Train settings on the two-node cluster (as tests/test_train.py's DDP test): half a CPU per worker, so two
#: workers and Ray Data fit on 2 CPUs; SPREAD puts the two workers on different nodes.
CLUSTER_TRAIN = ["train.cpus_per_worker=0.5", "train.data_cpus=0.5", "train.placement_strategy=SPREAD"]


class RayContext:
    """The Ray of one child process, started on first use and shared by its phases.

    local: ray.init(address="local", num_cpus=2) with the dashboard, as cluster.ensure_ray (Train
    V2's placement-group cleaner reaches the State API through it). cluster: ray.cluster_utils.Cluster, two
    nodes of 1 CPU each. With --smoke every phase uses the cluster (one start-up instead of two).

    Both start beside any other Ray on the machine (cluster: free ports, a temp folder of their own,
    removed at stop, and the GCS address given to every Ray process: the placement-group cleaner otherwise
    picks "the latest cluster" among all the Ray instances running on the machine and, not finding our Train
    controller there, would remove our workers' placement group).
    """

    def __init__(self, smoke: bool) -> None:
        self.smoke = smoke
        self.kind: str | None = None
        self.cluster: Any = None
        self.start_s = 0.0
        self.users: list[str] = []
        self.cache: dict[str, Any] = {}
        self.temp_dir: str | None = None

    def ensure(self, kind: str, phase: str) -> dict[str, Any]:
        want = "cluster" if self.smoke else kind
        if self.kind != want:
            self.stop()
            self._start(want)
        info = {"ray": self.describe(), "ray_start_s": round(self.start_s, 2)}
        if self.users:
            info["ray_shared_with"] = list(self.users)
        self.users.append(phase)
        return info

    def describe(self) -> str:
        if self.kind == "local":
            return "local Ray, 2 CPUs, dashboard on"
        return "ray.cluster_utils.Cluster: 2 nodes x 1 CPU, dashboard on the head"

    def _start(self, kind: str) -> None:
        import tempfile

        import ray
        import ray.data

        from pipeline.core.cluster import head_node_args, start_local_ray

        self.temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
        t0 = time.perf_counter()
        if kind == "local":
            start_local_ray(2, include_dashboard=True, log_to_driver=True, temp_dir=self.temp_dir)
        else:
            from ray.cluster_utils import Cluster

            head = head_node_args(1, self.temp_dir, include_dashboard=True)
            self.cluster = Cluster(initialize_head=True, head_node_args=head)
            self.cluster.add_node(num_cpus=1, env_vars=head["env_vars"])
            self.cluster.wait_for_nodes()
            ray.init(address=self.cluster.address, log_to_driver=True)
        ray.data.DataContext.get_current().enable_progress_bars = False
        self.start_s = time.perf_counter() - t0
        self.kind, self.users = kind, []

    def stop(self) -> None:
        import shutil

        import ray

        if ray.is_initialized():
            ray.shutdown()
        if self.cluster is not None:
            self.cluster.shutdown()
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
        self.cluster, self.kind, self.users, self.temp_dir = None, None, [], None
        self.cache.clear()


def _pickle_by_value() -> None:
    """Ray workers may not import `benchmarks` (it is not an installed package): ship its code by value."""
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _load_cfg(work: Path, params: dict[str, Any], extra: list[str] | None = None):
    """configs/demo.yaml (the embedded default: tiny-bert, db loss, batch 32) with the benchmark's sizes."""
    from pipeline.core.config import load_config

    return load_config(
        ROOT / "configs" / "demo.yaml",
        [
            f"run.output={work / 'runs'}",
            "run.name=train",
            f"data.synthetic.num_docs={params['train_docs']}",
            f"train.epochs={params['epochs']}",
            "train.patience=0",
            "train.max_failures=0",
            "train.num_workers=1",
            *(extra or []),
        ],
    )


def _ensure_prepared(work: Path, params: dict[str, Any]) -> None:
    """The training corpus (synthetic, configs/demo.yaml) prepared once per benchmark run."""
    from pipeline.data.prepare import run_prepare

    cfg = _load_cfg(work, params)
    if not (work / "runs" / "train" / "label_stats.json").exists():
        run_prepare(cfg)


# ------------------------------------------------------------------------------------------------ stats


def _label_names(n: int) -> list[str]:
    return [f"label-{i:04d}" for i in range(n)]


def phase_stats_gen(
    work: Path, params: dict[str, Any], sampler: PeakSampler, ctx: RayContext
) -> dict[str, Any]:
    """Zipf (exponent 1.1) label sets of 1-3 distinct labels per row, written vectorised with numpy+pyarrow:
    split folders train/validation/test holding 70/15/15% of the shards."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    rows, n_labels, shards = params["rows"], params["labels"], params["shards"]
    t0 = time.perf_counter()
    p = 1.0 / np.arange(1, n_labels + 1) ** 1.1
    p /= p.sum()
    names = pa.array(_label_names(n_labels), pa.string())
    texts = pa.array([f"a short document about topic {i}" for i in range(16)], pa.string())
    n_val = max(1, round(shards * 0.15))
    layout = ["train"] * (shards - 2 * n_val) + ["validation"] * n_val + ["test"] * n_val
    bounds = np.linspace(0, rows, shards + 1).astype(np.int64)
    out = work / "stats_data"
    nbytes = 0
    for i, split in enumerate(layout):
        lo, hi = int(bounds[i]), int(bounds[i + 1])
        n = hi - lo
        rng = np.random.default_rng(1000 + i)
        cand = rng.choice(n_labels, size=(n, 3), p=p)
        k = rng.integers(1, 4, size=n)
        valid = np.arange(3)[None, :] < k[:, None]
        valid[:, 1] &= cand[:, 1] != cand[:, 0]
        valid[:, 2] &= (cand[:, 2] != cand[:, 0]) & (cand[:, 2] != cand[:, 1])
        offsets = np.zeros(n + 1, np.int32)
        np.cumsum(valid.sum(axis=1), out=offsets[1:])
        values = pc.take(names, pa.array(cand[valid]))
        ids = pc.binary_join_element_wise("doc-", pc.cast(pa.array(np.arange(lo, hi)), pa.string()), "")
        table = pa.table(
            {
                "id": ids,
                "text": pc.take(texts, pa.array(rng.integers(0, len(texts), size=n))),
                "labels": pa.ListArray.from_arrays(pa.array(offsets), values),
            }
        )
        path = out / split / f"part-{i:05d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        nbytes += path.stat().st_size
    return {
        "seconds": round(time.perf_counter() - t0, 2),
        "rows": rows,
        "labels": n_labels,
        "shards": {s: layout.count(s) for s in ("train", "validation", "test")},
        "parquet_mib": round(nbytes / MIB, 1),
        "label_distribution": "Zipf exponent 1.1 over label ranks, 1-3 distinct labels per row (uniform)",
    }


def _split_files(work: Path) -> dict[str, list[str]]:
    base = work / "stats_data"
    return {s: sorted(str(p) for p in (base / s).glob("*.parquet")) for s in ("train", "validation", "test")}


def phase_stats_polars(
    work: Path, params: dict[str, Any], sampler: PeakSampler, ctx: RayContext
) -> dict[str, Any]:
    """One lazy polars query (multi-threaded, one process) with the prepare stage's row semantics: labels
    de-duplicated, empty label names dropped, rows with empty text or no labels dropped (policy drop)."""
    import polars as pl

    t0 = time.perf_counter()
    frames = [
        pl.scan_parquet(files).select("text", "labels").with_columns(split=pl.lit(split))
        for split, files in _split_files(work).items()
    ]
    el = pl.element()
    rows = (
        pl.concat(frames)
        .with_columns(
            pl.col("labels")
            .list.eval(el.filter(el.is_not_null() & (el != "")))
            .list.unique(maintain_order=True)
        )
        .filter(
            pl.col("text").is_not_null()
            & (pl.col("text").str.strip_chars() != "")
            & (pl.col("labels").list.len() > 0)
        )
    )
    docs_q = rows.group_by("split").agg(docs=pl.len(), cardinality_sum=pl.col("labels").list.len().sum())
    counts_q = rows.select("split", "labels").explode("labels").group_by("split", "labels").agg(n=pl.len())
    docs, counts = pl.collect_all([docs_q, counts_q])
    seconds = time.perf_counter() - t0
    result: dict[str, Any] = {
        s: {"docs": 0, "cardinality_sum": 0, "label_counts": {}} for s in ("train", "validation", "test")
    }
    for split, n, card in docs.iter_rows():
        result[split].update(docs=int(n), cardinality_sum=int(card))
    for split, label, n in counts.iter_rows():
        result[split]["label_counts"][label] = int(n)
    (work / "stats_polars_counts.json").write_text(json.dumps(result))
    return {
        "seconds": round(seconds, 3),
        "rows_per_s": round(params["rows"] / seconds, 1),
        "threads": pl.thread_pool_size(),
        "engine": "polars lazy API, engine 'auto', pl.collect_all of two queries over one scan",
        "peak_memory": sampler.window(),
    }


def _counts_from_partial(total: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for split, sp in total.splits.items():
        out[split] = {
            "docs": int(sp.docs),
            "cardinality_sum": int(sp.cardinality_sum),
            "label_counts": {str(k): int(v) for k, v in sp.label_counts.items()},
        }
    return out


def phase_stats_ray(
    work: Path, params: dict[str, Any], sampler: PeakSampler, ctx: RayContext
) -> dict[str, Any]:
    from pipeline.core.config import load_config
    from pipeline.data.prepare import _collect_partials, read_normalised
    from pipeline.data.sources import discover

    info = ctx.ensure("local", "stats_ray")
    sampler.reset()
    cfg = load_config(None, [])
    t0 = time.perf_counter()
    spec = discover(str(work / "stats_data"), cfg.data)
    discover_s = time.perf_counter() - t0
    wall = time.time()
    t1 = time.perf_counter()
    total = _collect_partials(read_normalised(spec, cfg))
    seconds = time.perf_counter() - t1
    memory = sampler.window()
    operators = _ray_data_operator_metrics(wall - 1.0)
    (work / "stats_ray_counts.json").write_text(json.dumps(_counts_from_partial(total)))
    return {
        "seconds": round(seconds, 3),
        "rows_per_s": round(params["rows"] / seconds, 1),
        "discover_s": round(discover_s, 3),
        **info,
        "what": "pipeline.data.prepare.read_normalised(spec, cfg) streamed into "
        "prepare._collect_partials (map_batches(stats.block_partial), take_all, combine); Ray start "
        "and discover (schema check of every footer) excluded from the rate. run_prepare materialises the "
        "normalised rows in between (for the split and the write) and runs a second pass for top pairs "
        "(_top_pairs); neither is in this figure",
        "ray_data_operators": operators,
        "peak_memory": memory,
    }


_OP_KEYS = (
    "num_tasks_finished",
    "rows_task_outputs_generated",
    "task_scheduling_time_s",
    "function_body_time_s",
    "task_completion_time_s",
    "average_total_task_completion_time_s",
    "input_prep_time_s",
    "output_build_time_s",
    "block_serialization_time_s",
)


def _ray_data_operator_metrics(since: float) -> list[dict[str, Any]] | None:
    """Best effort: per-operator metrics of the Ray Data executions that started after `since` (epoch
    seconds), from Ray Data's own log of this session ("Operator ... completed. Operator Metrics:" lines;
    times are summed over the operator's tasks). None when the log cannot be read."""
    import re

    try:
        import ray

        session = Path(ray._private.worker._global_node.get_session_dir_path())
        logs = sorted(
            (f for f in (session / "logs" / "ray-data").glob("ray-data-*.log") if f.stat().st_mtime >= since),
            key=lambda f: f.stat().st_mtime,
        )
        out = []
        for log_file in logs:
            lines = log_file.read_text(errors="replace").splitlines()
            for i, line in enumerate(lines[:-1]):
                m = re.search(r"Operator (\S+?)\[(.+)\] completed\. Operator Metrics:", line)
                if not m or m.group(1) == "InputDataBuffer":
                    continue
                entry: dict[str, Any] = {"operator": m.group(2)}
                for key in _OP_KEYS:
                    v = re.search(rf"'{key}': ([0-9.eE+-]+)", lines[i + 1])
                    if v:
                        entry[key] = round(float(v.group(1)), 3)
                out.append(entry)
        return out
    except Exception:  # diagnostics only: the measurement stands without them
        return None


def phase_stats_profile(
    work: Path, params: dict[str, Any], sampler: PeakSampler, ctx: RayContext
) -> dict[str, Any]:
    """Where the Ray figure goes: the two map_batches functions on one shard, in this process (no Ray), one
    core, best of two runs after a first call on 100 rows (whose one-off cost, e.g. cached set-up, every Ray
    worker process pays once, is reported apart)."""
    import pyarrow.parquet as pq

    from pipeline.core.config import load_config
    from pipeline.data import stats as stats_mod
    from pipeline.data.prepare import Normalise

    data = load_config(None, []).data
    path = _split_files(work)["train"][0]
    cols = {"text": data.text_column, "labels": data.labels_column, "id": data.id_column, "split": "split"}
    normalise = Normalise(cols, True, "train", False, data.empty_policy)
    t0 = time.perf_counter()
    table = pq.read_table(path, columns=["text", "labels", "id"])
    read_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    stats_mod.block_partial(normalise(table.slice(0, 100)))
    first_call_s = time.perf_counter() - t1
    norm_s = part_s = float("inf")
    for _ in range(2):
        t2 = time.perf_counter()
        norm = normalise(table)
        t3 = time.perf_counter()
        stats_mod.block_partial(norm)
        t4 = time.perf_counter()
        norm_s, part_s = min(norm_s, t3 - t2), min(part_s, t4 - t3)
    n = table.num_rows
    rates = {"read_parquet": n / read_s, "normalise": n / norm_s, "block_partial": n / part_s}
    one_core = 1.0 / sum(1.0 / r for r in rates.values())
    return {
        "shard_rows": n,
        "rows_per_s_one_core": {k: round(v, 1) for k, v in rates.items()},
        "all_three_rows_per_s_one_core": round(one_core, 1),
        "ideal_ray_rows_per_s_two_cores": round(2 * one_core, 1),
        "first_call_s": round(first_call_s, 3),
        "note": "the functions' own one-core rate times the 2 CPUs bounds what Ray Data can reach here "
        "before scheduling, serialisation and object-store costs; the gap between this bound and the "
        "measured Ray rate is Ray's overhead",
    }


def _compare_counts(work: Path) -> dict[str, Any]:
    a = json.loads((work / "stats_ray_counts.json").read_text())
    b = json.loads((work / "stats_polars_counts.json").read_text())
    checks: dict[str, bool] = {}
    for split in ("train", "validation", "test"):
        for key in ("docs", "cardinality_sum", "label_counts"):
            checks[f"{split}.{key}"] = a[split][key] == b[split][key]
    return {
        "identical": all(checks.values()),
        "checks": checks,
        "docs": {s: a[s]["docs"] for s in ("train", "validation", "test")},
        "distinct_labels": {s: len(a[s]["label_counts"]) for s in ("train", "validation", "test")},
    }


# ------------------------------------------------------------------------------------------------ train


def _train_times_callback(path: str):
    from ray.train import UserCallback

    class ReportTimes(UserCallback):
        """Runs in the Train controller: the wall-clock time of every ray.train.report, with rank 0's
        metrics (the worker's own samples_per_s covers only its training batches)."""

        def after_report(self, run_context, metrics, checkpoint):
            with open(path, "a") as f:
                f.write(json.dumps({"t": time.time(), "metrics": metrics[0]}, default=str) + "\n")

    return ReportTimes()


def _timed_fit(cfg, inputs, loss_params: dict, name: str, times_path: Path) -> tuple[dict[str, Any], dict]:
    """Fit through pipeline.training.train.make_trainer (the train stage's TorchTrainer) and time it."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig

    from pipeline.training.train import make_trainer

    run_config = RunConfig(
        name=name,
        storage_path=inputs.run.path,
        storage_filesystem=inputs.run.fs,
        failure_config=FailureConfig(max_failures=0),
        checkpoint_config=CheckpointConfig(num_to_keep=1),
        callbacks=[_train_times_callback(str(times_path))],
    )
    trainer = make_trainer(
        cfg, inputs, run_config, loss_params, {"local_dir": None, "resume_from": None, "fingerprint": name}
    )
    times_path.unlink(missing_ok=True)
    t0 = time.time()
    trainer.fit()
    t1 = time.time()
    reports = [json.loads(line) for line in times_path.read_text().splitlines() if line.strip()]
    if len(reports) != cfg.train.epochs:
        raise RuntimeError(f"{name}: {len(reports)} epoch reports for {cfg.train.epochs} epochs")
    train_rows = int(trainer.train_loop_config["train_rows"])
    return _fit_summary(reports, t0, t1, train_rows), trainer.train_loop_config


def _fit_summary(reports: list[dict], t0: float, t1: float, train_rows: int) -> dict[str, Any]:
    rates = [float(r["metrics"]["samples_per_s"]) for r in reports]
    train_s = [train_rows / r for r in rates]
    walls = [reports[0]["t"] - t0] + [b["t"] - a["t"] for a, b in zip(reports, reports[1:], strict=False)]
    # Per-epoch work outside the training batches: validation, metrics, checkpoint upload, report. The
    # controller sees reports when it polls the workers, so each timestamp is late by up to a poll interval.
    between = [max(w - s, 0.0) for w, s in zip(walls[1:], train_s[1:], strict=True)]
    per_epoch_other = statistics.median(between) if between else None
    steady = rates[1:] if len(rates) > 1 else rates
    startup = max(walls[0] - train_s[0] - (per_epoch_other or 0.0), 0.0)
    waits = [float(r["metrics"]["input_wait_fraction"]) for r in reports]
    return {
        "epochs": len(rates),
        "train_rows": train_rows,
        "samples_per_s_per_epoch": [round(r, 1) for r in rates],
        # The loop's own measure: share of each epoch rank 0 spent waiting for Ray Data's next batch.
        "input_wait_fraction_per_epoch": [round(w, 4) for w in waits],
        "steady_samples_per_s": round(_harmonic(steady), 1),
        "steady_epochs": "epochs 2.." if len(rates) > 1 else "epoch 1 only (one epoch: includes warm-up)",
        "first_epoch_samples_per_s": round(rates[0], 1),
        "startup_s": round(startup, 2),
        "startup_what": "fit() to the first epoch's report, less its training batches and the per-epoch "
        "validation/report time: controller, placement group, worker process start, torch import, model "
        "build, dataset shard set-up (report times are the Train controller's, late by up to one poll)",
        "per_epoch_validation_checkpoint_s": None if per_epoch_other is None else round(per_epoch_other, 2),
        "teardown_s": round(t1 - reports[-1]["t"], 2),
        "fit_wall_s": round(t1 - t0, 2),
        "end_to_end_samples_per_s": round(len(rates) * train_rows / (t1 - t0), 1),
    }


def _probe_threads(cpus: float, work: Path | None = None) -> dict[str, Any]:
    """torch's thread count and the niceness of a Ray worker holding `cpus` CPUs (what the Train worker
    actor sees). With `work`, the niceness is left there for the bare side (`_adopt_ray_niceness`)."""
    import ray

    @ray.remote(num_cpus=cpus)
    def probe() -> dict[str, Any]:
        import torch

        return {
            "torch_threads": torch.get_num_threads(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "niceness": os.nice(0),
        }

    found = ray.get(probe.remote())
    if work is not None:
        (work / NICENESS_FILE).write_text(str(found["niceness"]))
    return found


def _adopt_niceness(target: int) -> int:
    """Move this process to `target` niceness (raising it needs no privilege); returns the niceness now."""
    return os.nice(target - os.nice(0)) if target > os.nice(0) else os.nice(0)


def _adopt_ray_niceness(work: Path) -> int:
    """Ray runs its workers at niceness 15 (`RAY_worker_niceness`; drivers and Ray's daemons stay at 0).
    A bare side at 0 would win every contended time slice on a busy 2-CPU machine, so it takes the niceness
    its Ray side's workers had (Ray's default when that side has not run in this work folder)."""
    saved = work / NICENESS_FILE
    return _adopt_niceness(int(saved.read_text()) if saved.exists() else RAY_DEFAULT_WORKER_NICENESS)


def _train_inputs(work: Path, params: dict[str, Any], ctx: RayContext) -> tuple[Any, dict[str, float]]:
    """The prepared training corpus and pipeline.training.train.build_inputs (tokenizer, mu, tokenised and
    materialised splits), once per Ray start."""
    from pipeline.training.train import build_inputs

    if "inputs" in ctx.cache:
        return ctx.cache["inputs"], {}
    t0 = time.perf_counter()
    _ensure_prepared(work, params)
    t1 = time.perf_counter()
    inputs = build_inputs(_load_cfg(work, params))
    t2 = time.perf_counter()
    ctx.cache["inputs"] = inputs
    return inputs, {"prepare_s": round(t1 - t0, 2), "build_inputs_s": round(t2 - t1, 2)}


def phase_train_ray(
    work: Path, params: dict[str, Any], sampler: PeakSampler, ctx: RayContext
) -> dict[str, Any]:
    import numpy as np
    import torch

    from pipeline.training.train import resolved_loss_params

    _pickle_by_value()
    info = ctx.ensure("local", "train_ray")
    extra = CLUSTER_TRAIN if ctx.kind == "cluster" else []
    sampler.reset()
    inputs, setup = _train_inputs(work, params, ctx)
    cfg = _load_cfg(work, params, extra)
    loss_params = resolved_loss_params(cfg.loss.name, cfg.loss.params, inputs)
    threads = _probe_threads(cfg.train.cpus_per_worker, work)
    # A name of its own per child: Train V2 restores a run of the same name and storage path, so a repeat
    # would resume the previous repeat's finished run instead of training.
    tag = f"bench-1w-{os.getpid()}"
    summary, loop_config = _timed_fit(cfg, inputs, loss_params, tag, work / f"{tag}.jsonl")
    memory = sampler.window()
    if ctx.kind == "cluster":  # the same fit as the scaling section's 1-worker run: reuse it there
        ctx.cache["scale_1w"] = {**summary, "reused_from": "train (same cluster and settings)"}
    # The bare loop gets the very same tensors (the materialised, tokenised train split) and loop config.
    cols: dict[str, list] = {}
    for batch in inputs.datasets["train"].iter_batches(batch_size=4096, batch_format="numpy"):
        for k, v in batch.items():
            cols.setdefault(k, []).append(v)
    np.savez(work / "train_tensors.npz", **{k: np.concatenate(v) for k, v in cols.items()})
    torch.save(dict(loop_config), work / "train_loop_config.pt")
    return {
        **summary,
        "workers": 1,
        "cpus_per_worker": cfg.train.cpus_per_worker,
        "batch_size": cfg.train.batch_size,
        "worker_threads": threads,
        **info,
        **setup,
        "setup_what": "prepare_s: run_prepare of the synthetic corpus; build_inputs_s: label stats, "
        "WordPiece tokenizer, mu, tokenisation in Ray Data, materialise (neither is in the rates)",
        "peak_memory": memory,
    }


def phase_train_bare(
    work: Path, params: dict[str, Any], sampler: PeakSampler, ctx: RayContext
) -> dict[str, Any]:
    """The worker loop of pipeline.training.train without Ray: same config dict, same tensors, same step."""
    import numpy as np
    import torch

    from pipeline.modeling.losses import build_loss
    from pipeline.modeling.model import build_model
    from pipeline.training.train import param_groups, warmup_then_linear

    threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    torch.set_num_threads(threads)
    niceness = _adopt_ray_niceness(work)
    t0 = time.perf_counter()
    config = torch.load(work / "train_loop_config.pt", weights_only=False)
    data = np.load(work / "train_tensors.npz")
    tensors = {k: torch.from_numpy(data[k]) for k in data.files}
    num_labels = len(config["labels"])
    # Padded label indices (the current loop): the multi-hot targets are built per batch, as the loop does.
    if "label_idx" in tensors:
        from pipeline.data.labels import dense_targets

        def targets(t: torch.Tensor) -> torch.Tensor:
            return dense_targets(t, num_labels)

        target_key = "label_idx"
    else:
        target_key = "targets"

        def targets(t: torch.Tensor) -> torch.Tensor:
            return t

    tcfg = config["train"]
    torch.manual_seed(int(config["seed"]))
    model = build_model(config["model"], len(config["labels"]), config["tokenizer"])
    if config["init_bias"]:
        model.init_head_bias(np.asarray(config["counts"]) / max(config["num_docs"], 1))
    loss_fn = build_loss(
        config["loss_name"], config["counts"], config["num_docs"], dict(config["loss_params"])
    )
    optimizer = torch.optim.AdamW(
        param_groups(model, tcfg["lr"], tcfg.get("head_lr"), tcfg["weight_decay"]), lr=tcfg["lr"]
    )
    n, bs = len(tensors[target_key]), int(tcfg["batch_size"])
    total_steps = max(math.ceil(n / bs / tcfg["grad_accum"]), 1) * tcfg["epochs"]
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_then_linear(total_steps, int(total_steps * tcfg["warmup_ratio"]))
    )
    startup = time.perf_counter() - t0

    def step_optimizer() -> None:
        if tcfg["grad_clip"]:
            torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg["grad_clip"])
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

    gen = torch.Generator().manual_seed(int(config["seed"]))
    rates = []
    for _ in range(int(tcfg["epochs"])):
        model.train()
        order = torch.randperm(n, generator=gen)
        t_epoch = time.perf_counter()
        rows, loss_sum = 0, 0.0
        optimizer.zero_grad(set_to_none=True)
        pending = False
        for step, start in enumerate(range(0, n, bs)):
            sel = order[start : start + bs]
            ids, mask = tensors["input_ids"][sel], tensors["attention_mask"][sel]
            y = targets(tensors[target_key][sel])
            logits = model(ids, mask)
            loss = loss_fn(logits.float(), y) / tcfg["grad_accum"]
            loss.backward()
            pending = (step + 1) % tcfg["grad_accum"] != 0
            if not pending:
                step_optimizer()
            loss_sum += float(loss.detach()) * tcfg["grad_accum"] * len(ids)
            rows += len(ids)
        if pending:
            step_optimizer()
        rates.append(rows / (time.perf_counter() - t_epoch))
    steady = rates[1:] if len(rates) > 1 else rates
    return {
        "epochs": len(rates),
        "train_rows": n,
        "samples_per_s_per_epoch": [round(r, 1) for r in rates],
        "steady_samples_per_s": round(_harmonic(steady), 1),
        "first_epoch_samples_per_s": round(rates[0], 1),
        "startup_s": round(startup, 2),
        "startup_what": "load config and tensors, build the model, loss, optimiser",
        "torch_threads": torch.get_num_threads(),
        "niceness": niceness,
        "final_train_loss": round(loss_sum / max(rows, 1), 4),
        "peak_memory": sampler.window(),
    }


# ------------------------------------------------------------------------------------------------ score


def phase_score_setup(
    work: Path, params: dict[str, Any], sampler: PeakSampler, ctx: RayContext
) -> dict[str, Any]:
    """A saved tiny-bert model (configs/demo.yaml's model, random weights: throughput does not depend on
    them) and `score_docs` synthetic documents in 8 Parquet shards (columns id, text, as predict reads)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from pipeline.core.config import SyntheticSection
    from pipeline.data.synthetic import generate
    from pipeline.modeling.model import ModelConfig, build_model, save_model, train_wordpiece_tokenizer

    cfg = _load_cfg(work, params)
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
    return [op for op in _ray_data_operator_metrics(0.0) or [] if op["operator"] == "MapBatches(Scorer)"]


def _ray_score_pass(folder: Path, model: Path, ecfg: Any) -> dict[str, Any]:
    """One Ray Data scoring run as evaluate/predict do it: read_parquet -> score_dataset (a Scorer actor
    pool) -> consumed on the driver. Its wall time includes the actor's start and model load; the Scorer
    operator's own metrics (Ray Data logs them when the run ends) time the actor's work alone."""
    import numpy as np
    import ray.data

    from pipeline.evaluation.scoring import score_dataset

    known = len(_scorer_operator_metrics())
    t0 = time.perf_counter()
    scored = score_dataset(
        ray.data.read_parquet(str(folder)),
        str(model),
        concurrency=ecfg.concurrency,
        num_cpus=ecfg.cpus_per_actor,
        batch_size=ecfg.batch_size,
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
    work: Path, params: dict[str, Any], sampler: PeakSampler, ctx: RayContext
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
        "worker_threads": _probe_threads(ecfg.cpus_per_actor, work),
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
    work: Path, params: dict[str, Any], sampler: PeakSampler, ctx: RayContext
) -> dict[str, Any]:
    """`load_model(...).predict_scores` over the same documents in batches of evaluate.batch_size."""
    import numpy as np
    import pyarrow.parquet as pq
    import torch

    from pipeline.core.config import load_config
    from pipeline.modeling.model import load_model

    threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    torch.set_num_threads(threads)
    niceness = _adopt_ray_niceness(work)
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


# ------------------------------------------------------------------------------------------------ scale


def phase_scale(work: Path, params: dict[str, Any], sampler: PeakSampler, ctx: RayContext) -> dict[str, Any]:
    from pipeline.modeling.model import build_model
    from pipeline.training.train import resolved_loss_params

    _pickle_by_value()
    results: dict[str, Any] = ctx.ensure("cluster", "scale")
    import ray

    results["nodes_cpus"] = [n["Resources"].get("CPU") for n in ray.nodes() if n.get("Alive")]
    p = {**params, "epochs": params["scale_epochs"]}
    inputs, setup = _train_inputs(work, p, ctx)
    results.update(setup)
    model = build_model(inputs.model_cfg, len(inputs.labels), inputs.tokenizer)
    results["model_parameters"] = sum(t.numel() for t in model.parameters())
    results["batch_size_per_worker"] = _load_cfg(work, p).train.batch_size
    results["settings"] = CLUSTER_TRAIN
    for workers in (1, 2):
        if workers == 1 and "scale_1w" in ctx.cache and params["epochs"] == params["scale_epochs"]:
            results["workers_1"] = ctx.cache["scale_1w"]
            continue
        cfg = _load_cfg(work, p, [*CLUSTER_TRAIN, f"train.num_workers={workers}"])
        loss_params = resolved_loss_params(cfg.loss.name, cfg.loss.params, inputs)
        sampler.reset()
        summary, _ = _timed_fit(
            cfg, inputs, loss_params, f"scale-{workers}w", work / f"scale_{workers}w.jsonl"
        )
        results[f"workers_{workers}"] = {**summary, "peak_memory": sampler.window()}
    results["worker_threads"] = _probe_threads(0.5)
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


def _scale_model(res: dict[str, Any], batch_size: int, params_count: int | None) -> dict[str, Any]:
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


# ------------------------------------------------------------------------------------------------ driver

PHASE_FUNCS: dict[str, Callable[[Path, dict[str, Any], PeakSampler], dict[str, Any]]] = {
    "stats_gen": phase_stats_gen,
    "stats_polars": phase_stats_polars,
    "stats_profile": phase_stats_profile,
    "stats_ray": phase_stats_ray,
    "train_ray": phase_train_ray,
    "train_bare": phase_train_bare,
    "score_setup": phase_score_setup,
    "score_ray": phase_score_ray,
    "score_bare": phase_score_bare,
    "scale": phase_scale,
}


def run_phases(names: list[str], work: Path) -> None:
    """Child process: run the phases in order, one JSON result file each. Ray starts when a phase first
    needs it and stops before a phase that does not (the bare baselines run with no Ray up)."""
    params = json.loads((work / "params.json").read_text())
    kinds = {name: kind for name, _, kind in PHASES}
    sampler = PeakSampler()
    ctx = RayContext(smoke=bool(params.get("smoke")))
    done: list[str] = []
    try:
        for name in names:
            base = name.split(REPEAT_SEP)[0]
            if kinds[base] is None:
                ctx.stop()
            sampler.reset()
            t0 = time.perf_counter()
            print(f"[throughput] phase {name} ...", file=sys.stderr, flush=True)
            result = PHASE_FUNCS[base](work, params, sampler, ctx)
            result["phase_wall_s"] = round(time.perf_counter() - t0, 2)
            if "peak_memory" in result:
                result["peak_memory"]["shared_process_with"] = list(done)
            (work / "results").mkdir(exist_ok=True)
            (work / "results" / f"{name}.json").write_text(json.dumps(result, indent=2))
            print(f"[throughput] phase {name} done in {result['phase_wall_s']}s", file=sys.stderr, flush=True)
            done.append(name)
    finally:
        ctx.stop()
        sampler.stop()


#: Sections whose Ray and bare sides run as interleaved pairs of child processes, `repeats` times.
PAIRED = ("train", "score")
REPEAT_SEP = "@"


def _groups(phases: list[tuple[str, str, str | None]], smoke: bool, repeats: int) -> list[list[str]]:
    """One child process per phase (its ru_maxrss is that phase's peak); with --smoke, one child for all.

    The Ray and bare sides of train and score alternate (ray@0, bare@0, ray@1, bare@1, ...): this machine's
    speed drifts by 10-20% over minutes (the same scoring work took 15.9 to 20.8 s in one run), and sides
    measured minutes apart would carry that drift into their ratio."""
    names = [name for name, _, _ in phases]
    if smoke:
        return [names] if names else []
    groups: list[list[str]] = []
    for name, section, _ in phases:
        if section not in PAIRED:
            groups.append([name])
        elif name.endswith("_ray"):
            bare = name.removesuffix("_ray") + "_bare"
            for i in range(repeats):
                groups += [[f"{name}{REPEAT_SEP}{i}"], [f"{bare}{REPEAT_SEP}{i}"]]
        elif not name.endswith("_bare"):  # set-up phases (score_setup)
            groups.append([name])
    return groups


def _die_with_parent() -> None:
    """preexec_fn (Linux): SIGKILL this child when the benchmark's process dies, e.g. killed by a timeout."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _run_child(names: list[str], work: Path, threads: int, timeout: float) -> None:
    env = dict(os.environ)
    env.update(
        {
            "OMP_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads),
            # Hugging Face's Rust tokenizer would otherwise use every core in both sides' tokenisation.
            "TOKENIZERS_PARALLELISM": "false",
            "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        }
    )
    cmd = [sys.executable, "-m", "benchmarks.throughput", "--phase", ",".join(names), "--work", str(work)]
    # A session of its own: on a timeout or an interrupt the whole group (Ray's daemons included) is ours to
    # kill; and the child dies with this process (Ray's daemons die with the child).
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True, preexec_fn=_die_with_parent)
    try:
        rc = proc.wait(timeout=timeout)
    except BaseException as err:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if isinstance(err, subprocess.TimeoutExpired):
            raise RuntimeError(f"phases {names} did not finish within {timeout:.0f}s") from None
        raise
    if rc != 0:
        raise RuntimeError(f"phases {names} failed (exit {rc}); see the output above")


def _versions() -> dict[str, str]:
    import numpy
    import polars
    import pyarrow
    import ray
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "ray": ray.__version__,
        "torch": torch.__version__,
        "polars": polars.__version__,
        "pyarrow": pyarrow.__version__,
        "numpy": numpy.__version__,
        "transformers": transformers.__version__,
    }


def _machine() -> dict[str, Any]:
    return {
        "summary": machine_summary(),
        "cpus": os.cpu_count(),
        "memory_gib": round(memory_gib(), 1),
        "platform": platform.platform(),
    }


def _median_run(runs: list[dict[str, Any]], rate: str) -> dict[str, Any]:
    """The run with the median rate (the lower median for an even count), plus every run's rate."""
    ordered = sorted(runs, key=lambda r: r[rate])
    return {**ordered[(len(ordered) - 1) // 2], "runs": [r[rate] for r in runs]}


def _ratio(ray_rate: float, base_rate: float) -> float | None:
    return round(ray_rate / base_rate, 3) if base_rate > 0 else None


def _assemble(work: Path, selected: list[str], params: dict[str, Any]) -> dict[str, Any]:
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
            "counts": _compare_counts(work),
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
        scale["model"] = _scale_model(scale, scale["batch_size_per_worker"], scale["model_parameters"])
        out["scale"] = scale
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=None, help="rows of the label-statistics corpus")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated: " + ",".join(SECTIONS))
    parser.add_argument(
        "--out", default=None, help=f"default {DEFAULT_OUT.relative_to(ROOT)} (--smoke: temp)"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, about a minute")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on both sides (default 1)")
    parser.add_argument("--train-docs", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--score-docs", type=int, default=None)
    parser.add_argument(
        "--repeats", type=int, default=None, help="interleaved runs of each side of train and score"
    )
    parser.add_argument("--phase-timeout", type=float, default=1800)
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        run_phases(args.phase.split(","), Path(args.work))
        return

    selected = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(selected) - set(SECTIONS))
    if unknown or not selected:
        parser.error(f"--only: unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")
    if args.smoke and args.repeats is not None:
        parser.error("--repeats applies to full runs; --smoke runs every phase once, in one process")
    if args.repeats is not None and args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    params: dict[str, Any] = dict(SMOKE if args.smoke else FULL)
    for key in ("rows", "train_docs", "epochs", "score_docs", "repeats"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    if args.epochs is not None:
        params["scale_epochs"] = args.epochs
    params["smoke"] = args.smoke
    if args.out:
        out_path = Path(args.out)
    elif args.smoke:
        out_path = Path(tempfile.gettempdir()) / f"throughput-smoke-{os.getpid()}.json"
    else:
        out_path = DEFAULT_OUT
    phases = [p for p in PHASES if p[1] in selected]
    command = "python -m benchmarks.throughput" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="bml-throughput-"))
    try:
        (work / "params.json").write_text(json.dumps(params))
        for names in _groups(phases, args.smoke, params["repeats"]):
            _run_child(names, work, args.threads, args.phase_timeout)
        sections = _assemble(work, selected, params)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    doc = {
        "command": command,
        "mode": "smoke" if args.smoke else "full",
        "machine": _machine(),
        "versions": _versions(),
        "sizes": params,
        "environment": {
            "torch_threads_both_sides": args.threads,
            "OMP_NUM_THREADS": str(args.threads),
            "TOKENIZERS_PARALLELISM": "false",
            "ray_cluster": "--smoke: one two-node Cluster (2 x 1 CPU) for every Ray phase"
            if args.smoke
            else "a fresh local Ray (2 CPUs, dashboard on) per Ray phase of stats, train and score; a "
            "two-node Cluster (2 x 1 CPU) for scale",
        },
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "seconds_total": round(time.perf_counter() - t0, 1),
        "memory_note": "driver_ru_maxrss_mib is the measuring process's own peak (each side runs in a child "
        "process of its own unless shared_process_with lists earlier phases); Ray's workers are separate "
        "processes: process_tree_rss_peak_sum_mib adds every process the child started (raylet, GCS, "
        "dashboard, workers; shared object-store pages count once per process mapping them) and "
        "ray_worker_rss_peak_max_mib is the largest single Ray worker",
        **sections,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(_headline(doc), indent=2))
    print(f"wrote {out_path}")


def _headline(doc: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"seconds_total": doc["seconds_total"]}
    if "stats" in doc:
        s = doc["stats"]
        out["stats_rows_per_s"] = {"ray": s["ray_data"]["rows_per_s"], "polars": s["polars"]["rows_per_s"]}
        out["stats_ratio"] = s["ratio_ray_over_polars"]
        out["stats_identical"] = s["counts"]["identical"]
    for key, rate in (("train", "steady_samples_per_s"), ("score", "steady_docs_per_s")):
        if key in doc:
            sides = [v for k, v in doc[key].items() if isinstance(v, dict) and rate in v]
            out[f"{key}_{rate}"] = [side[rate] for side in sides]
            out[f"{key}_ratio"] = doc[key]["ratio_ray_over_bare"]
    if "scale" in doc:
        out["scale_samples_per_s"] = [doc["scale"][f"workers_{w}"]["steady_samples_per_s"] for w in (1, 2)]
    return out


if __name__ == "__main__":
    main()
