"""Label statistics at scale (issue #25, item 1): the prepare stage's statistics pass through Ray Data against
one polars query in one process, at 5M and 50M rows, and on a local cluster of one 1-CPU node against two.

    .venv/bin/python -m benchmarks.label_stats --work-dir /tmp/bml-label-stats       # about 15 minutes
    .venv/bin/python -m benchmarks.label_stats --rows 200000 --repeats 1 --out /tmp/ls.json   # a smoke run

The corpus is generated on the fly (Zipf label sets over 1,000 labels, 250,000 rows a shard, split folders
70/15/15%; `benchmarks.throughput.stats.phase_stats_gen`) and never committed. Ray's figure is
`prepare.read_normalised` (read, canonical columns, row keys, duplicate-group keys, row issues) streamed into
`prepare._collect_partials` (per-block partial counts merged once on the driver): what the prepare stage
runs before it splits and writes. Polars runs the same row semantics (labels de-duplicated, empty names and
rows without text or labels dropped) and counts; it computes no row or duplicate keys. Both give identical
counts (checked every run). Each configuration runs one untimed pass first (Ray: worker start-up and imports;
polars: file cache), then `--repeats` timed passes; the median is the figure.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common.measure import MIB, PeakRSS
from benchmarks.common.paths import RESULTS
from benchmarks.common.provenance import run_header, utc_now
from benchmarks.common.results import write_json

OUT = RESULTS / "label_stats.json"
ROWS = (5_000_000, 50_000_000)
SHARD_ROWS = 250_000
LABELS = 1000
TARGETS = {"ray_over_polars_at_largest": 0.5, "two_nodes_over_one": 1.6}


class _Sampler(PeakRSS):
    """PeakRSS as the throughput phases want it (a `window` of MiB peaks since the last reset)."""

    def window(self) -> dict[str, float | None]:
        self.sample()
        with self._lock:
            return {
                "driver_rss_peak_mib": round(self.driver / MIB, 1),
                "process_tree_rss_peak_sum_mib": round(self.tree / MIB, 1),
                "ray_worker_rss_peak_max_mib": round(self.worker / MIB, 1) if self.worker else None,
            }


def _ray_pass(data: Path) -> tuple[float, Any]:
    from pipeline.core.config import load_config
    from pipeline.data.prepare import _collect_partials, read_normalised
    from pipeline.data.sources import discover

    cfg = load_config(None, [])
    spec = discover(str(data), cfg.data)
    t0 = time.perf_counter()
    total = _collect_partials(read_normalised(spec, cfg))
    return time.perf_counter() - t0, total


def _start(kind: str, nodes: int, temp_dir: str) -> Any:
    """A Ray of `kind` ('local': ray.init with 2 CPUs; 'cluster': ray.cluster_utils.Cluster of `nodes` nodes
    of 1 CPU each); returns the Cluster or None."""
    import ray
    import ray.data

    from pipeline.core.cluster import head_node_args, start_local_ray

    cluster = None
    if kind == "local":
        start_local_ray(2, include_dashboard=False, log_to_driver=False, temp_dir=temp_dir)
    else:
        from ray.cluster_utils import Cluster

        head = head_node_args(1, temp_dir, include_dashboard=False)
        cluster = Cluster(initialize_head=True, head_node_args=head)
        for _ in range(nodes - 1):
            cluster.add_node(num_cpus=1, env_vars=head["env_vars"])
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    return cluster


def _stop(cluster: Any, temp_dir: str) -> None:
    import ray

    ray.shutdown()
    if cluster is not None:
        cluster.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)


def measure_ray(work: Path, rows: int, kind: str, nodes: int, repeats: int, sampler: _Sampler) -> dict:
    """One Ray configuration: start, an untimed first pass, `repeats` timed passes, stop."""
    import ray

    from benchmarks.throughput.stats import _counts_from_partial

    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    t0 = time.perf_counter()
    cluster = _start(kind, nodes, temp_dir)
    start_s = time.perf_counter() - t0
    try:
        cpus = [n["Resources"].get("CPU") for n in ray.nodes() if n.get("Alive")]
        first_s, _ = _ray_pass(work / "stats_data")
        sampler.reset()
        times, total = [], None
        for _ in range(repeats):
            seconds, total = _ray_pass(work / "stats_data")
            times.append(seconds)
        memory = sampler.window()
    finally:
        _stop(cluster, temp_dir)
    (work / "stats_ray_counts.json").write_text(json.dumps(_counts_from_partial(total)))
    median = statistics.median(times)
    return {
        "ray": "local Ray (ray.init), 2 CPUs"
        if kind == "local"
        else f"ray.cluster_utils.Cluster, {nodes} x 1 CPU",
        "node_cpus": cpus,
        "ray_start_s": round(start_s, 2),
        "first_pass_s": round(first_s, 3),
        "seconds_each": [round(t, 3) for t in times],
        "seconds": round(median, 3),
        "rows_per_s": round(rows / median, 1),
        "peak_memory": memory,
    }


def measure_polars(work: Path, rows: int, repeats: int, sampler: _Sampler) -> dict:
    from benchmarks.throughput.stats import phase_stats_polars

    params = {"rows": rows}
    phase_stats_polars(work, params, sampler, None)  # untimed: file cache
    sampler.reset()
    runs = [phase_stats_polars(work, params, sampler, None) for _ in range(repeats)]
    median = statistics.median(r["seconds"] for r in runs)
    return {
        "engine": runs[0]["engine"],
        "threads": runs[0]["threads"],
        "seconds_each": [r["seconds"] for r in runs],
        "seconds": round(median, 3),
        "rows_per_s": round(rows / median, 1),
        "peak_memory": sampler.window(),
    }


def _polars_keys_pass(work: Path) -> float:
    """polars doing the row work of the Ray figure too: `polars_queries` with keys."""
    import polars as pl

    from benchmarks.throughput.stats import polars_queries

    t0 = time.perf_counter()
    pl.collect_all(polars_queries(work, keys=True))
    return time.perf_counter() - t0


def measure_polars_keys(work: Path, rows: int, repeats: int) -> dict:
    _polars_keys_pass(work)  # untimed, as the others
    times = [_polars_keys_pass(work) for _ in range(repeats)]
    median = statistics.median(times)
    return {
        "what": "the same query also hashing each row's id and normalised text (NFC, lower case, "
        "whitespace runs collapsed, trimmed) with polars' own hash, as prepare's row and duplicate keys",
        "seconds_each": [round(t, 3) for t in times],
        "seconds": round(median, 3),
        "rows_per_s": round(rows / median, 1),
    }


def run_size(work: Path, rows: int, repeats: int, cluster_repeats: int, sampler: _Sampler) -> dict:
    from benchmarks.throughput.stats import compare_counts, phase_stats_gen

    shards = max(20, rows // SHARD_ROWS)
    print(f"[label_stats] {rows:,} rows: generating {shards} shards", flush=True)
    gen = phase_stats_gen(work, {"rows": rows, "labels": LABELS, "shards": shards}, None, None)
    print(f"[label_stats] {rows:,} rows: polars", flush=True)
    polars = measure_polars(work, rows, repeats, sampler)
    polars_keys = measure_polars_keys(work, rows, repeats)
    print(f"[label_stats] {rows:,} rows: Ray, local 2 CPUs", flush=True)
    local = measure_ray(work, rows, "local", 1, repeats, sampler)
    counts = compare_counts(work)
    nodes = {}
    for n in (1, 2):
        print(f"[label_stats] {rows:,} rows: Ray, cluster of {n} x 1 CPU", flush=True)
        nodes[f"nodes_{n}"] = measure_ray(work, rows, "cluster", n, cluster_repeats, sampler)
        nodes[f"nodes_{n}"]["counts_identical_to_polars"] = compare_counts(work)["identical"]
    shutil.rmtree(work / "stats_data", ignore_errors=True)
    return {
        "rows": rows,
        "labels": LABELS,
        "data": gen,
        "polars": polars,
        "ray_local": local,
        "ratio": round(polars["seconds"] / local["seconds"], 3),
        "polars_same_row_work": {
            **polars_keys,
            "ratio": round(polars_keys["seconds"] / local["seconds"], 3),
        },
        "counts_identical": counts["identical"],
        "cluster": {
            **nodes,
            "ratio": round(nodes["nodes_1"]["seconds"] / nodes["nodes_2"]["seconds"], 3),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", type=Path, default=None, help="scratch folder (default: a temp folder)")
    parser.add_argument("--rows", type=int, nargs="+", default=list(ROWS))
    parser.add_argument("--repeats", type=int, default=3, help="timed passes of polars and local Ray")
    parser.add_argument("--cluster-repeats", type=int, default=2, help="timed passes on each cluster")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bml-label-stats-"))
    work.mkdir(parents=True, exist_ok=True)
    header = run_header("benchmarks.label_stats", argv, ["ray", "polars", "pyarrow", "numpy"])
    sampler = _Sampler(interval=0.25).start()
    runs = [run_size(work, rows, args.repeats, args.cluster_repeats, sampler) for rows in args.rows]
    largest = max(runs, key=lambda r: r["rows"])
    doc = {
        **header,
        "finished": utc_now(),
        "what": __doc__.split("\n\n", 2)[2].strip(),
        "runs": runs,
        "targets": {
            "ray_over_polars_at_largest": {
                "rows": largest["rows"],
                "ratio": largest["ratio"],
                "target": TARGETS["ray_over_polars_at_largest"],
                "met": largest["ratio"] >= TARGETS["ray_over_polars_at_largest"],
            },
            "two_nodes_over_one": {
                "rows": largest["rows"],
                "ratio": largest["cluster"]["ratio"],
                "target": TARGETS["two_nodes_over_one"],
                "met": largest["cluster"]["ratio"] >= TARGETS["two_nodes_over_one"],
            },
        },
    }
    write_json(args.out, doc)
    print(json.dumps(doc["targets"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
