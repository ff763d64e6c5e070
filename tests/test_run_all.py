"""jobs.run_all with stage manifests: a second run skips every stage, a changed input re-runs its stage and
every later one, and nothing else."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
from pathlib import Path

import pytest
import yaml

from jobs.run_all import run_all
from pipeline.core.errors import InputError, ResourceError
from pipeline.core.resources import plan_run
from pipeline.runs import manifest, orchestrator
from tests.conftest import (
    TINY_RUN,
    corpus_table,
    run_config,
    s3_bucket,
    storage_overrides,
    synthetic_settings,
    write_parquet,
)

SMALL = [
    *synthetic_settings(300, 8, num_shards=2),
    *TINY_RUN,
    "model.num_layers=1",
    "model.vocab_size=500",
    "train.num_workers=0",
    "train.epochs=1",
    "train.lr=5e-3",
    "evaluate.cpus_per_actor=0.5",
]
NO_TUNE = argparse.Namespace(tune=False)


def _cfg(root: Path, name: str, *overrides: str):
    return run_config(root, name, *SMALL, *overrides)


def _snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    """(mtime_ns, content) of every file under a folder."""
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _manifest(run: Path, stage: str) -> dict:
    return json.loads((run / "manifests" / f"{stage}.json").read_text())


@pytest.fixture(scope="module")
def first_run(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("run_all")
    cfg = _cfg(root, "r")
    results = run_all(cfg, NO_TUNE)
    return root, results


@pytest.mark.timeout(600)
def test_second_run_skips_everything_and_a_changed_evaluate_setting_reruns_only_evaluate(first_run, caplog):
    root, first = first_run
    run = root / "r"
    assert [s for s, r in first.items() if r["ran"]] == ["prepare", "train", "evaluate"]
    for stage in ("prepare", "train", "evaluate"):
        doc = _manifest(run, stage)
        assert doc["stage"] == stage and doc["hash"] == first[stage]["hash"]
    assert _manifest(run, "train")["parts"]["upstream.prepare"] == first["prepare"]["hash"]
    assert _manifest(run, "evaluate")["parts"]["upstream.train"] == first["train"]["hash"]
    # The synthetic source is identified by its parameters.
    assert _manifest(run, "prepare")["inputs"]["source"]["synthetic"]["num_docs"] == 300

    before = _snapshot(run)
    caplog.set_level(logging.INFO, logger="pipeline.runs.orchestrator")
    second = run_all(_cfg(root, "r"), NO_TUNE)
    assert not any(r["ran"] for r in second.values()), second
    assert {s: r["hash"] for s, r in second.items()} == {s: r["hash"] for s, r in first.items()}
    for stage in ("prepare", "train", "evaluate"):
        assert f"{stage}: skipped" in caplog.text
    # Nothing under the run was written again: manifests, data, model, report (same bytes, same mtimes).
    assert _snapshot(run) == before

    # Settings that only change resources are not inputs.
    caplog.clear()
    resources = run_all(
        _cfg(root, "r", "train.max_failures=5", "evaluate.batch_size=64", "evaluate.cpus_per_actor=1"),
        NO_TUNE,
    )
    assert not any(r["ran"] for r in resources.values()), resources
    assert _snapshot(run) == before

    # A changed evaluate setting re-runs evaluate only.
    caplog.clear()
    third = run_all(_cfg(root, "r", "evaluate.min_support=2"), NO_TUNE)
    assert {s: r["ran"] for s, r in third.items()} == {"prepare": False, "train": False, "evaluate": True}
    assert "config.evaluate" in third["evaluate"]["reason"]
    assert "evaluate: running: inputs changed since the last run (config.evaluate)" in caplog.text
    after = _snapshot(run)
    unchanged = [k for k in before if k.startswith(("model/", "prepared/", "data/", "tokenizer/"))]
    unchanged += ["label_stats.json", "manifests/prepare.json", "manifests/train.json"]
    assert all(after[k] == before[k] for k in unchanged), [k for k in unchanged if after[k] != before[k]]
    assert after["manifests/evaluate.json"] != before["manifests/evaluate.json"]
    assert _manifest(run, "evaluate")["inputs"]["config.evaluate"]["min_support"] == 2
    assert json.loads((run / "thresholds.json").read_text())["parameters"]["min_support"] == 2
    assert after["report/metrics.json"][0] > before["report/metrics.json"][0]


@pytest.mark.timeout(300)
def test_changed_synthetic_data_reruns_prepare_and_refuses_checkpoints_of_other_data(first_run):
    root, _ = first_run
    # A copy of the finished run (manifests do not depend on the run's name or place).
    shutil.copytree(root / "r", root / "g")
    run = root / "g"
    # Checkpoints of that training, as a run with train.num_workers >= 1 keeps them.
    ckpt = run / "checkpoints" / "checkpoint_2026-01-01_00-00-00.000000"
    ckpt.mkdir(parents=True)
    (ckpt / "state.pt").write_bytes(b"not read")
    data_before = _snapshot(run / "data")
    model_before = _snapshot(run / "model")

    with pytest.raises(InputError, match="checkpoints trained on other prepared data"):
        run_all(_cfg(root, "g", "data.synthetic.seed=1"), NO_TUNE)
    # prepare ran with the new parameters: the corpus under the run was written again, differently.
    assert _snapshot(run / "data") != data_before
    prep = _manifest(run, "prepare")
    assert prep["inputs"]["source"]["synthetic"]["seed"] == 1
    # train and evaluate no longer vouch for their outputs; the model was not touched.
    assert not (run / "manifests" / "train.json").exists()
    assert not (run / "manifests" / "evaluate.json").exists()
    assert _snapshot(run / "model") == model_before


# ------------------------------------------------------------------------------------------ stubbed stages


@pytest.fixture
def stub_stages(monkeypatch):
    """Stage functions that only write their outputs and record what they were called with."""
    calls: list[tuple[str, dict]] = []

    def run_of(cfg) -> Path:
        return Path(cfg.run_uri)

    def prepare(cfg):
        run = run_of(cfg)
        for split in ("train", "validation", "test"):
            (run / "prepared" / split).mkdir(parents=True, exist_ok=True)
        (run / "label_stats.json").write_text("{}")
        calls.append(("prepare", {}))

    def tune(cfg):
        best = {
            "loss": {"name": "focal", "params": {"gamma": float(cfg.tune.seed + 1)}},
            "train": {"lr": 0.01},
        }
        (run_of(cfg) / "tune").mkdir(exist_ok=True)
        (run_of(cfg) / "tune" / f"search-{cfg.tune.seed}").write_text("trials")
        (run_of(cfg) / "best_params.yaml").write_text(yaml.safe_dump(best))
        calls.append(("tune", {}))

    def train(cfg):
        if os.environ.get("STUB_TRAIN_FAILS"):
            raise RuntimeError("worker killed")
        (run_of(cfg) / "model").mkdir(exist_ok=True)
        for name in ("model_config.json", "head.pt"):
            (run_of(cfg) / "model" / name).write_text("x")
        calls.append(("train", {"loss": cfg.loss.name, "lr": cfg.train.lr}))

    def evaluate(cfg):
        run = run_of(cfg)
        for split in ("validation", "test"):
            (run / "predictions" / split).mkdir(parents=True, exist_ok=True)
        (run / "report").mkdir(exist_ok=True)
        (run / "report" / "metrics.json").write_text("{}")
        (run / "thresholds.json").write_text("{}")
        calls.append(("evaluate", {"loss": cfg.loss.name}))

    # The whole-run resource plan against a 2-CPU cluster instead of a live Ray.
    monkeypatch.setattr(
        orchestrator,
        "check_run_resources",
        lambda cfg, tune: plan_run(cfg, tune, {"CPU": 2.0}, [{"CPU": 2.0}]),
    )
    monkeypatch.setattr(orchestrator, "run_prepare", prepare)
    monkeypatch.setattr(orchestrator, "_run_tune", tune)
    monkeypatch.setattr(orchestrator, "run_train", train)
    monkeypatch.setattr(orchestrator, "run_evaluate", evaluate)
    return calls


def _ran(results: dict) -> list[str]:
    return [s for s, r in results.items() if r["ran"]]


def test_tune_stage_and_interrupted_train_with_stub_stages(stub_stages, tmp_path, monkeypatch):
    calls = stub_stages
    cfg = _cfg(tmp_path, "t")
    out = orchestrator.run_stages(cfg, tune=True)
    assert list(out) == ["prepare", "tune", "train", "evaluate"] and _ran(out) == list(out)
    # Train and evaluate used best_params.yaml applied to the config.
    assert calls[2] == ("train", {"loss": "focal", "lr": 0.01}) and calls[3] == (
        "evaluate",
        {"loss": "focal"},
    )
    assert _manifest(tmp_path / "t", "train")["inputs"]["best_params"]["loss"]["name"] == "focal"

    calls.clear()
    assert _ran(orchestrator.run_stages(cfg, tune=True)) == [] and calls == []

    # A changed tune setting re-runs tune and everything after it, not prepare.
    cfg2 = _cfg(tmp_path, "t", "tune.seed=4")
    out = orchestrator.run_stages(cfg2, tune=True)
    assert _ran(out) == ["tune", "train", "evaluate"]
    assert "config.tune" in out["tune"]["reason"] and out["train"]["reason"] == "an earlier stage (tune) ran"
    assert _manifest(tmp_path / "t", "train")["inputs"]["best_params"]["loss"]["params"]["gamma"] == 5.0
    # The finished search of the old tune settings was removed, not restored.
    assert sorted(p.name for p in (tmp_path / "t" / "tune").iterdir()) == ["search-4"]

    # Without --tune, train's inputs are the config itself (no best_params): train and evaluate re-run.
    calls.clear()
    out = orchestrator.run_stages(cfg2)
    assert list(out) == ["prepare", "train", "evaluate"] and _ran(out) == ["train", "evaluate"]
    assert calls[0] == ("train", {"loss": "db", "lr": 5e-3})

    # A train killed half-way leaves no train (nor evaluate) manifest: the next run trains again.
    cfg3 = _cfg(tmp_path, "t", "loss.name=bce")
    monkeypatch.setenv("STUB_TRAIN_FAILS", "1")
    with pytest.raises(RuntimeError, match="worker killed"):
        orchestrator.run_stages(cfg3)
    assert not (tmp_path / "t" / "manifests" / "train.json").exists()
    assert not (tmp_path / "t" / "manifests" / "evaluate.json").exists()
    monkeypatch.delenv("STUB_TRAIN_FAILS")
    out = orchestrator.run_stages(cfg3)
    assert _ran(out) == ["train", "evaluate"] and out["train"]["reason"].startswith("no manifest")

    # A deleted output makes its stage run again even though the manifest matches.
    (tmp_path / "t" / "report" / "metrics.json").unlink()
    out = orchestrator.run_stages(cfg3)
    assert _ran(out) == ["evaluate"] and "report/metrics.json" in out["evaluate"]["reason"]


def test_a_stage_that_cannot_fit_fails_before_the_first_stage(stub_stages, tmp_path):
    """#24 item 1: evaluate's actors (and train's workers, tune's trials) are planned before prepare runs."""
    for overrides, expected in (
        (["evaluate.concurrency=8", "evaluate.cpus_per_actor=1"], [r"for evaluate: 8 scoring actor\(s\)"]),
        (["train.num_workers=3", "train.cpus_per_worker=1"], ["for training: CPU: asked"]),
        (
            ["train.num_workers=3", "train.cpus_per_worker=1", "evaluate.gpus_per_actor=1"],
            ["for training", "1 GPU for the scoring actors"],
        ),
    ):
        with pytest.raises(ResourceError, match="no stage was started") as err:
            orchestrator.run_stages(_cfg(tmp_path, "big", *overrides))
        for pattern in expected:
            assert re.search(pattern, str(err.value)), (pattern, str(err.value))
    assert stub_stages == [] and not (tmp_path / "big").exists()
    with pytest.raises(ResourceError, match="tune.trial_cpus=4"):
        orchestrator.run_stages(_cfg(tmp_path, "big", "tune.mode=embeddings", "tune.trial_cpus=4"), tune=True)
    orchestrator.run_stages(
        _cfg(tmp_path, "big", "tune.mode=embeddings", "tune.trial_cpus=4")
    )  # no tune: fits
    assert [c[0] for c in stub_stages] == ["prepare", "train", "evaluate"]


@pytest.mark.timeout(120)
def test_run_all_refuses_an_evaluate_too_big_for_the_live_cluster(ray_session, tmp_path):
    import ray

    cpus = ray.cluster_resources()["CPU"]
    cfg = _cfg(tmp_path, "big", f"evaluate.concurrency={int(cpus) + 1}", "evaluate.cpus_per_actor=1")
    with pytest.raises(ResourceError, match=r"(?s)no stage was started.*for evaluate"):
        run_all(cfg, NO_TUNE)
    assert not (tmp_path / "big").exists()


def _shard(path: Path, n: int, start: int = 0) -> None:
    write_parquet(
        path, corpus_table(["some words"] * n, [["a"]] * n, id=[f"d{i}" for i in range(start, start + n)])
    )


def test_source_listing_sees_added_changed_and_removed_shards(tmp_path):
    src = tmp_path / "src"
    _shard(src / "train" / "a.parquet", 5)
    _shard(src / "test" / "b.parquet", 5)
    (src / "_SUCCESS").write_text("")
    _shard(src / ".hidden" / "c.parquet", 5)
    cfg = _cfg(tmp_path, "x", f"data.source={src}")
    listing = manifest.source_listing(str(src))
    assert [f["path"] for f in listing] == ["test/b.parquet", "train/a.parquet"]
    assert all(f["size"] > 0 and f["mtime_ns"] > 0 for f in listing)
    h0 = manifest.inputs_hash(cfg)
    assert manifest.inputs_hash(cfg) == h0
    # Unused synthetic parameters do not change the inputs of a Parquet source.
    assert manifest.prepare_inputs(
        _cfg(tmp_path, "x", f"data.source={src}", "data.synthetic.seed=3")
    ).hash == (manifest.prepare_inputs(cfg).hash)

    _shard(src / "train" / "new.parquet", 5, start=100)
    h1 = manifest.inputs_hash(cfg)
    assert h1 != h0
    _shard(src / "train" / "new.parquet", 6, start=100)  # rewritten with other content
    h2 = manifest.inputs_hash(cfg)
    assert h2 != h1
    (src / "train" / "new.parquet").unlink()
    assert manifest.inputs_hash(cfg) == h0

    # A glob selects its files only; nothing found is a clear error.
    assert [f["path"] for f in manifest.source_listing(f"{src}/train/*.parquet")] == ["a.parquet"]
    with pytest.raises(InputError, match="no .parquet files"):
        manifest.source_listing(str(tmp_path / "empty"))


def test_source_listing_on_object_storage(moto_storage, tmp_path):
    cfg = _cfg(tmp_path, "x", "data.source=s3://bucket/shards", *storage_overrides(moto_storage))
    fs = s3_bucket(moto_storage, "bucket")
    local = tmp_path / "a.parquet"
    _shard(local, 5)
    fs.create_dir("bucket/shards/train")
    with fs.open_output_stream("bucket/shards/train/a.parquet") as out:
        out.write(local.read_bytes())
    listing = manifest.source_listing(cfg.data.source, cfg.storage)
    assert [f["path"] for f in listing] == ["train/a.parquet"]
    assert listing[0]["size"] == local.stat().st_size and listing[0]["mtime_ns"] > 0
    h0 = manifest.inputs_hash(cfg)
    with fs.open_output_stream("bucket/shards/train/b.parquet") as out:
        out.write(local.read_bytes())
    assert manifest.inputs_hash(cfg) != h0
    fs.delete_file("bucket/shards/train/b.parquet")
    assert manifest.inputs_hash(cfg) == h0
