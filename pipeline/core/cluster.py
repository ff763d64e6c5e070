"""Connect to the Ray cluster of a submitted job, or start a local one in-process; check that the run's output
folder outlives the job and is the same folder on every node."""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
import uuid
from typing import Any

import ray
import ray.data

from pipeline.core.config import RaySection
from pipeline.core.errors import InputError

log = logging.getLogger(__name__)


def ensure_ray(cfg: RaySection) -> bool:
    """Initialise Ray once; returns True when this call started it (so the caller shuts it down).

    Under `ray job submit`, RAY_ADDRESS is set and `ray.init()` joins that cluster; with no address at all a
    local Ray starts in-process (the embedded default).
    """
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    runtime_env = _niceness_env(cfg.worker_niceness)
    if address:
        ray.init(address=address, log_to_driver=True, runtime_env=runtime_env)
        log.info("joined Ray cluster at %s: %s", address, ray.cluster_resources())
    else:
        # The dashboard serves the State API, which Train V2's PlacementGroupCleaner needs: without it, the
        # placement groups of Train runs that Tune ended (ASHA) stayed reserved and later work never started.
        start_local_ray(cfg.num_cpus, include_dashboard=True, runtime_env=runtime_env)
        log.info("started a local Ray: %s", ray.cluster_resources())
    ray.data.DataContext.get_current().enable_progress_bars = False
    return True


def free_port() -> int:
    """A TCP port free on the loopback interface right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_local_ray(
    num_cpus: int | None,
    *,
    include_dashboard: bool = True,
    log_to_driver: bool = True,
    temp_dir: str | None = None,
    runtime_env: dict[str, Any] | None = None,
) -> None:
    """Start a local Ray of our own in this process, beside any other Ray on the machine.

    Its GCS port is chosen up front and RAY_ADDRESS set while it starts, so every process it spawns inherits
    its address: the State API, which Train V2's PlacementGroupCleaner calls from inside the cluster,
    otherwise looks for "the" cluster of the machine and, with another Ray running, failed ("multiple active
    Ray instances") or asked the wrong one. The dashboard and metrics get free ports instead of Ray's fixed
    defaults. `temp_dir` (short: Ray's socket paths must stay under 107 bytes) gives it a session folder of
    its own.
    """
    port = free_port()
    saved = {k: os.environ.get(k) for k in ("RAY_ADDRESS", "RAY_GCS_SERVER_PORT")}
    os.environ["RAY_GCS_SERVER_PORT"] = str(port)
    os.environ["RAY_ADDRESS"] = f"{ray.util.get_node_ip_address()}:{port}"
    kwargs: dict[str, Any] = {"_metrics_export_port": free_port()}
    if include_dashboard:
        kwargs["dashboard_port"] = free_port()
    if temp_dir is not None:
        kwargs["_temp_dir"] = temp_dir
    if runtime_env:
        kwargs["runtime_env"] = runtime_env
    try:
        ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=include_dashboard,
            log_to_driver=log_to_driver,
            **kwargs,
        )
    finally:
        # The daemons have it; later subprocesses of this driver (a job it launches) must not join this Ray.
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def head_node_args(num_cpus: int, temp_dir: str | None = None, **extra: Any) -> dict[str, Any]:
    """`ray.cluster_utils.Cluster` head arguments with free ports (GCS, dashboard, its agent, metrics)
    instead of Ray's fixed defaults (6379, 8265, 52365), so the cluster starts beside any other Ray; its
    raylet's processes get RAY_ADDRESS (see start_local_ray). Give the same `env_vars` to added nodes."""
    port = free_port()
    args: dict[str, Any] = {
        "num_cpus": num_cpus,
        "gcs_server_port": port,
        "dashboard_port": free_port(),
        "dashboard_agent_listen_port": free_port(),
        "metrics_export_port": free_port(),
        "temp_dir": temp_dir or tempfile.mkdtemp(prefix="ray-", dir="/tmp"),
        "env_vars": {"RAY_ADDRESS": f"{ray.util.get_node_ip_address()}:{port}"},
    }
    args.update(extra)
    return args


def _niceness_env(niceness: int | None) -> dict[str, Any] | None:
    """The job-level runtime env that sets `ray.worker_niceness` for every worker process of this job.

    Ray starts its workers at niceness 15 (RAY_worker_niceness, read by each worker process as it starts), so
    on a node shared with other work they get the CPU last: an epoch ran 3x slower while another process was
    busy. A job-level env var reaches every worker of the job, on a local Ray and on a joined cluster alike;
    a value given by the job submission itself is left as it is.
    """
    if niceness is None:
        return None
    submitted = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if submitted and "RAY_worker_niceness" in (json.loads(submitted).get("runtime_env") or {}).get(
        "env_vars", {}
    ):
        log.info("ray.worker_niceness: the job submission sets RAY_worker_niceness already; kept")
        return None
    return {"env_vars": {"RAY_worker_niceness": str(niceness)}}


def submitted_job() -> bool:
    """True in the driver of a `ray job submit` entrypoint (Ray's job supervisor sets this variable)."""
    return "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ


def check_output_persists(output: str) -> None:
    """Refuse, before any work, a relative `run.output` in a submitted job.

    Under `ray job submit` the entrypoint runs in a temporary copy of its working directory, which Ray
    deletes with the job's session: a relative output folder would be lost with the cluster.
    """
    if "://" in output or os.path.isabs(os.path.expanduser(output)) or not submitted_job():
        return
    raise InputError(
        f"run.output={output!r} is a relative path, and under `ray job submit` it would resolve inside the "
        f"job's temporary working directory ({os.getcwd()}), which Ray deletes: every output would be lost. "
        "Set run.output to an absolute path on storage that outlives the job (shared by every node) or to an "
        "object-store URI, e.g. --set run.output=/shared/runs or --set run.output=s3://bucket/runs"
    )


def check_output_shared(output: str, timeout_s: float = 120) -> None:
    """On a cluster of several nodes, refuse a local `run.output` that not every node sees.

    Train workers write checkpoints and scoring actors read the model wherever they run; a folder local to
    one node would leave the others writing into folders of their own. The driver writes a marker file and
    a zero-CPU task on every other alive node looks for it.
    """
    if "://" in output:
        return
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) < 2:
        return
    root = os.path.abspath(os.path.expanduser(output))
    os.makedirs(root, exist_ok=True)
    marker = os.path.join(root, f".shared-check-{uuid.uuid4().hex}")
    with open(marker, "w") as f:
        f.write("written by the driver; removed after the check\n")
    try:
        missing = nodes_without(marker, nodes, timeout_s)
    finally:
        os.remove(marker)
    if missing:
        raise InputError(
            f"run.output={output!r} is a local folder that {len(missing)} of the cluster's {len(nodes)} "
            f"nodes do not see ({', '.join(missing)}): each node would write its own copy. Use a folder "
            "that every node mounts (NFS, EFS, a shared volume) or an object-store URI "
            "(--set run.output=s3://bucket/runs)"
        )


def nodes_without(path: str, nodes: list[dict[str, Any]] | None = None, timeout_s: float = 120) -> list[str]:
    """Addresses of the alive nodes (or of `nodes`) on which `path` does not exist."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = nodes if nodes is not None else [n for n in ray.nodes() if n.get("Alive")]
    probe = ray.remote(num_cpus=0)(_exists)
    refs = [
        probe.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=n["NodeID"], soft=False)
        ).remote(path)
        for n in nodes
    ]
    seen = ray.get(refs, timeout=timeout_s)
    return [n["NodeManagerAddress"] for n, ok in zip(nodes, seen, strict=True) if not ok]


def _exists(path: str) -> bool:
    return os.path.exists(path)
