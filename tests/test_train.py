"""Training on Ray Train: in-process loop, a real worker, resume after a kill, fail-fast resource plan."""

from __future__ import annotations

import json
import logging
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.core.config import load_config
from pipeline.core.errors import ResourceError
from pipeline.core.resources import plan_training
from pipeline.data.prepare import run_prepare
from pipeline.training.checkpoints import STATE_FILE, best_weights, read_state
from pipeline.training.train import run_train, shard_in_memory
from pipeline.training.worker import _batches_in_memory, _epoch_batches
from tests.conftest import ray_temp_dir, run_child
from tests.train_callbacks import EpochLog, FailOnce, TorchThreads

ROOT = Path(__file__).resolve().parents[1]
SMALL = [
    "data.synthetic.num_docs=600",
    "data.synthetic.num_labels=12",
    "data.synthetic.words_per_doc=20",
    "model.max_length=32",
    "model.hidden_size=64",
    "model.intermediate_size=128",
    "model.vocab_size=1000",
    "train.batch_size=32",
    "train.lr=2e-3",
    "model.pooling=mean",
    "train.patience=0",
]


def _cfg(root: Path, name: str, *overrides: str):
    return load_config(None, [f"run.output={root}", f"run.name={name}", *SMALL, *overrides])


@pytest.fixture(scope="module")
def prepared(ray_session, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train")
    run_prepare(_cfg(root, "base"))
    return root


def _validation_prevalence(stats: dict) -> float:
    """Mean validation prevalence of the labels that occur there: a constant predictor's macro AP."""
    n_val = stats["documents"]["validation"]
    return float(
        np.mean([c["validation"] / n_val for c in stats["label_counts"].values() if c["validation"]])
    )


def _export_and_best_weights_scores(run: Path, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Scores of the exported model folder, and of the best weights in the run's latest checkpoint."""
    from pipeline.modeling.model import ModelConfig, build_model, load_model

    loaded = load_model(run / "model")
    checkpoint = sorted(c for c in (run / "checkpoints").glob("checkpoint_*") if c.is_dir())[-1]
    model = build_model(ModelConfig.from_any(loaded.config["model"]), len(loaded.labels), loaded.featurizer)
    model.load_state_dict(best_weights(read_state(checkpoint / STATE_FILE)))
    model.eval()
    feats = {k: torch.from_numpy(v) for k, v in loaded.featurizer.encode(texts).items()}
    with torch.no_grad():
        direct = torch.sigmoid(model(**feats)).numpy()
    return loaded.predict_scores(texts), direct


def _fresh_run(root: Path, name: str) -> None:
    """A new run that shares the prepared data of the module's base run."""
    dst = root / name
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir()
    shutil.copytree(root / "base" / "prepared", dst / "prepared")
    shutil.copy(root / "base" / "label_stats.json", dst / "label_stats.json")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("shard_mb", ["1024", "0"], ids=["shard-in-memory", "shard-streamed"])
def test_in_process_loop_learns(prepared, shard_mb, caplog):
    _fresh_run(prepared, "inproc")
    cfg = _cfg(
        prepared,
        "inproc",
        "train.num_workers=0",
        "train.epochs=6",
        "loss.name=bce",
        f"train.shard_in_memory_mb={shard_mb}",
    )
    with caplog.at_level(logging.INFO, logger="pipeline.training.train"):
        out = run_train(cfg)
    how = "held in each worker's memory" if shard_mb != "0" else "streamed through Ray Data"
    assert f"training shard: {how}" in caplog.text
    hist = out["history"]
    assert len(hist) == 6
    assert hist[-1]["train_loss"] < 0.7 * hist[0]["train_loss"]
    assert all(0.0 <= h["input_wait_fraction"] < 1.0 for h in hist), [h["input_wait_fraction"] for h in hist]
    # A constant predictor's average precision on a label equals that label's prevalence.
    stats = json.loads((prepared / "inproc" / "label_stats.json").read_text())
    prevalence = _validation_prevalence(stats)
    assert hist[-1]["val_macro_ap"] > prevalence + 0.2, (hist[-1]["val_macro_ap"], prevalence)
    assert (prepared / "inproc" / "model" / "model_config.json").is_file()


def test_a_shard_is_held_in_memory_when_it_fits_or_sampling_needs_it():
    mib = 2**20
    assert shard_in_memory(1000 * mib, "none", 1024)
    assert not shard_in_memory(3000 * mib / 2, "none", 1024)  # 1,500 MiB per worker
    assert shard_in_memory(3000 * mib / 3, "none", 1024)
    assert not shard_in_memory(1, "none", 0)  # 0: always stream
    assert shard_in_memory(3000 * mib, "class-aware", 0)  # sampling draws over the whole shard
    assert not shard_in_memory(None, "none", 1024)  # size unknown: stream


def test_an_in_memory_shard_without_sampling_gives_each_row_once_per_epoch_in_a_new_order():
    n = 23
    held = {"label_idx": torch.zeros((n, 2), dtype=torch.long), "x": torch.arange(n)}
    config, tcfg = {"sampling": "none", "labels": ["a", "b"]}, {"batch_size": 5}
    orders = [
        torch.cat([b["x"] for b in _epoch_batches(None, held, config, tcfg, seed)]).tolist()
        for seed in (0, 1000)
    ]
    assert [len(b["x"]) for b in _epoch_batches(None, held, config, tcfg, 0)] == [5, 5, 5, 5, 3]
    assert all(sorted(o) == list(range(n)) for o in orders)
    assert orders[0] != orders[1] and orders[0] != list(range(n))


class _Shard:
    """A worker's dataset shard that hands out the given numpy batches in the given order."""

    def __init__(self, batches: list[dict[str, np.ndarray]]) -> None:
        self.batches = batches

    def iter_batches(self, **_: object):
        yield from self.batches


def test_an_in_memory_shard_is_the_same_whatever_order_its_blocks_arrive_in():
    rng = np.random.default_rng(0)
    blocks = [{"x": rng.integers(0, 50, (7, 3)), "label_idx": rng.integers(-1, 4, (7, 2))} for _ in range(4)]
    blocks[3]["x"][0], blocks[3]["label_idx"][0] = blocks[0]["x"][0], blocks[0]["label_idx"][0]  # a duplicate
    first, again = (_batches_in_memory(_Shard(b), ("x",)) for b in (blocks, blocks[::-1]))
    assert set(first) == {"x", "label_idx"}
    assert all(torch.equal(first[k], again[k]) for k in first)
    # Every row kept, with its own labels, once.
    rows = sorted((tuple(b["x"][i]), tuple(b["label_idx"][i])) for b in blocks for i in range(len(b["x"])))
    held = sorted(zip(map(tuple, first["x"].tolist()), map(tuple, first["label_idx"].tolist()), strict=True))
    assert held == rows
    # So the seeded epoch order is the same too.
    config, tcfg = {"sampling": "none", "labels": ["a", "b", "c", "d"]}, {"batch_size": 5}
    assert all(
        torch.equal(a["x"], b["x"])
        for a, b in zip(
            _epoch_batches(None, first, config, tcfg, 3),
            _epoch_batches(None, again, config, tcfg, 3),
            strict=True,
        )
    )


@pytest.mark.timeout(300)
@pytest.mark.parametrize("sampling", ["geomean", "class-aware"])
def test_in_process_weighted_sampling_runs(prepared, sampling):
    _fresh_run(prepared, f"s-{sampling}")
    cfg = _cfg(
        prepared, f"s-{sampling}", "train.num_workers=0", "train.epochs=2", f"train.sampling={sampling}"
    )
    hist = run_train(cfg)["history"]
    assert len(hist) == 2 and np.isfinite(hist[-1]["train_loss"])
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.timeout(600)
@pytest.mark.parametrize("precision", ["auto", "fp16", "fp32"])
def test_gpu_worker_trains_at_each_precision(prepared, precision):
    """A Ray Train worker on the GPU: autocast (bf16 where supported, else fp16), fp16 with its GradScaler
    (whose state the checkpoint keeps), plain fp32."""
    name = f"gpu-{precision}"
    _fresh_run(prepared, name)
    cfg = _cfg(
        prepared,
        name,
        "train.num_workers=1",
        "train.use_gpu=true",
        "train.cpus_per_worker=0.5",
        "train.epochs=3",
        f"train.precision={precision}",
    )
    hist = run_train(cfg)["history"]
    assert [h["epoch"] for h in hist] == [0, 1, 2]
    assert all(np.isfinite(h["train_loss"]) and np.isfinite(h["val_loss"]) for h in hist)
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    latest = sorted(c for c in (prepared / name / "checkpoints").glob("checkpoint_*") if c.is_dir())[-1]
    scaler = read_state(latest / STATE_FILE)["scaler"]
    fp16 = precision == "fp16" or (precision == "auto" and not torch.cuda.is_bf16_supported())
    assert bool(scaler) == fp16, scaler


@pytest.mark.timeout(600)
def test_one_worker_resumes_after_a_kill_and_its_model_reloads_without_ray(prepared, tmp_path, monkeypatch):
    """One Ray Train worker, killed in epoch 1, resumed, submitted again, then reloaded without Ray (one
    test: each Ray Train run costs about 20 s of start-up here)."""
    import ray.train

    _fresh_run(prepared, "w1")
    cfg = _cfg(
        prepared,
        "w1",
        "train.num_workers=1",
        "train.epochs=3",
        "train.cpus_per_worker=0.5",
        "train.max_failures=0",
    )
    run = prepared / "w1"
    with pytest.raises(ray.train.TrainingFailedError):
        run_train(cfg, callbacks=[FailOnce(epoch=1, marker=str(tmp_path / "failed"))])
    first = sorted(c for c in (run / "checkpoints").glob("checkpoint_*") if c.is_dir())
    assert len(first) == 1  # epoch 0 was checkpointed before the kill
    epoch0 = read_state(first[0] / STATE_FILE)["state"]["history"][0]

    hist = run_train(cfg)["history"]  # same name: resumes
    assert [h["epoch"] for h in hist] == [0, 1, 2]
    assert hist[0] == epoch0  # epoch 0 was not run again (its timing would differ)
    # Submitting the finished run again exports its best epoch without training again (same history floats),
    # and a changed configuration is refused: both before any tokenising.
    from pipeline.core.errors import InputError
    from pipeline.training import train as train_module

    def no_tokenising(*args, **kwargs):
        raise AssertionError("tokenised the splits for a run that will not train")

    monkeypatch.setattr(train_module, "with_datasets", no_tokenising)
    assert run_train(cfg)["history"] == hist
    with pytest.raises(InputError, match="different configuration"):
        run_train(_cfg(prepared, "w1", "train.num_workers=1", "train.epochs=3", "loss.name=focal"))
    monkeypatch.undo()
    checkpoints = sorted(c for c in (run / "checkpoints").glob("checkpoint_*") if c.is_dir())
    assert checkpoints and all((c / STATE_FILE).is_file() for c in checkpoints)
    model_cfg = json.loads((run / "model" / "model_config.json").read_text())
    assert model_cfg["loss"]["name"] == "db" and "mu" in model_cfg["loss"]["params"]
    assert model_cfg["training"]["epochs_run"] == 3

    texts = ["alpha beta", "a different document with words", ""]
    script = (
        "import sys, json; from pipeline.modeling.model import load_model; "
        f"m = load_model({str(run / 'model')!r}); "
        f"print(json.dumps(m.predict_scores({texts!r}).tolist())); "
        "assert 'ray' not in sys.modules, 'loading the model imported ray'"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    reloaded = np.array(json.loads(proc.stdout.strip().splitlines()[-1]))

    # The same scores from the best weights stored in the latest checkpoint.
    from pipeline.modeling.model import ModelConfig, build_model, load_model

    saved = read_state(checkpoints[-1] / STATE_FILE)
    tokenizer = load_model(run / "model").tokenizer
    model = build_model(ModelConfig.from_any(model_cfg["model"]), len(model_cfg["labels"]), tokenizer)
    model.load_state_dict(best_weights(saved))
    model.eval()
    enc = tokenizer(texts, padding="max_length", truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        direct = torch.sigmoid(model(enc["input_ids"], enc["attention_mask"])).numpy()
    np.testing.assert_allclose(reloaded, direct, atol=1e-5)


@pytest.mark.timeout(300)
def test_a_worker_killed_after_a_checkpoint_restarts_from_it(prepared, tmp_path):
    """#24 item 6: a worker killed as epoch 1 starts (epoch 0's checkpoint reported a moment before) is
    restarted by Ray within the same fit and goes on from that checkpoint, not from scratch."""
    _fresh_run(prepared, "w2")
    cfg = _cfg(
        prepared,
        "w2",
        "train.num_workers=1",
        "train.epochs=3",
        "train.cpus_per_worker=0.5",
        "train.max_failures=1",
    )
    started = tmp_path / "epochs.txt"
    hist = run_train(
        cfg, callbacks=[FailOnce(epoch=1, marker=str(tmp_path / "failed")), EpochLog(str(started))]
    )
    assert (tmp_path / "failed").exists(), "the worker was not killed"
    # Killed as epoch 1 started (before EpochLog saw it), then epochs 1 and 2: epoch 0 was not trained again.
    assert started.read_text().split() == ["0", "1", "2"]
    assert [h["epoch"] for h in hist["history"]] == [0, 1, 2]


@pytest.mark.timeout(600)
def test_lexical_kind_trains_in_a_worker_and_exports_a_model_that_predicts(prepared, monkeypatch, tmp_path):
    """model.kind=lexical through the same stage and worker loop: the featurizer travels to the worker, the
    model learns, the exported folder scores as the best epoch's weights do, and a finished run re-exports
    without featurising again. Its 1.5-CPU worker trains on 2 torch threads (Ray's default: 1), each of
    which flushes denormal floats."""
    from pipeline.modeling.lexical import VECTORIZER_FILE, WEIGHTS_FILE
    from pipeline.modeling.model import load_model
    from pipeline.training import train as train_module

    _fresh_run(prepared, "lex")
    over = ["model.kind=lexical", "model.lexical.min_df=1", "train.lr=5e-2", "train.cpus_per_worker=1.5"]
    over.append("train.adam_eps=1e-6")
    cfg = _cfg(prepared, "lex", "train.num_workers=1", "train.epochs=5", *over)
    threads = tmp_path / "threads.txt"
    out = run_train(cfg, callbacks=[TorchThreads(str(threads))])
    assert threads.read_text() == "2 0"  # both threads flush denormal floats to zero
    hist = out["history"]
    stats = json.loads((prepared / "lex" / "label_stats.json").read_text())
    prevalence = _validation_prevalence(stats)
    assert hist[-1]["val_macro_ap"] > prevalence + 0.3, (hist[-1]["val_macro_ap"], prevalence)
    assert hist[-1]["train_loss"] < 0.7 * hist[0]["train_loss"]
    run = prepared / "lex"
    assert {p.name for p in (run / "model").iterdir()} == {"model_config.json", VECTORIZER_FILE, WEIGHTS_FILE}
    assert len(list((run / "features").glob(f"*/{VECTORIZER_FILE}"))) == 1
    assert not (run / "tokenizer").exists()
    assert len(list((run / "features" / "splits").glob("*/done.json"))) == 1

    assert load_model(run / "model").kind == "lexical"
    latest = sorted(c for c in (run / "checkpoints").glob("checkpoint_*") if c.is_dir())[-1]
    assert {g["eps"] for g in read_state(latest / STATE_FILE)["optimizer"]["param_groups"]} == {1e-6}
    exported, direct = _export_and_best_weights_scores(
        run, ["w1 w2 alpha", "a different document with words", ""]
    )
    np.testing.assert_allclose(exported, direct, atol=1e-6)

    def no_featurising(*args, **kwargs):
        raise AssertionError("featurised the splits for a run that will not train")

    monkeypatch.setattr(train_module, "with_datasets", no_featurising)
    assert run_train(cfg)["history"] == hist
    monkeypatch.undo()
    # #24 item 3: a finished run given more epochs trains on from its last checkpoint (epochs 0-4 kept).
    longer = run_train(_cfg(prepared, "lex", "train.num_workers=1", "train.epochs=7", *over))["history"]
    assert [h["epoch"] for h in longer] == list(range(7)) and longer[:5] == hist
    assert json.loads((run / "model" / "model_config.json").read_text())["training"]["epochs_run"] == 7

    # The label-name prior is added to a finished run's exported weights without training again.
    from safetensors.torch import load_file

    from pipeline.training.name_prior import candidates, label_weights, name_matrix

    loaded = load_model(run / "model")
    names_file = prepared / "names.csv"
    terms = loaded.featurizer.terms()
    names = {label: f"{terms[2 * i]} {terms[2 * i + 1]}" for i, label in enumerate(loaded.labels)}
    names_file.write_text("label,name\n" + "".join(f"{k},{v}\n" for k, v in names.items()))
    before = load_file(str(run / "model" / WEIGHTS_FILE))["weight"]
    mat = name_matrix(loaded.featurizer.vectorizer, loaded.labels, names)
    for prior in ("2", "auto"):
        named = [f"train.name_prior={prior}", f"evaluate.label_names.source={names_file}"]
        cfg_named = _cfg(prepared, "lex", "train.num_workers=1", "train.epochs=7", *over, *named)
        assert run_train(cfg_named)["history"] == longer
        info = json.loads((run / "model" / "model_config.json").read_text())["name_prior"]
        g, k = info["weight"], info["pseudo_count"]
        if prior == "auto":
            assert [(f["g"], f["k"]) for f in info["tried"]] == candidates()
            assert (g, k) in [(f["g"], f["k"]) for f in info["tried"]]
        else:
            assert (g, k) == (2.0, None) and info["named_labels"] == len(loaded.labels)
        w_l = label_weights(g, k, [loaded.config["label_counts_train"][label] for label in loaded.labels])
        after = load_file(str(run / "model" / WEIGHTS_FILE))["weight"]
        np.testing.assert_allclose(after.numpy(), before.numpy() + mat.toarray() * w_l, atol=1e-6)


@pytest.mark.timeout(300)
def test_combined_kind_mixes_two_branches_chosen_on_validation(prepared, monkeypatch, caplog):
    """model.kind=combined (TF-IDF scorer + frozen tiny-bert embedding scorer) in a real worker: progress
    lines while the splits are featurised, a loss on each branch, the mix chosen on validation each epoch and
    saved with the best epoch's weights, and an exported folder that scores as those weights do."""
    import logging

    from pipeline.core import progress
    from pipeline.modeling.frozen import MIX_GRID, WEIGHTS_FILE
    from pipeline.modeling.model import load_model

    monkeypatch.setattr(progress, "PROGRESS_INTERVAL_S", 0.05)
    caplog.set_level(logging.INFO, logger="pipeline.core.progress")
    _fresh_run(prepared, "comb")
    over = ["model.kind=combined", "model.chunks=2", "model.lexical.min_df=1", "train.lr=5e-2"]
    cfg_over = ["train.num_workers=1", "train.epochs=4", "train.cpus_per_worker=0.5", *over]
    cfg = _cfg(prepared, "comb", *cfg_over)
    hist = run_train(cfg)["history"]
    lines = [r.getMessage() for r in caplog.records]
    assert any("featurising train:" in line and "rows done" in line for line in lines), lines
    assert all(h["mix"] in MIX_GRID for h in hist)
    stats = json.loads((prepared / "comb" / "label_stats.json").read_text())
    prevalence = _validation_prevalence(stats)
    assert hist[-1]["val_macro_ap"] > prevalence + 0.3, (hist[-1]["val_macro_ap"], prevalence)
    assert hist[-1]["train_loss"] < 0.7 * hist[0]["train_loss"]

    run = prepared / "comb"
    assert (run / "model" / WEIGHTS_FILE).is_file() and len(list((run / "features").glob("*/encoder"))) == 1
    loaded = load_model(run / "model")
    best = max(hist, key=lambda h: h["val_tuned_macro_f1"])
    assert loaded.kind == "combined" and float(loaded.model.mix) == pytest.approx(best["mix"])
    texts = ["w1 w2 alpha", "a different document with words " * 20, ""]
    exported, direct = _export_and_best_weights_scores(run, texts)
    np.testing.assert_allclose(exported, direct, atol=1e-6)

    # A second run on a copy of the same prepared data and features (another loss) reads the featurised
    # splits the first one cached instead of embedding them again.
    from pipeline.training import train as train_module

    def no_featurising(*args, **kwargs):
        raise AssertionError("featurised the splits again")

    other = prepared / "comb-bce"
    _fresh_run(prepared, "comb-bce")
    shutil.copytree(run / "features", other / "features")
    monkeypatch.setattr(train_module, "encode_dataset", no_featurising)
    again = run_train(_cfg(prepared, "comb-bce", "loss.name=bce", *cfg_over))["history"]
    assert len(again) == 4 and again[-1]["train_loss"] < again[0]["train_loss"]


def test_infeasible_request_fails_fast(prepared):
    cfg = _cfg(prepared, "big", "train.num_workers=4", "train.cpus_per_worker=1")
    t0 = time.perf_counter()
    with pytest.raises(ResourceError, match=r"CPU: asked 4.5, cluster has 2") as err:
        run_train(cfg)
    assert time.perf_counter() - t0 < 10
    assert "4 worker(s)" in str(err.value)
    gpu = _cfg(prepared, "gpu", "train.use_gpu=true")
    with pytest.raises(ResourceError, match="no GPU"):
        run_train(gpu)


def test_resource_plan_pure():
    train = load_config(None, ["train.num_workers=2", "train.cpus_per_worker=0.5"]).train
    plan = plan_training(train, {"CPU": 4.0}, [{"CPU": 2.0}, {"CPU": 2.0}])
    assert plan.resources_per_worker == {"CPU": 0.5}
    assert plan.concurrent_trials == 3  # (4 - 0.5 for data) // (2 x 0.5)
    big = load_config(None, ["train.num_workers=1", "train.cpus_per_worker=3"]).train
    with pytest.raises(ResourceError, match="no single node"):
        plan_training(big, {"CPU": 4.0}, [{"CPU": 2.0}, {"CPU": 2.0}])
    gpu = load_config(None, ["train.num_workers=2", "train.use_gpu=true"]).train
    plan = plan_training(gpu, {"CPU": 16.0, "GPU": 4.0})
    assert plan.resources_per_worker == {"CPU": 1.0, "GPU": 1.0} and plan.concurrent_trials == 2


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_ddp_two_nodes_identical_weights(prepared, no_local_ray, tmp_path):
    """Two 1-CPU nodes of a real multi-node cluster (ray.cluster_utils.Cluster), one worker on each, in a
    subprocess with the session's Ray shut down (see the no_local_ray fixture)."""
    _fresh_run(prepared, "ddp")
    digests = tmp_path / "digests"
    script = f"""
import ray
from ray.cluster_utils import Cluster
from pipeline.core.cluster import head_node_args
from pipeline.core.config import load_config
from pipeline.training.train import run_train
from tests.train_callbacks import WeightDigest
head = head_node_args(1, {ray_temp_dir()!r}, include_dashboard=False)
cluster = Cluster(initialize_head=True, head_node_args=head)
cluster.add_node(num_cpus=1, env_vars=head["env_vars"])
cluster.wait_for_nodes()
ray.init(address=cluster.address)
try:
    cfg = load_config(None, {[f"run.output={prepared}", "run.name=ddp", *SMALL]!r} + [
        "train.num_workers=2", "train.cpus_per_worker=0.5", "train.epochs=2", "train.data_cpus=0.5",
        "train.placement_strategy=SPREAD"])
    run_train(cfg, callbacks=[WeightDigest({str(digests)!r})])
finally:
    ray.shutdown()
    cluster.shutdown()
"""
    log = tmp_path / "ddp.log"
    rc = run_child(["-c", script], log, 540)
    assert rc == 0, log.read_text()[-4000:]
    files = sorted(digests.glob("rank-*.txt"))
    assert [f.name for f in files] == ["rank-0.txt", "rank-1.txt"]
    assert files[0].read_text() == files[1].read_text()
    assert (prepared / "ddp" / "model" / "model_config.json").is_file()


def test_epoch_metrics_match_scikit_learn_on_sparse_targets():
    """The loop passes validation targets as CSR: the figures equal scikit-learn's on the dense matrix."""
    import scipy.sparse as sp
    from sklearn.metrics import average_precision_score, f1_score

    from pipeline.training.worker import epoch_metrics

    rng = np.random.default_rng(0)
    y = (rng.random((300, 40)) < 0.1).astype(np.int8)
    y[:, 7] = 0  # a label without validation positives
    scores = np.clip(y * 0.35 + rng.random(y.shape) * 0.7, 0, 1).astype(np.float32)
    got = epoch_metrics(sp.csr_matrix(y), scores)
    pred = scores >= 0.5
    has = y.sum(0) > 0
    assert got["val_micro_f1"] == pytest.approx(f1_score(y, pred, average="micro", zero_division=0))
    assert got["val_macro_f1"] == pytest.approx(f1_score(y, pred, average="macro", zero_division=0))
    assert got["val_macro_ap"] == pytest.approx(average_precision_score(y[:, has], scores[:, has]))
    assert got == epoch_metrics(y, scores)
    assert got["val_tuned_macro_f1"] >= got["val_macro_f1"]


def test_head_lr_moves_the_head_at_its_own_rate():
    """With train.head_lr the head's parameters step at that rate and the encoder's at train.lr (Adam's first
    step moves each weight by about its lr); without it the optimizer keeps its two historical groups and
    fingerprints do not change."""
    from pipeline.modeling.encoder import train_wordpiece_tokenizer
    from pipeline.modeling.model import build_model
    from pipeline.training.checkpoints import fingerprint
    from pipeline.training.worker import param_groups

    tok = train_wordpiece_tokenizer(["alpha beta gamma delta", "beta gamma epsilon"] * 20, vocab_size=40)
    torch.manual_seed(0)
    small = {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "intermediate_size": 32, "dropout": 0.0}
    model = build_model(small, 5, tok)
    head = {id(p) for p in model.head.parameters()}

    plain = param_groups(model, 1e-3, None, 0.01)
    assert [g["weight_decay"] for g in plain] == [0.01, 0.0] and {g["lr"] for g in plain} == {1e-3}
    assert sorted(id(p) for g in plain for p in g["params"]) == sorted(id(p) for p in model.parameters())
    assert len(param_groups(model, 1e-3, 1e-3, 0.01)) == 2

    groups = param_groups(model, 1e-3, 3e-2, 0.01)
    assert sorted(id(p) for g in groups for p in g["params"]) == sorted(id(p) for p in model.parameters())
    assert {id(p) for g in groups if g["lr"] == 3e-2 for p in g["params"]} == head
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(groups, lr=1e-3)
    enc = tok(["alpha beta", "gamma epsilon delta"], padding=True, return_tensors="pt")
    logits = model(enc["input_ids"], enc["attention_mask"])
    torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.ones_like(logits)).backward()
    optimizer.step()
    step = {n: float((p.detach() - before[n]).abs().max()) for n, p in model.named_parameters()}
    assert step["head.bias"] == pytest.approx(3e-2, rel=0.05)
    assert step["head.weight"] == pytest.approx(3e-2, rel=0.05)
    assert step["encoder.embeddings.word_embeddings.weight"] == pytest.approx(1e-3, rel=0.05)

    base = load_config(None, [])
    tuned = load_config(None, ["train.head_lr=3e-2"])
    assert "head_lr" not in base.train.identity(set()) and tuned.train.identity(set())["head_lr"] == 3e-2
    assert fingerprint(base, ["a"], {}, tok) != fingerprint(tuned, ["a"], {}, tok)


def _trained_head_norm(setting: str) -> float:
    """Norm of a linear head's weights after 3 epochs of the head trainer (BCE, lr 0.05) with `setting`, on
    64 random 8-feature rows whose first 3 features give 3 labels."""
    import scipy.sparse as sp

    from pipeline.training.embeddings import HeadData
    from pipeline.training.head_train import train_head

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype(np.float32)
    y = (x[:, :3] > 0.5).astype(np.int8)
    data = HeadData(x, sp.csr_matrix(y))
    cfg = load_config(None, [setting, "train.epochs=3", "train.lr=0.05", "loss.name=bce"])
    torch.manual_seed(0)
    states: list = []
    train_head(cfg, data, data, y.sum(0).tolist(), 64, {}, report=lambda e, m, s, out=states: out.append(s))
    return float(states[-1]["head"]["1.weight"].norm())


def test_head_l2_is_a_per_label_penalty_on_the_heads_matrices():
    """The gradient of l2 / C x |W|^2 over the head's matrices only (no bias), added in place to what the
    loss left (or to nothing); 0 adds nothing; part of the training identity only when set; in training it
    shrinks the weights."""

    from pipeline.modeling.lexical import LexicalClassifier
    from pipeline.training.worker import add_head_l2_grad

    model = LexicalClassifier(num_features=6, num_labels=3)
    with torch.no_grad():
        model.head.bag.weight.copy_(torch.arange(18, dtype=torch.float32).reshape(6, 3))
        model.head.bias.fill_(100.0)
    weight = model.head.bag.weight
    # The autograd gradient of the penalty in the objective, which the in-place one replaces.
    expected = torch.autograd.grad((0.3 / 3) * weight.pow(2).sum(), weight)[0]
    np.testing.assert_allclose(expected, 2 * 0.3 / 3 * weight.detach())
    add_head_l2_grad(model.head, 0.3, 3)  # no gradient yet
    np.testing.assert_allclose(weight.grad, expected)
    assert model.head.bias.grad is None
    ids, weights = torch.tensor([[1, 4]]), torch.tensor([[0.5, 2.0]])
    model.zero_grad(set_to_none=True)
    model(ids, weights).sum().backward()
    from_loss = weight.grad.clone()
    add_head_l2_grad(model.head, 0.3, 3)
    np.testing.assert_allclose(weight.grad, from_loss + expected, rtol=1e-6)
    before = weight.grad.clone()
    add_head_l2_grad(model.head, 0.0, 3)
    assert torch.equal(weight.grad, before)
    weight.requires_grad_(False)  # a frozen matrix is left alone, as autograd would leave it
    weight.grad = None
    add_head_l2_grad(model.head, 0.3, 3)
    assert weight.grad is None

    assert "l2" not in load_config(None, []).train.identity(set())
    assert load_config(None, ["train.l2=1e-6"]).train.identity(set())["l2"] == 1e-6

    norms = [_trained_head_norm(f"train.l2={l2}") for l2 in (0.0, 10.0)]
    assert norms[1] < 0.5 * norms[0], norms


def test_adam_eps_reaches_the_optimizer_and_the_identity_only_when_set():
    """train.adam_eps is AdamW's eps (a large one damps every step), and part of the training identity
    only away from torch's default."""
    from pipeline.core.config import DEFAULT_ADAM_EPS

    assert DEFAULT_ADAM_EPS == torch.optim.AdamW([torch.zeros(1, requires_grad=True)]).defaults["eps"]
    assert "adam_eps" not in load_config(None, []).train.identity(set())
    assert load_config(None, ["train.adam_eps=1e-12"]).train.identity(set())["adam_eps"] == 1e-12
    with pytest.raises(ValueError, match="adam_eps"):
        load_config(None, ["train.adam_eps=0"])

    norms = [_trained_head_norm(f"train.adam_eps={eps}") for eps in (1e-8, 10.0)]
    assert norms[1] < 0.25 * norms[0], norms  # eps = 10 leaves the head near its initial weights


def test_adamw_is_fused_and_updates_as_the_default_kernel():
    """The training loops' AdamW runs torch's fused kernel: the same update per weight as the default
    (decoupled decay included), to float rounding."""
    from pipeline.training.worker import adamw

    torch.manual_seed(0)
    start = torch.randn(50, 7)
    grads = [torch.randn(50, 7) for _ in range(5)]
    weights = []
    for make in (
        lambda p: adamw([p], lr=0.1, eps=1e-8, weight_decay=0.01),
        lambda p: torch.optim.AdamW([p], lr=0.1, eps=1e-8, weight_decay=0.01),
    ):
        p = torch.nn.Parameter(start.clone())
        opt = make(p)
        for g in grads:
            p.grad = g.clone()
            opt.step()
        weights.append(p.detach())
    assert adamw([torch.nn.Parameter(start)], lr=0.1, eps=1e-8).defaults["fused"] is True
    assert not torch.equal(weights[0], start)
    np.testing.assert_allclose(weights[0], weights[1], rtol=1e-5, atol=1e-6)


def test_progress_lines_are_time_based_and_rank_zero_only(monkeypatch, capsys):
    """Inside an epoch a line at most every `train.progress_seconds` (a fake clock: 10 s per step, 30 s
    apart), with step / total, samples/s, running loss and ETA; other ranks print nothing."""
    from pipeline.core import console
    from pipeline.training.worker import _Progress

    now = [1000.0]
    monkeypatch.setattr(console.time, "perf_counter", lambda: now[0])
    lead = _Progress(epochs=2, batches=10, world=2, seconds=30, rank=0)
    other = _Progress(epochs=2, batches=10, world=2, seconds=30, rank=1)
    for epoch in range(2):
        lead.start(epoch)
        other.start(epoch)
        for step in range(1, 11):
            now[0] += 10.0
            lead.step(step, rows=32 * step, loss_sum=0.5 * 32 * step)
            other.step(step, rows=32 * step, loss_sum=0.5 * 32 * step)
        now[0] += 20.0  # validation; then the line after the epoch restarts the clock
        lead.said()
    tail = "samples/s loss 0.5000 epoch ETA"
    assert capsys.readouterr().out.splitlines() == [
        f"[train] epoch 1/2 step 3/10 6 {tail} 70s, run ETA 170s (without validation)",
        f"[train] epoch 1/2 step 6/10 6 {tail} 40s, run ETA 140s (without validation)",
        f"[train] epoch 1/2 step 9/10 6 {tail} 10s, run ETA 110s (without validation)",
        f"[train] epoch 2/2 step 3/10 6 {tail} 70s, run ETA 70s (without validation)",
        f"[train] epoch 2/2 step 6/10 6 {tail} 40s, run ETA 40s (without validation)",
        f"[train] epoch 2/2 step 9/10 6 {tail} 10s, run ETA 10s (without validation)",
    ]


def test_a_callers_sigint_handler_survives_fit_and_default_handling_is_left_to_train():
    """Train V2's fit() installs a SIGINT handler that exits 0 and never restores the caller's: the jobs'
    handler must stay (Ctrl-C -> exit 130 and the resume line); a plain script keeps Train's abort."""
    from pipeline.training.train import keep_sigint_handler

    class Trainer:
        def _register_sigint_handler(self, controller) -> None:
            raise AssertionError("Train's handler was installed")

    previous = signal.getsignal(signal.SIGINT)
    try:
        signal.signal(signal.SIGINT, lambda signum, frame: None)
        job = Trainer()
        keep_sigint_handler(job)
        job._register_sigint_handler(None)  # now a no-op
        signal.signal(signal.SIGINT, signal.default_int_handler)
        plain = Trainer()
        keep_sigint_handler(plain)
        with pytest.raises(AssertionError):
            plain._register_sigint_handler(None)
    finally:
        signal.signal(signal.SIGINT, previous)


def test_resume_takes_the_newer_of_rays_record_and_the_newest_folder(tmp_path):
    """Stopped after a checkpoint's upload but before Ray registered it: Ray's record is an epoch behind."""
    from ray.train import Checkpoint

    from pipeline.training.checkpoints import META_FILE, newer_checkpoint

    def made(name: str, epoch: int) -> Checkpoint:
        (tmp_path / name).mkdir()
        (tmp_path / name / META_FILE).write_text(json.dumps({"epoch": epoch}))
        return Checkpoint.from_directory(str(tmp_path / name))

    rays, folder = made("a", 1), made("b", 2)
    assert newer_checkpoint(rays, folder).path == folder.path
    assert newer_checkpoint(folder, rays).path == folder.path
    assert newer_checkpoint(rays, None).path == rays.path
    assert newer_checkpoint(None, None) is None


class _RunsCode:
    """A pickled object whose loading would run code: here, create a file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_best_weights_are_stored_once_when_the_epoch_is_the_best(tmp_path):
    """A checkpoint of an improving epoch stores the weights once (best_weights names its model); one of a
    later, worse epoch carries the best epoch's own copy. Both read back as tensors."""
    from pipeline.training.checkpoints import BEST_IS_MODEL, save_state

    model = {"w": torch.ones(2, 2)}
    best = {"w": torch.zeros(2, 2)}
    for name, stored, expected in (("now", BEST_IS_MODEL, model), ("earlier", best, best)):
        (tmp_path / name).mkdir()
        save_state(tmp_path / name, {"model": model, "best_weights": stored}, {"epoch": 0})
        saved = read_state(tmp_path / name / STATE_FILE)
        assert torch.equal(best_weights(saved)["w"], expected["w"])
    assert (tmp_path / "now" / STATE_FILE).stat().st_size < (tmp_path / "earlier" / STATE_FILE).stat().st_size


def test_a_checkpoint_holding_a_pickled_object_is_refused(tmp_path):
    """Checkpoints are read as tensors and plain data: a state file with any other pickled object (anyone
    who can write to the run's storage could plant one) is refused before its code runs."""
    from ray.train import Checkpoint

    from pipeline.core.errors import CheckpointError
    from pipeline.training.checkpoints import load_state, save_state

    good = tmp_path / "good"
    good.mkdir()
    save_state(good, {"model": {"w": torch.ones(2)}, "state": {"epoch": 1, "history": [{"f1": 0.5}]}}, {})
    assert load_state(Checkpoint.from_directory(str(good)))["state"]["epoch"] == 1

    bad = tmp_path / "bad"
    bad.mkdir()
    marker = tmp_path / "code-ran"
    torch.save({"model": {"w": torch.ones(2)}, "state": _RunsCode(str(marker))}, bad / STATE_FILE)
    with pytest.raises(CheckpointError, match="refused: it holds objects other than tensors and plain data"):
        load_state(Checkpoint.from_directory(str(bad)))
    assert not marker.exists()


def test_resume_skips_a_checkpoint_whose_state_file_was_cut_short(tmp_path):
    """A disk that filled while the last checkpoint was copied left a whole meta file beside a truncated
    state file; every restart then failed loading it. Resuming takes the newest checkpoint whose state file
    has the size its meta file records (checkpoints without a recorded size need only the file, as before)."""
    from pipeline.core.storage import locate
    from pipeline.training.checkpoints import (
        META_FILE,
        STATE_BYTES,
        checkpoint_meta,
        latest_checkpoint,
        save_state,
    )

    root = tmp_path / "checkpoints"
    for name, epoch in (("checkpoint_2026-01-01_00-00-01", 0), ("checkpoint_2026-01-01_00-00-02", 1)):
        (root / name).mkdir(parents=True)
        save_state(root / name, {"model": {"w": torch.full((64,), float(epoch))}}, {"epoch": epoch})
    newest = root / "checkpoint_2026-01-01_00-00-02"
    meta = json.loads((newest / META_FILE).read_text())
    assert meta[STATE_BYTES] == (newest / STATE_FILE).stat().st_size
    assert checkpoint_meta(latest_checkpoint(locate(str(root))))["epoch"] == 1
    data = (newest / STATE_FILE).read_bytes()
    (newest / STATE_FILE).write_bytes(data[: len(data) // 2])  # the copy cut short
    found = latest_checkpoint(locate(str(root)))
    assert (
        checkpoint_meta(found)["epoch"] == 0
        and read_state(Path(found.path) / STATE_FILE)["model"]["w"][0] == 0
    )
    (newest / META_FILE).write_text(json.dumps({"epoch": 1}))  # written before sizes were recorded
    assert checkpoint_meta(latest_checkpoint(locate(str(root))))["epoch"] == 1
