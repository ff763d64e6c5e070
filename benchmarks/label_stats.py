"""Label statistics at scale (issue #25, item 1): the profile stage's counting pass, and the prepare stage's
statistics pass, through Ray Data against one polars query in one process, at 5M and 50M rows, and on a
local cluster of one 1-CPU node against two.

    .venv/bin/python -m benchmarks.label_stats --work-dir /tmp/bml-label-stats       # about 20 minutes
    .venv/bin/python -m benchmarks.label_stats --rows 200000 --repeats 1 --out /tmp/ls.json   # a smoke run

The corpus is generated on the fly (Zipf label sets over 1,000 labels, 250,000 rows a shard, split folders
70/15/15%; `benchmarks.throughput.stats.phase_stats_gen`) and never committed. Two Ray passes, each ending in
per-block partial counts merged once on the driver: the profile stage's (`prepare.count_rows`: text and labels
read, labels cleaned, rows checked and counted in one map function, `CountRows`, with files grouped into about
1M rows per task; also documents per label count and text lengths), and the prepare stage's
(`prepare.read_normalised` streamed into `prepare.collect_partials`: ids read too, row keys and
duplicate-group keys hashed, one task per file: what prepare runs before it splits and writes). Polars runs
the same row semantics (labels de-duplicated, empty names and rows without text or labels dropped) and counts;
it computes no keys, lengths or label-count histogram. All give identical counts (checked every run). Each
configuration runs one untimed pass of each kind first (Ray: worker start-up and imports; polars: file cache),
then `--repeats` timed passes (Ray: profile and prepare alternating, the first of each pair alternating too);
the median is the figure. Co-occurring pairs (a second pass in both stages) are in no figure.
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


PASSES = ("profile", "prepare")


def _ray_pass(data: Path, kind: str) -> tuple[float, Any]:
    """One statistics pass: `profile` (no keys) or `prepare` (row and duplicate-group keys)."""
    from pipeline.core.config import load_config
    from pipeline.data.prepare import collect_partials, count_rows, read_normalised
    from pipeline.data.sources import discover

    cfg = load_config(None, [])
    spec = discover(str(data), cfg.data)
    t0 = time.perf_counter()
    total = count_rows(spec, cfg) if kind == "profile" else collect_partials(read_normalised(spec, cfg))
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


#: Process roles by command line, in order of precedence (the driver is this process).
ROLES = (
    ("gcs_server", "gcs_server"),
    ("raylet", "raylets"),
    ("default_worker", "workers"),
    ("ray::", "workers"),
)


def cpu_by_process() -> dict[int, tuple[str, float]]:
    """{pid: (role, user + system CPU seconds)} of this process and every process it started (Ray's GCS,
    raylets and workers are its descendants, so another Ray on the machine is never counted)."""
    import psutil

    me = psutil.Process()
    out: dict[int, tuple[str, float]] = {}
    for proc in [me, *me.children(recursive=True)]:
        try:
            cmd = " ".join(proc.cmdline())
            t = proc.cpu_times()
        except psutil.Error:
            continue
        role = "driver" if proc.pid == me.pid else next((r for k, r in ROLES if k in cmd), "other")
        out[proc.pid] = (role, t.user + t.system)
    return out


def cpu_delta(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds spent between two `cpu_by_process` snapshots, summed by role."""
    by: dict[str, float] = {}
    for pid, (role, cpu) in after.items():
        by[role] = by.get(role, 0.0) + cpu - before.get(pid, (role, 0.0))[1]
    return by


def measure_ray(work: Path, rows: int, kind: str, nodes: int, repeats: int, sampler: _Sampler) -> dict:
    """One Ray configuration: start, an untimed first pass of each kind, `repeats` timed pairs, stop. Returns
    {pass kind: figures}; each kind's counts are compared with polars'."""
    import ray

    from benchmarks.throughput.stats import _counts_from_partial, compare_counts

    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    t0 = time.perf_counter()
    cluster = _start(kind, nodes, temp_dir)
    start_s = time.perf_counter() - t0
    first: dict[str, float] = {}
    times: dict[str, list[float]] = {p: [] for p in PASSES}
    totals: dict[str, Any] = {}
    cpu: dict[str, dict[str, float]] = {p: {} for p in PASSES}
    try:
        cpus = [n["Resources"].get("CPU") for n in ray.nodes() if n.get("Alive")]
        for p in PASSES:
            first[p], _ = _ray_pass(work / "stats_data", p)
        sampler.reset()
        for i in range(repeats):
            for p in PASSES if i % 2 == 0 else PASSES[::-1]:
                before = cpu_by_process()
                seconds, totals[p] = _ray_pass(work / "stats_data", p)
                times[p].append(seconds)
                for role, c in cpu_delta(before, cpu_by_process()).items():
                    cpu[p][role] = cpu[p].get(role, 0.0) + c / repeats
        memory = sampler.window()
    finally:
        _stop(cluster, temp_dir)
    out = {}
    for p in PASSES:
        (work / "stats_ray_counts.json").write_text(json.dumps(_counts_from_partial(totals[p])))
        median = statistics.median(times[p])
        out[p] = {
            "ray": "local Ray (ray.init), 2 CPUs"
            if kind == "local"
            else f"ray.cluster_utils.Cluster, {nodes} x 1 CPU",
            "node_cpus": cpus,
            "ray_start_s": round(start_s, 2),
            "first_pass_s": round(first[p], 3),
            "seconds_each": [round(t, 3) for t in times[p]],
            "seconds": round(median, 3),
            "rows_per_s": round(rows / median, 1),
            "peak_memory_both_passes": memory,
            # Mean CPU seconds of one timed pass, by process role.
            "cpu_s_per_pass": {role: round(c, 2) for role, c in sorted(cpu[p].items())},
            "counts_identical_to_polars": compare_counts(work)["identical"],
        }
    return out


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
    from benchmarks.throughput.stats import phase_stats_gen

    shards = max(20, rows // SHARD_ROWS)
    print(f"[label_stats] {rows:,} rows: generating {shards} shards", flush=True)
    gen = phase_stats_gen(work, {"rows": rows, "labels": LABELS, "shards": shards}, None, None)
    print(f"[label_stats] {rows:,} rows: polars", flush=True)
    polars = measure_polars(work, rows, repeats, sampler)
    polars_keys = measure_polars_keys(work, rows, repeats)
    print(f"[label_stats] {rows:,} rows: Ray, local 2 CPUs", flush=True)
    local = measure_ray(work, rows, "local", 1, repeats, sampler)
    nodes = {}
    for n in (1, 2):
        print(f"[label_stats] {rows:,} rows: Ray, cluster of {n} x 1 CPU", flush=True)
        nodes[n] = measure_ray(work, rows, "cluster", n, cluster_repeats, sampler)
    shutil.rmtree(work / "stats_data", ignore_errors=True)
    out: dict[str, Any] = {"rows": rows, "labels": LABELS, "data": gen, "polars": polars}
    for p in PASSES:
        against = polars if p == "profile" else polars_keys
        out[p] = {
            "ray_local": local[p],
            "ratio": round(polars["seconds"] / local[p]["seconds"], 3),
            "counts_identical": all(r[p]["counts_identical_to_polars"] for r in (local, nodes[1], nodes[2])),
            "cluster": {
                "nodes_1": nodes[1][p],
                "nodes_2": nodes[2][p],
                "ratio": round(nodes[1][p]["seconds"] / nodes[2][p]["seconds"], 3),
            },
        }
        if p == "prepare":
            out[p]["polars_same_row_work"] = {
                **against,
                "ratio": round(against["seconds"] / local[p]["seconds"], 3),
            }
    return out


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
        # Measured on the profile stage's pass: label statistics alone. The prepare pass is reported beside.
        "targets": {
            "ray_over_polars_at_largest": {
                "pass": "profile",
                "rows": largest["rows"],
                "ratio": largest["profile"]["ratio"],
                "target": TARGETS["ray_over_polars_at_largest"],
                "met": largest["profile"]["ratio"] >= TARGETS["ray_over_polars_at_largest"],
            },
            "two_nodes_over_one": {
                "pass": "profile",
                "rows": largest["rows"],
                "ratio": largest["profile"]["cluster"]["ratio"],
                "target": TARGETS["two_nodes_over_one"],
                "met": largest["profile"]["cluster"]["ratio"] >= TARGETS["two_nodes_over_one"],
            },
        },
    }
    write_json(args.out, doc)
    print(json.dumps(doc["targets"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
