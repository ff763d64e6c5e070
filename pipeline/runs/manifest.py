"""Stage manifests: what each stage of a run ran on, so that `run_all` can skip a stage whose outputs exist
for the same inputs (the orchestrator, `pipeline.runs.orchestrator`, decides and runs).

`<run>/manifests/<stage>.json` is written atomically after the stage's outputs (so it never vouches for
outputs that are not complete) and holds (`schema_version` 1):

- `stage`, `hash` (sha256 over `parts`), `parts` ({name: sha256} of each input, an upstream stage's hash as
  it is, so a re-run can say which input changed), `inputs` (the hashed values themselves, for people),
  `outputs` (paths under the run that must exist for a skip), `created`, `duration_s`.
- prepare: `config.data` (the data section; the synthetic parameters only for the synthetic source) and
  `source`: for the synthetic source its parameters, else the source URI and every Parquet file under it with
  its size and modification time (pyarrow.fs FileInfo: local files and object stores alike). Also
  `inputs_hash`, the hash of `source` alone, which scheduled retraining compares with the promoted model's.
- tune: `upstream.prepare` + `config.tune`, `config.model`, `config.train`, `config.seed`.
- train: `upstream.prepare` + `config.model`, `config.loss`, `config.train`, `config.seed`, and `best_params`
  (the content of best_params.yaml) when tune ran.
- evaluate: `upstream.train` + `config.evaluate`.

Settings that only say where and how fast work runs (workers, CPUs, GPUs, placement, evaluation batch
sizes, scoring actors, retry counts, checkpoints kept) are left out of the hashes: scaling a cluster does not
retrain.

A stage runs when it has no manifest, its hash differs, an output is missing, or an earlier stage ran in this
invocation; otherwise it is skipped with a log line saying why. Before a stage runs, its manifest and those
of every later stage are deleted, so an interrupted stage is never taken as complete. Train keeps its own
resume logic (a killed train resumes from its checkpoints; changed training settings against old checkpoints
are refused by train itself); in addition, checkpoints made on different prepared data are refused here
(`manifests/checkpoints.json` records the prepare hash they were trained on), since train's own fingerprint
does not cover the data. Tune resumes `<run>/tune/` whatever it was made from, so a search recorded
(`manifests/tune-search.json`) as made from other inputs is removed before a new one starts.

Limits: object stores report modification times to the second, so an object rewritten with the same size
within the same second is not seen as changed; two invocations on one run at the same time are not guarded.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import hashlib
import json
import logging
import posixpath
from dataclasses import dataclass, field
from typing import Any

import pyarrow.fs as pafs

from pipeline.core.config import Config, StorageSection
from pipeline.core.errors import InputError
from pipeline.core.layout import RunLayout
from pipeline.core.storage import (
    Location,
    make_filesystem,
    read_json,
    write_json,
)
from pipeline.training.checkpoints import TRAIN_RESOURCE_KEYS

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
STAGES = ("prepare", "tune", "train", "evaluate")
MANIFEST_DIR = "manifests"
CHECKPOINTS_RECORD = "checkpoints.json"
SEARCH_RECORD = "tune-search.json"
#: What must exist under the run for a stage to be skipped (label_stats.json is written last by prepare; the
#: model folder appears whole, by one rename, whatever its kind; the evaluate report is written after
#: predictions and thresholds).
OUTPUTS: dict[str, tuple[str, ...]] = {
    "prepare": ("label_stats.json", "prepared/train", "prepared/validation", "prepared/test"),
    "tune": ("best_params.yaml",),
    "train": ("model/model_config.json",),
    "evaluate": (
        "thresholds.json",
        "predictions/validation",
        "predictions/test",
        "report/metrics.json",
    ),
}
EVALUATE_RESOURCE_KEYS = frozenset({"batch_size", "concurrency", "cpus_per_actor", "gpus_per_actor"})


def digest(obj: Any) -> str:
    """sha256 of a canonical JSON form (sorted keys): equal values give equal hashes across processes."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


# ------------------------------------------------------------------------------------------ source listing


def source_listing(source: str, storage: StorageSection | None = None) -> list[dict[str, Any]]:
    """Every Parquet file the prepare stage can read from `source` (a file, a folder searched recursively, or
    a glob; names starting with '.' or '_' are skipped as in data.sources), with size and modification
    time from one listing (no file is opened). Paths are relative to the source, sorted."""
    fs, path = make_filesystem(source, storage)
    path = path.rstrip("/") or "/"
    pattern = None
    if any(ch in path for ch in "*?["):
        parts = path.split("/")
        first = next(i for i, p in enumerate(parts) if any(ch in p for ch in "*?["))
        pattern, base = path, "/".join(parts[:first]) or "/"
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    else:
        base = path
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.File:
            base, infos = posixpath.dirname(path), [info]
        elif info.type == pafs.FileType.Directory:
            infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
        else:
            infos = []
    files = []
    for i in infos:
        if i.type != pafs.FileType.File or not i.path.endswith(".parquet"):
            continue
        rel = posixpath.relpath(i.path, base)
        if any(part.startswith((".", "_")) for part in rel.split("/")):
            continue
        if pattern is not None and not fnmatch.fnmatch(i.path, pattern):
            continue
        files.append({"path": rel, "size": i.size, "mtime_ns": i.mtime_ns})
    if not files:
        raise InputError(
            f"{source}: no .parquet files found (expected a folder, a glob or a file of Parquet shards)"
        )
    return sorted(files, key=lambda f: f["path"])


def source_identity(cfg: Config) -> dict[str, Any]:
    """What the data of a run is made of: the synthetic parameters, or the source URI and its file listing."""
    if cfg.data.source == "synthetic":
        return {"synthetic": cfg.data.synthetic.model_dump()}
    return {"uri": cfg.data.source, "files": source_listing(cfg.data.source, cfg.storage)}


def inputs_hash(cfg: Config) -> str:
    """Hash of the input shards (the `source` part of the prepare manifest)."""
    return digest(source_identity(cfg))


# ------------------------------------------------------------------------------------------ stage inputs


@dataclass
class StageInputs:
    stage: str
    values: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def parts(self) -> dict[str, str]:
        """{input name: hash}; an upstream stage's hash is given as it is."""
        return {
            name: value if name.startswith("upstream.") else digest(value)
            for name, value in self.values.items()
        }

    @property
    def hash(self) -> str:
        return digest(self.parts)


def _train_settings(cfg: Config) -> dict[str, Any]:
    return cfg.train.identity(set(TRAIN_RESOURCE_KEYS))


def prepare_inputs(cfg: Config, identity: dict[str, Any] | None = None) -> StageInputs:
    identity = source_identity(cfg) if identity is None else identity
    data = cfg.data.model_dump(exclude={"synthetic"} if cfg.data.source != "synthetic" else set())
    return StageInputs(
        "prepare", {"config.data": data, "source": identity}, extra={"inputs_hash": digest(identity)}
    )


def tune_inputs(cfg: Config, prepare_hash: str) -> StageInputs:
    return StageInputs(
        "tune",
        {
            "upstream.prepare": prepare_hash,
            "config.tune": cfg.tune.model_dump(),
            "config.model": cfg.model.model_dump(),
            "config.train": _train_settings(cfg),
            "config.seed": cfg.run.seed,
        },
    )


def train_inputs(cfg: Config, prepare_hash: str, best_params: dict[str, Any] | None = None) -> StageInputs:
    values: dict[str, Any] = {
        "upstream.prepare": prepare_hash,
        "config.model": cfg.model.model_dump(),
        "config.loss": cfg.loss.model_dump(),
        "config.train": _train_settings(cfg),
        "config.seed": cfg.run.seed,
    }
    if best_params is not None:
        values["best_params"] = best_params
    return StageInputs("train", values)


def evaluate_inputs(cfg: Config, train_hash: str) -> StageInputs:
    return StageInputs(
        "evaluate",
        {
            "upstream.train": train_hash,
            "config.evaluate": cfg.evaluate.model_dump(exclude=set(EVALUATE_RESOURCE_KEYS)),
        },
    )


def expected_hash(cfg: Config, identity: dict[str, Any] | None = None) -> str:
    """The evaluate manifest hash a prepare -> train -> evaluate run of `cfg` would record (no tune):
    one hash of everything that shapes the evaluated model."""
    prep = prepare_inputs(cfg, identity).hash
    return evaluate_inputs(cfg, train_inputs(cfg, prep).hash).hash


# ------------------------------------------------------------------------------------------ manifests


def manifest_location(run: RunLayout, stage: str) -> Location:
    return run.join(MANIFEST_DIR, f"{stage}.json")


def read_manifest(run: RunLayout, stage: str) -> dict[str, Any] | None:
    loc = manifest_location(run, stage)
    if not loc.exists():
        return None
    try:
        doc = read_json(loc)
    except (ValueError, OSError) as err:
        log.warning("%s: unreadable manifest (%s); the stage will run again", loc.uri, err)
        return None
    return doc if isinstance(doc, dict) else None


def write_manifest(run: RunLayout, inputs: StageInputs, duration_s: float) -> dict[str, Any]:
    doc = {
        "schema_version": SCHEMA_VERSION,
        "stage": inputs.stage,
        "hash": inputs.hash,
        "parts": inputs.parts,
        **inputs.extra,
        "inputs": inputs.values,
        "outputs": list(OUTPUTS[inputs.stage]),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "duration_s": round(duration_s, 3),
    }
    write_json(manifest_location(run, inputs.stage), doc)
    return doc


def delete_manifest(run: RunLayout, stage: str) -> None:
    loc = manifest_location(run, stage)
    if loc.exists():
        loc.fs.delete_file(loc.path)


def missing_outputs(run: RunLayout, stage: str) -> list[str]:
    return [rel for rel in OUTPUTS[stage] if not run.join(*rel.split("/")).exists()]


def why_run(run: RunLayout, inputs: StageInputs) -> str | None:
    """None when the stage can be skipped, else the reason it has to run."""
    old = read_manifest(run, inputs.stage)
    if old is None:
        return "no manifest (first run, or the last attempt did not finish)"
    if old.get("schema_version") != SCHEMA_VERSION or old.get("hash") != inputs.hash:
        before, now = old.get("parts") or {}, inputs.parts
        changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        return f"inputs changed since the last run ({', '.join(changed) or 'manifest format'})"
    missing = missing_outputs(run, inputs.stage)
    if missing:
        return f"outputs missing ({', '.join(missing)})"
    return None
