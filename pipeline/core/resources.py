"""Resource plan: check a training request against the cluster before anything is scheduled.

On a small cluster Ray does not refuse an infeasible request, it waits for it forever (training
workers that take every CPU starve Ray Data; a placement group that cannot fit never starts). So the plan is
checked up front and an infeasible one fails at once, saying what was asked and what the cluster has.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.core.config import Config, EvaluateSection, TrainSection
from pipeline.core.errors import ResourceError


@dataclass(frozen=True)
class ResourcePlan:
    num_workers: int
    use_gpu: bool
    resources_per_worker: dict[str, float]
    data_cpus: float
    #: Trials that fit side by side (used by Tune).
    concurrent_trials: int

    def describe(self) -> str:
        return (
            f"{self.num_workers} worker(s) x {self.resources_per_worker}"
            f" + {self.data_cpus} CPU for Ray Data; {self.concurrent_trials} concurrent trial(s) fit"
        )


def plan_training(
    train: TrainSection, cluster: dict[str, float], nodes: list[dict[str, float]] | None = None
) -> ResourcePlan:
    """Plan one training run (or one Tune trial) on a cluster with `cluster` total resources.

    `nodes` (per-node resources) lets the check catch a worker larger than every single node.
    """
    per_worker: dict[str, float] = {"CPU": float(train.cpus_per_worker)}
    if train.use_gpu:
        per_worker["GPU"] = float(train.gpus_per_worker)
    workers = max(train.num_workers, 1) if train.num_workers else 0
    asked: dict[str, float] = {"CPU": train.data_cpus + workers * per_worker["CPU"]}
    if train.use_gpu:
        asked["GPU"] = workers * per_worker["GPU"]
    have = {k: float(cluster.get(k, 0.0)) for k in ("CPU", "GPU")}
    problems = []
    if train.use_gpu and have["GPU"] == 0:
        problems.append("train.use_gpu is true but the cluster has no GPU")
    for key, need in asked.items():
        if need > have[key] + 1e-9:
            problems.append(f"{key}: asked {need:g}, cluster has {have[key]:g}")
    if nodes and workers:
        fits = [n for n in nodes if all(n.get(k, 0.0) + 1e-9 >= v for k, v in per_worker.items())]
        if not fits:
            biggest = max(nodes, key=lambda n: n.get("CPU", 0.0))
            problems.append(f"no single node holds one worker's {per_worker}; largest node has {biggest}")
    if problems:
        raise ResourceError(
            "infeasible resource request for training: "
            + "; ".join(problems)
            + f". Asked: {workers} worker(s) x {per_worker} + {train.data_cpus} CPU for Ray Data. "
            f"Cluster: {_fmt(cluster)}. Lower train.num_workers / train.cpus_per_worker, or add nodes."
        )
    per_trial_cpu = max(workers * per_worker["CPU"], per_worker["CPU"] if workers else 0.0)
    free_cpu = have["CPU"] - train.data_cpus
    concurrent = int(free_cpu // per_trial_cpu) if per_trial_cpu else 1
    if train.use_gpu and workers:
        concurrent = min(concurrent, int(have["GPU"] // (workers * per_worker["GPU"])))
    return ResourcePlan(
        num_workers=train.num_workers,
        use_gpu=train.use_gpu,
        resources_per_worker=per_worker,
        data_cpus=train.data_cpus,
        concurrent_trials=max(concurrent, 1),
    )


def plan_scoring(ecfg: EvaluateSection, stage: str, cluster: dict[str, float]) -> None:
    """Scoring actors plus one CPU for read/decision tasks must fit, or Ray Data waits forever.

    `stage` names the caller (evaluate, predict) in the message.
    """
    cpus, gpus = ecfg.concurrency * ecfg.cpus_per_actor, ecfg.concurrency * ecfg.gpus_per_actor
    problems = []
    if cpus + 1.0 > cluster.get("CPU", 0.0) + 1e-9:
        problems.append(
            f"{ecfg.concurrency} scoring actor(s) x {ecfg.cpus_per_actor:g} CPU + 1 CPU for reading = "
            f"{cpus + 1:g} CPU, the cluster has {cluster.get('CPU', 0.0):g}"
        )
    if gpus > cluster.get("GPU", 0.0) + 1e-9:
        problems.append(f"{gpus:g} GPU for the scoring actors, the cluster has {cluster.get('GPU', 0.0):g}")
    if problems:
        raise ResourceError(
            f"infeasible resource request for {stage}: "
            + "; ".join(problems)
            + ". Lower evaluate.concurrency / evaluate.cpus_per_actor / evaluate.gpus_per_actor."
        )


def plan_run(
    cfg: Config, tune: bool, cluster: dict[str, float], nodes: list[dict[str, float]] | None = None
) -> None:
    """Check every stage of a whole run (train, the Tune trials when `tune`, evaluate) against the cluster
    before the first one starts, so that an evaluate that cannot fit fails in seconds, not after training.
    Raises one ResourceError listing every stage that cannot fit."""
    problems = []
    try:
        plan_training(cfg.train, cluster, nodes)
    except ResourceError as err:
        problems.append(str(err))
    if tune and cfg.tune.mode == "embeddings" and cfg.tune.trial_cpus > cluster.get("CPU", 0.0) + 1e-9:
        problems.append(
            f"infeasible resource request for tune: tune.trial_cpus={cfg.tune.trial_cpus:g} but the cluster "
            f"has CPU={cluster.get('CPU', 0.0):g}"
        )
    try:
        plan_scoring(cfg.evaluate, "evaluate", cluster)
    except ResourceError as err:
        problems.append(str(err))
    if problems:
        raise ResourceError(
            f"this run does not fit the cluster ({_fmt(cluster)}); no stage was started:\n  - "
            + "\n  - ".join(problems)
        )


def _fmt(resources: dict[str, Any]) -> str:
    keys = [k for k in ("CPU", "GPU", "memory") if k in resources]
    return ", ".join(f"{k}={resources[k]:g}" for k in keys) or "{}"


def _live() -> tuple[dict[str, float], list[dict[str, float]]]:
    import ray

    return ray.cluster_resources(), [n["Resources"] for n in ray.nodes() if n.get("Alive")]


def cluster_plan(train: TrainSection) -> ResourcePlan:
    """Plan against the live cluster (ray must be initialised)."""
    cluster, nodes = _live()
    return plan_training(train, cluster, nodes)


def check_run_resources(cfg: Config, tune: bool = False) -> None:
    """:func:`plan_run` against the live cluster (ray must be initialised)."""
    cluster, nodes = _live()
    plan_run(cfg, tune, cluster, nodes)
