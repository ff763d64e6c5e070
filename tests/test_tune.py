"""Ray Tune over Ray Train: conditional search space, ASHA stopping a bad trial, best_params.yaml."""

from __future__ import annotations

import csv
from pathlib import Path

import optuna
import pytest
import yaml

from pipeline.config import apply_params, load_config
from pipeline.prepare import run_prepare
from pipeline.search_space import SEP, loss_from_trial, optuna_space, resolve_space
from pipeline.tune import run_tune

SMALL = [
    "data.synthetic.num_docs=500",
    "data.synthetic.num_labels=10",
    "data.synthetic.words_per_doc=20",
    "model.max_length=32",
    "model.hidden_size=64",
    "model.intermediate_size=128",
    "model.vocab_size=800",
    "model.pooling=mean",
    "train.num_workers=1",
    "train.cpus_per_worker=0.5",
    "train.patience=0",
]


def test_optuna_space_is_conditional():
    space = resolve_space(["bce", "db", "asymmetric"], {"db": {"kappa": [0.05, 0.1]}})
    define = optuna_space(space, (1e-4, 1e-3))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(30):
        trial = study.ask()
        define(trial)
        fam = trial.params["loss"]
        seen.add(fam)
        others = [k for k in trial.params if SEP in k and not k.startswith(fam + SEP)]
        assert not others, (fam, trial.params)
        name, params = loss_from_trial(trial.params, space)
        assert name == fam and set(params) == set(space[fam])
        if fam == "db":
            assert 0.05 <= params["kappa"] <= 0.1
        study.tell(trial, 0.0)
    assert seen == {"bce", "db", "asymmetric"}
    with pytest.raises(ValueError, match="unknown"):
        resolve_space(["db"], {"db": {"nope": [1, 2]}})


def test_apply_params():
    cfg = apply_params(
        load_config(None), {"loss": {"name": "focal", "params": {"gamma": 1.5}}, "train": {"lr": 1e-3}}
    )
    assert cfg.loss.name == "focal" and cfg.loss.params == {"gamma": 1.5} and cfg.train.lr == 1e-3
    with pytest.raises(ValueError, match="unknown sections"):
        apply_params(load_config(None), {"model": {}})


@pytest.mark.timeout(600)
def test_asha_stops_a_bad_trial_and_writes_best_params(ray_session, tmp_path):
    points = [{"loss": "bce", "lr": 3e-3}, {"loss": "bce", "lr": 1e-7}, {"loss": "bce", "lr": 1e-7}]
    cfg = load_config(
        None,
        [
            f"run.output={tmp_path}",
            "run.name=t",
            *SMALL,
            "train.epochs=4",
            "tune.search=random",
            "tune.families=[bce]",
            "tune.num_samples=3",
            "tune.max_concurrent=1",
            "tune.grace_period=1",
            "tune.reduction_factor=2",
        ],
    )
    cfg.tune.points_to_evaluate = points
    run_prepare(cfg)
    best = run_tune(cfg)
    assert best["train"]["lr"] == pytest.approx(3e-3)
    saved = yaml.safe_load((Path(tmp_path) / "t" / "best_params.yaml").read_text())
    assert saved["loss"]["name"] == "bce"
    with (Path(tmp_path) / "t" / "tune" / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3
    epochs = sorted(int(r["epochs_run"]) for r in rows)
    assert epochs[-1] == 4 and epochs[0] < 4, rows  # the good trial ran to the end, a bad one was stopped
    assert any(r["stop_reason"].startswith("stopped early") for r in rows)
