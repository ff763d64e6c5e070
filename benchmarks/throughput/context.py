"""What every phase of the throughput benchmark is handed: the child process's Ray, its memory sampler, the
benchmark's training config and Ray Data's own per-operator metrics."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common.measure import MIB, PeakRSS, StepPeaks
from benchmarks.common.paths import DEMO_CONFIG

#: Train settings on the two-node cluster (as tests/test_train.py's DDP test): half a CPU per worker, so two
#: workers and Ray Data fit on 2 CPUs; SPREAD puts the two workers on different nodes.
CLUSTER_TRAIN = ["train.cpus_per_worker=0.5", "train.data_cpus=0.5", "train.placement_strategy=SPREAD"]


class PhaseSampler(PeakRSS):
    """The child's memory sampler, started once and reset per phase (one window each).

    The child's own peak per phase is the kernel's (`StepPeaks`: VmHWM, reset at each phase). A bare phase
    (`reset(quiet=True)`: no Ray, so no other process to sample) pauses the sampling thread: sampling the
    process tree every 0.25 s cost the bare scoring loop 3-4% of its rate (measured: 2,200-2,236 docs/s
    with the thread, 2,250-2,343 without), a cost its Ray side, sampled from another process, did not pay."""

    def __init__(self) -> None:
        self.steps = StepPeaks()  # before PeakRSS.__init__, which resets
        super().__init__(interval=0.25)
        self.start()

    def reset(self, quiet: bool = False) -> None:
        super().reset()
        self.steps.start()
        (self.paused.set if quiet else self.paused.clear)()

    def window(self) -> dict[str, float | None]:
        """The peaks since the last reset, in MiB: the child's exact one and the sampled ones (a quiet
        window: the tree is the child alone)."""
        quiet = self.paused.is_set()
        if not quiet:
            self.sample()
        own = self.steps.stop()
        with self._lock:
            return {
                "driver_peak_mib": round(own, 1),
                "driver_peak_exact": self.steps.resettable,
                "driver_rss_peak_sampled_mib": None if quiet else round(self.driver / MIB, 1),
                "process_tree_rss_peak_sum_mib": round(own if quiet else self.tree / MIB, 1),
                "ray_worker_rss_peak_max_mib": round(self.worker / MIB, 1) if self.worker else None,
            }


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


#: A phase: (work folder, sizes, sampler, Ray context) -> its JSON result.
Phase = Callable[[Path, dict[str, Any], PhaseSampler, RayContext], dict[str, Any]]


def pickle_by_value() -> None:
    """Ray workers may not import `benchmarks` (it is not an installed package): ship its code by value."""
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules["benchmarks.throughput"])


def load_cfg(work: Path, params: dict[str, Any], extra: list[str] | None = None):
    """configs/demo.yaml (the embedded default: tiny-bert, db loss, batch 32) with the benchmark's sizes."""
    from pipeline.core.config import load_config

    return load_config(
        DEMO_CONFIG,
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


def ensure_prepared(work: Path, params: dict[str, Any]) -> None:
    """The training corpus (synthetic, configs/demo.yaml) prepared once per benchmark run."""
    from pipeline.data.prepare import run_prepare

    cfg = load_cfg(work, params)
    if not (work / "runs" / "train" / "label_stats.json").exists():
        run_prepare(cfg)


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


def ray_data_operator_metrics(since: float) -> list[dict[str, Any]] | None:
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
