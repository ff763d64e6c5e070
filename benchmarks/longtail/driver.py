"""The long-tail benchmark's driver: per dataset, prepare once, then every own row through the stages and
every peer row on the same split; one JSON document with a flat `rows` list."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from benchmarks import longtail as package
from benchmarks.common.machine import load_average
from benchmarks.common.measure import MIB, PeakRSS
from benchmarks.common.paths import RESULTS, ROOT
from benchmarks.common.provenance import git_sha, run_header, utc_now
from benchmarks.common.ray_session import benchmark_ray
from benchmarks.common.results import write_json
from benchmarks.common.runs import copy_prepared, share_features
from benchmarks.corpora import data_root
from benchmarks.longtail.peers import (
    PECOS_BEAM_SIZE,
    PECOS_TOP_K,
    PEERS,
    SplitText,
    pecos_version,
    peer_rows,
    peer_unavailable,
    tfidf,
)

CONFIGS = ROOT / "benchmarks" / "configs" / "longtail"
DATASETS = ("eurlex57k", "reuters21578", "goemotions", "synthetic-7900")
SMOKE = "smoke"
DEFAULT_OUT = RESULTS / "longtail.json"
VERSIONED = (
    "torch",
    "ray",
    "scikit-learn",
    "numpy",
    "scipy",
    "libmultilabel",
    "liblinear-multicore",
    "napkinxc",
)
#: The fields of every row, in order.
FIELDS = (
    "dataset",
    "row",
    "device",
    "seed",
    "micro_f1",
    "macro_f1",
    "tail_f1",
    "macro_ap",
    "p_at_1",
    "p_at_5",
    "ndcg_at_5",
    "psp_at_5",
    "predicted_to_true",
    "train_seconds",
    "peak_rss_mb",
)
log = logging.getLogger("benchmarks.longtail")


@dataclass
class Bench:
    """One dataset's benchmark config: the pipeline config's YAML and the `bench:` section."""

    key: str
    dataset: str | None  # folder in the corpora folder; None: the synthetic corpus
    pipeline: dict[str, Any]
    rows: dict[str, list[str]]
    peers: list[str]
    #: Seeds the own rows run with (`bench.seeds`; default: the config's run.seed), but those of `row_seeds`.
    seeds: list[int]
    #: Rows that evaluate another row's trained model with other `evaluate.*` settings: {row: source row}.
    model_of: dict[str, str] = field(default_factory=dict)
    #: Rows that run the tune stage first and train with its best_params.yaml.
    tuned: set[str] = field(default_factory=set)
    #: Rows with seeds of their own (`seeds:` of a tune row: a search per seed), in place of `seeds`.
    row_seeds: dict[str, list[int]] = field(default_factory=dict)
    #: `bench.peer_thresholds`: {suffix: [evaluate.* overrides]}: every peer's scores also decided by our
    #: per-label thresholds fitted on its validation scores (the config's evaluate settings plus these), as
    #: row `<peer>+<suffix>`.
    peer_thresholds: dict[str, list[str]] = field(default_factory=dict)
    #: `bench.pecos_top_k`: labels PECOS returns per document (its rows record it); more than the most
    #: labels a document holds, or its recall is capped.
    pecos_top_k: int = PECOS_TOP_K
    #: `bench.pecos_beam_size`: the width of PECOS's beam search (its rows record it).
    pecos_beam_size: int = PECOS_BEAM_SIZE

    def seeds_of(self, row: str) -> list[int]:
        """The seeds `row` runs with: its own, its source's for a `model_of` row, else the config's."""
        return self.row_seeds.get(self.model_of.get(row, row), self.seeds)


def _seeds(path: Path, where: str, raw: Any) -> list[int]:
    seeds = [int(x) for x in raw]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"{path}: {where} must list distinct seeds, got {raw}")
    return seeds


def _parse_rows(
    path: Path, raw: dict[str, Any]
) -> tuple[dict[str, list[str]], dict[str, str], set[str], dict[str, list[int]]]:
    """`bench.rows`: {row: [overrides]} trains a model; {row: {tune: [overrides], seeds: [...]}} runs the
    tune stage (the overrides set tune.*) and trains with its best parameters, once per seed of its own
    `seeds` (optional: a search costs many trainings); {row: {model_of: <earlier row>, set: [evaluate.*]}}
    re-evaluates that row's model (same seeds) with other evaluate settings (thresholds, ranking), without
    training again."""
    rows: dict[str, list[str]] = {}
    model_of: dict[str, str] = {}
    tuned: set[str] = set()
    row_seeds: dict[str, list[int]] = {}
    for name, spec in raw.items():
        name = str(name)
        if isinstance(spec, dict) and "tune" in spec:
            unknown = sorted(set(spec) - {"tune", "seeds"})
            if unknown:
                raise ValueError(f"{path}: row {name}: expected {{tune: [...], seeds: [...]}}, got {spec}")
            rows[name] = [str(s) for s in spec["tune"] or []]
            tuned.add(name)
            if "seeds" in spec:
                row_seeds[name] = _seeds(path, f"row {name}: seeds", spec["seeds"] or [])
        elif isinstance(spec, dict):
            unknown = sorted(set(spec) - {"model_of", "set"})
            if unknown or "model_of" not in spec:
                raise ValueError(f"{path}: row {name}: expected {{model_of: <row>, set: [...]}}, got {spec}")
            source = str(spec["model_of"])
            if source not in rows or source in model_of:
                raise ValueError(
                    f"{path}: row {name}: model_of must name an earlier training row, got {source}"
                )
            overrides = [str(s) for s in spec.get("set") or []]
            if any(not o.startswith("evaluate.") for o in overrides):
                raise ValueError(
                    f"{path}: row {name}: a model_of row may only set evaluate.* keys: {overrides}"
                )
            rows[name] = [*rows[source], *overrides]
            model_of[name] = source
        else:
            rows[name] = [str(s) for s in (spec or [])]
    return rows, model_of, tuned, row_seeds


def _peer_thresholds(path: Path, raw: Any) -> dict[str, list[str]]:
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: bench.peer_thresholds must map a row suffix to evaluate.* overrides")
    out = {str(k): [str(o) for o in v or []] for k, v in raw.items()}
    for suffix, overrides in out.items():
        if not suffix or not all(c.isalnum() or c in "-_." for c in suffix):
            raise ValueError(f"{path}: bench.peer_thresholds: bad row suffix {suffix!r}")
        if any(not o.startswith("evaluate.") for o in overrides):
            raise ValueError(
                f"{path}: bench.peer_thresholds.{suffix} may only set evaluate.* keys: {overrides}"
            )
    return out


def load_bench(path: Path) -> Bench:
    raw = yaml.safe_load(path.read_text()) or {}
    bench = raw.pop("bench", None) or {}
    known = {"dataset", "rows", "peers", "seeds", "peer_thresholds", "pecos_top_k", "pecos_beam_size"}
    unknown = sorted(set(bench) - known)
    if unknown:
        raise ValueError(f"{path}: unknown keys in bench: {unknown}")
    rows, model_of, tuned, row_seeds = _parse_rows(path, bench.get("rows") or {})
    peers = [str(p) for p in bench.get("peers") or []]
    for p in peers:
        peer_unavailable(p)  # an unknown name fails here, before any work
    if not rows and not peers:
        raise ValueError(f"{path}: bench.rows and bench.peers are both empty")
    seed = int((raw.get("run") or {}).get("seed", 0))
    seeds = _seeds(path, "bench.seeds", bench.get("seeds") or [seed])
    peer_thresholds = _peer_thresholds(path, bench.get("peer_thresholds") or {})
    pecos = {
        key: bench.get(key, default)
        for key, default in (("pecos_top_k", PECOS_TOP_K), ("pecos_beam_size", PECOS_BEAM_SIZE))
    }
    for key, value in pecos.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{path}: bench.{key} must be an integer >= 1, got {value!r}")
    return Bench(
        path.stem,
        bench.get("dataset"),
        raw,
        rows,
        peers,
        seeds,
        model_of,
        tuned,
        row_seeds,
        peer_thresholds,
        pecos["pecos_top_k"],
        pecos["pecos_beam_size"],
    )


def row_config(bench: Bench, work: Path, corpora: Path, name: str, overrides: list[str]) -> Any:
    """The pipeline Config of run `name` of this dataset (a row, or `base` for the shared preparation).
    `{corpora}` in an override stands for the corpora folder (--data-root), e.g. for a label names file."""
    from pipeline.core.config import Config, apply_overrides

    overrides = [o.replace("{corpora}", str(corpora)) for o in overrides]
    raw = apply_overrides(bench.pipeline, [f"run.output={work / bench.key}", f"run.name={name}", *overrides])
    if bench.dataset:
        raw.setdefault("data", {})["source"] = str(corpora / bench.dataset)
    return Config.model_validate(raw)


def flat_row(doc: dict[str, Any]) -> dict[str, Any]:
    """The row's figures from an evaluation document (`metrics.evaluate`, or the report's metrics.json)."""
    overall = doc["overall"]
    precision, recall = overall.get("micro_precision"), overall.get("micro_recall")
    tail = (doc.get("groups") or {}).get("tail") or {}
    return {
        "micro_f1": overall["micro_f1"],
        "macro_f1": overall["macro_f1"],
        "tail_f1": tail.get("macro_f1") if tail.get("n_labels", 1) else None,
        "macro_ap": overall.get("macro_ap"),
        "p_at_1": overall.get("p_at_1"),
        "p_at_5": overall.get("p_at_5"),
        "ndcg_at_5": overall.get("ndcg_at_5"),
        "psp_at_5": overall.get("psp_at_5"),
        # predicted / true = (TP / true) / (TP / predicted).
        "predicted_to_true": recall / precision if precision else None,
        **_zero_shot_fields(doc),
    }


def _zero_shot_fields(doc: dict[str, Any]) -> dict[str, Any]:
    """The zero-shot group's figures (labels only outside train), when the test set has any."""
    z = (doc.get("groups") or {}).get("zero-shot") or {}
    if not z.get("n_labels"):
        return {}
    return {
        "zero_shot_labels": z["n_labels"],
        "zero_shot_scored": bool(z.get("scored_from_names")),
        "zero_shot_recall": z.get("micro_recall"),
        "zero_shot_p_at_5": z.get("p_at_5"),
        "zero_shot_recall_at_5": z.get("recall_at_5"),
        "micro_f1_with_zero_shot": doc["overall"].get("micro_f1_with_zero_shot"),
        "zero_shot_predicted_pairs": z.get("predicted_pairs"),
        # Where the names' decision threshold was chosen (label_names.fit_calibration): unseen or seen labels.
        "zero_shot_threshold_from": ((doc.get("extra") or {}).get("label_names") or {})
        .get("calibration", {})
        .get("threshold_from"),
    }


#: The commit this process started from: its modules were imported then, whatever HEAD is when a row ends.
STARTED_AT_SHA = git_sha()


def stamp() -> dict[str, Any]:
    """Which code measured a row, and when (rows of several invocations can share one file)."""
    return {"git_sha": STARTED_AT_SHA, "measured": utc_now()}


def run_name(bench: Bench, row: str, seed: int) -> str:
    """The row's run folder: the row's name, with the seed unless it is the config's run.seed."""
    return row if seed == int((bench.pipeline.get("run") or {}).get("seed", 0)) else f"{row}-seed{seed}"


#: Beside a trained row's model: the seconds its training took, for the rows that evaluate that model later.
TRAIN_SECONDS = "train_seconds.json"


def source_train_seconds(source_dir: Path, kept: float | None) -> float | None:
    """Training seconds of the model in `source_dir`: its own record, else `kept` (the source row's figure in
    this invocation or the kept results; a work folder's model may have been trained again since a kept row
    was measured, so the record comes first)."""
    record = source_dir / TRAIN_SECONDS
    return json.loads(record.read_text())["seconds"] if record.is_file() else kept


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)  # a model can be GBs: the re-evaluated row shares its files
    except OSError:
        shutil.copy2(src, dst)


def own_row(
    bench: Bench,
    work: Path,
    corpora: Path,
    row: str,
    overrides: list[str],
    seed: int,
    trained_seconds: dict[tuple[str, int], float | None] | None = None,
) -> dict[str, Any]:
    """Train and evaluate one row in a run of its own that shares the dataset's prepared splits; a
    `model_of` row evaluates its source row's model instead (its train_seconds are the source's: recorded
    beside that model, else looked up in `trained_seconds` by (row, seed))."""
    from pipeline.core.config import apply_params
    from pipeline.evaluation.evaluate import run_evaluate
    from pipeline.training.train import run_train
    from pipeline.training.tune import run_tune

    name = run_name(bench, row, seed)
    cfg = row_config(bench, work, corpora, name, [*overrides, f"run.seed={seed}"])
    run_dir = work / bench.key / name
    if not (run_dir / "label_stats.json").exists():
        copy_prepared(work / bench.key / "base", run_dir)
    source = bench.model_of.get(row)
    with PeakRSS() as rss_train:
        t0 = time.perf_counter()
        best_params = None
        if source is None:
            if row in bench.tuned:  # as run_all --tune: the search, then the train stage with its best
                best_params = run_tune(cfg)
                cfg = apply_params(cfg, best_params)
            (run_dir / TRAIN_SECONDS).unlink(missing_ok=True)  # an earlier training's, until this one ends
            history = run_train(cfg)["history"]
            train_seconds: float | None = time.perf_counter() - t0
            (run_dir / TRAIN_SECONDS).write_text(json.dumps({"seconds": round(train_seconds, 2)}))
        else:
            model = work / bench.key / run_name(bench, source, seed) / "model"
            if not (model / "model_config.json").is_file():
                raise FileNotFoundError(f"row {row} evaluates the model of row {source}: {model} is absent")
            shutil.rmtree(run_dir / "model", ignore_errors=True)
            shutil.copytree(model, run_dir / "model", copy_function=_link_or_copy)
            history = json.loads((model / "model_config.json").read_text())["training"]["history"]
            train_seconds = source_train_seconds(model.parent, (trained_seconds or {}).get((source, seed)))
    with PeakRSS() as rss_evaluate:  # a window of its own: the evaluate driver's peak (issue #25)
        t0 = time.perf_counter()
        doc = run_evaluate(cfg)
        evaluate_seconds = time.perf_counter() - t0
    # Featurizers are fitted and splits featurised once per dataset and settings: later rows find them.
    share_features(run_dir, work / bench.key / "base")
    if source is None:
        # The row is measured and its model is in run_dir/model; its checkpoints only resume its training
        # (an EURLEX57K row's: 4.6-11 GB of weights and AdamW state), and a few rows' filled the disk.
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    out = flat_row(doc)
    out.update(
        device="gpu" if cfg.train.use_gpu else "cpu",
        seed=cfg.run.seed,
        train_seconds=None if train_seconds is None else round(train_seconds, 2),
        peak_rss_mb=round(max(rss_train.tree, rss_evaluate.tree) / MIB),
        evaluate_seconds=round(evaluate_seconds, 1),
        peak_rss_driver_mb=round(max(rss_train.driver, rss_evaluate.driver) / MIB),
        evaluate_peak_rss_driver_mb=round(rss_evaluate.driver / MIB),
        epochs_run=len(history),
        settings={"kind": cfg.model.kind, "loss": cfg.loss.name, "overrides": overrides},
    )
    if source is not None:
        out["model_of"] = source
    if best_params is not None:  # train_seconds include the search
        out["best_params"] = best_params
    return out


def run_dataset(
    bench: Bench, work: Path, corpora: Path, only: set[str] | None, kept: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    from pipeline.data.prepare import run_prepare

    base = row_config(bench, work, corpora, "base", [])
    base_dir = work / bench.key / "base"
    record = work / bench.key / "prepare_seconds.json"
    if not (base_dir / "label_stats.json").exists():
        t0 = time.perf_counter()
        run_prepare(base)
        record.write_text(json.dumps({"seconds": round(time.perf_counter() - t0, 1)}))
    # Reused from an earlier invocation on the same --work-dir: the seconds it took then.
    prepare_seconds = json.loads(record.read_text())["seconds"] if record.exists() else None
    stats = json.loads((base_dir / "label_stats.json").read_text())
    rows: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    # Training time of each (row, seed): for the model_of rows, from this invocation or the kept results.
    trained = {
        (r["row"], r.get("seed")): r.get("train_seconds") for r in kept or [] if r["dataset"] == bench.key
    }
    for row, overrides in bench.rows.items():
        if only and row not in only:
            continue
        for seed in bench.seeds_of(row):
            log.info("%s %s seed %d: training and evaluating", bench.key, row, seed)
            result = own_row(bench, work, corpora, row, overrides, seed, trained)
            trained[(row, seed)] = result["train_seconds"]
            rows.append({"dataset": bench.key, "row": row, **result, **stamp()})
            log.info("%s", rows[-1])
    peers = [p for p in bench.peers if not only or p in only]
    if peers:
        from pipeline.core.layout import RunLayout

        labels = stats["labels"]
        counts = np.array([stats["label_counts"][lab]["train"] for lab in labels])
        run = RunLayout.of(base)
        train, test = SplitText(run, "train", labels), SplitText(run, "test", labels)
        validation = SplitText(run, "validation", labels) if bench.peer_thresholds else None
        features = tfidf(train, test, *([validation] if validation else []))
        prior = counts / max(int(stats["documents"]["train"]), 1)
        thresholders = {
            suffix: _thresholder(row_config(bench, work, corpora, "base", overrides).evaluate, labels, prior)
            for suffix, overrides in bench.peer_thresholds.items()
        }

        def measure(y, pred, scores) -> dict[str, Any]:
            return measured(stats, base.evaluate, y, pred, scores, labels, counts)

        for row in peers:
            reason = peer_unavailable(row)
            if reason:
                skipped[row] = reason
                print(f"{bench.key} {row} skipped: {reason}", flush=True)
                continue
            log.info("%s %s: fitting", bench.key, row)
            results = peer_rows(
                row,
                train,
                test,
                features,
                measure,
                base.run.seed,
                validation,
                thresholders,
                pecos_top_k=bench.pecos_top_k,
                pecos_beam_size=bench.pecos_beam_size,
            )
            for name, result in results.items():
                rows.append(
                    {
                        "dataset": bench.key,
                        "row": name,
                        "device": "cpu",
                        "seed": base.run.seed,
                        **result,
                        **stamp(),
                    }
                )
                log.info("%s", rows[-1])
    return {
        "rows": [
            {k: r.get(k) for k in FIELDS} | {k: v for k, v in r.items() if k not in FIELDS} for r in rows
        ],
        "skipped": skipped,
        "dataset": {
            "source": f"<corpora folder>/{bench.dataset}" if bench.dataset else "synthetic",
            "documents": stats["documents"],
            "num_labels": stats["num_labels"],
            "groups": {k: stats["groups"][k] for k in ("head_min", "tail_max", "sizes")},
            "prepare_seconds": prepare_seconds,
            "config": bench.pipeline,
            "rows": bench.rows,
            "seeds": bench.seeds,
        },
    }


def measured(
    stats: dict[str, Any], ecfg: Any, y: Any, pred: Any, scores: Any, labels: list[str], counts: Any
) -> dict[str, Any]:
    """The flat row's figures of test decisions `pred` and `scores` on the columns `labels` (training counts
    `counts`), in the report's conventions: the prepared run's groups (`stats`: its label_stats.json) and
    the evaluate settings' propensities (`ecfg`)."""
    from pipeline.evaluation.metrics import evaluate

    doc = evaluate(
        y,
        pred,
        scores,
        labels,
        counts,
        head_min=stats["groups"]["head_min"],
        tail_max=stats["groups"]["tail_max"],
        n_train_docs=int(stats["documents"]["train"]),
        propensity_a=ecfg.propensity_a,
        propensity_b=ecfg.propensity_b,
    )
    return flat_row(doc)


def _thresholder(ecfg: Any, labels: list[str], prior: np.ndarray) -> tuple[Any, dict[str, Any]]:
    """The evaluate stage's threshold fit with `ecfg`'s settings, for a peer's validation scores."""
    from pipeline.evaluation.thresholds import fit_thresholds_with

    keys = ("threshold_strategy", "min_support", "shrinkage", "at_least_one", "fallback")
    settings = {k: getattr(ecfg, k) for k in keys}

    def fit(y_val: Any, s_val: np.ndarray) -> Any:
        return fit_thresholds_with(ecfg, y_val, s_val, labels, prior)

    return fit, {"fitted_on": "validation", **settings}


def _same(row: dict[str, Any], new: list[dict[str, Any]]) -> bool:
    key = (row["dataset"], row["row"], row.get("seed"))
    return any(key == (r["dataset"], r["row"], r.get("seed")) for r in new)


def _earlier(
    out: Path, only: set[str] | None, names: list[str], seeds: set[int] | None = None
) -> tuple[list[dict[str, Any]], dict]:
    """What an earlier result in `out` holds that this invocation does not measure again: the rows of other
    datasets, and with --rows (--seeds) the other rows (seeds) of these datasets (each with the `git_sha`
    and time it was measured at), plus the settings of every dataset not run now. Datasets, long rows and
    further seeds can so be measured one invocation at a time into one file."""
    if not out.is_file():
        return [], {}
    old = json.loads(out.read_text())
    rows = [
        {
            **r,
            "git_sha": r.get("git_sha", old.get("git_sha")),
            "measured": r.get("measured", old.get("started")),
        }
        for r in old.get("rows", [])
        if not (
            r["dataset"] in names
            and (only is None or r["row"].split("+")[0] in only)  # a peer's +thresholds rows with it
            and (seeds is None or r.get("seed") in seeds)
        )
    ]
    datasets = {k: v for k, v in (old.get("datasets") or {}).items() if k not in names}
    return rows, datasets


def with_cli(bench: Bench, seeds: list[int] | None, sets: list[str], corpora: Path) -> None:
    """--seeds (replacing the config's, a row's own included) and --set (appended to every own row's
    overrides), each row's config (and each peer_thresholds setting) then checked, so a bad override fails
    before any work."""
    if seeds:
        bench.seeds, bench.row_seeds = seeds, {}
    bench.rows = {row: [*overrides, *sets] for row, overrides in bench.rows.items()}
    for row, overrides in bench.rows.items():
        row_config(bench, Path(tempfile.gettempdir()), corpora, row, overrides)
    for overrides in bench.peer_thresholds.values():
        row_config(bench, Path(tempfile.gettempdir()), corpora, "base", overrides)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.longtail", description=package.__doc__.split("\n\n")[0]
    )
    parser.add_argument("--dataset", action="append", default=None, help=f"dataset(s) (default: {DATASETS})")
    parser.add_argument(
        "--rows", default=None, help="comma-separated rows to run (default: all of the config)"
    )
    parser.add_argument(
        "--seeds", default=None, help="comma-separated seeds of the own rows (default: each config's)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a pipeline override added to every own row (e.g. train.use_gpu=true)",
    )
    parser.add_argument("--smoke", action="store_true", help="the synthetic smoke config into a temp folder")
    parser.add_argument(
        "--out", default=None, help="results JSON (default: benchmarks/results/longtail.json)"
    )
    parser.add_argument("--data-root", default=str(data_root()), help="folder holding the datasets")
    parser.add_argument("--work-dir", default=None, help="kept and reused (default: a temporary folder)")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray (default 2)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    names = [SMOKE] if args.smoke else (args.dataset or list(DATASETS))
    benches = [load_bench(CONFIGS / f"{n}.yaml") for n in names]  # every config checked before any work
    only = set(args.rows.split(",")) if args.rows else None
    seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else None
    for bench in benches:
        with_cli(bench, seeds, args.set, Path(args.data_root))
    own_work = args.work_dir is None
    work = Path(tempfile.mkdtemp(prefix="bml-longtail-")) if own_work else Path(args.work_dir).resolve()
    out = Path(args.out) if args.out else (work / "longtail.json" if args.smoke else DEFAULT_OUT)
    if args.smoke and own_work and not args.out:
        out = Path(tempfile.mkdtemp()) / "longtail.json"
    corpora = Path(args.data_root)
    doc: dict[str, Any] = {
        **run_header("benchmarks.longtail", argv, VERSIONED, sha=STARTED_AT_SHA),
        "smoke": bool(args.smoke),
        "rows": [],
        "datasets": {},
        "skipped": {},
    }
    doc["versions"]["libpecos"] = pecos_version()  # in its own environment (make bench-pecos)
    kept, kept_datasets = _earlier(out, only, names, set(seeds) if seeds else None)
    doc["rows"].extend(kept)
    doc["datasets"].update(kept_datasets)
    t_start = time.perf_counter()
    try:
        # Ray gives a worker OMP_NUM_THREADS = floor(its CPUs): 1 for a 1.5-CPU training worker beside Ray
        # Data's 0.5. Torch in the worker and the scoring actor may use every core of this machine instead.
        # log_to_driver: the training workers' progress lines (a row runs for up to an hour) reach this log.
        # The dashboard serves the State API that Train V2's placement-group cleaner asks: without it the
        # workers of trials that ASHA stopped (tuned rows) stayed reserved (pipeline.core.cluster.ensure_ray).
        with benchmark_ray(
            args.num_cpus,
            env_defaults={"OMP_NUM_THREADS": str(args.num_cpus)},
            log_to_driver=True,
            include_dashboard=True,
        ):
            for bench in benches:
                if bench.dataset is not None and not (corpora / bench.dataset).is_dir():
                    reason = f"{corpora / bench.dataset} is absent: dataset '{bench.key}' skipped"
                    print(reason, flush=True)
                    doc["skipped"][bench.key] = reason
                    continue
                result = run_dataset(bench, work, corpora, only, kept)
                doc["rows"] = [r for r in doc["rows"] if not _same(r, result["rows"])] + result["rows"]
                doc["datasets"][bench.key] = result["dataset"]
                # With --seeds, the seeds measured now and those kept from an earlier invocation.
                result["dataset"]["seeds"] = sorted(
                    {r["seed"] for r in doc["rows"] if r["dataset"] == bench.key and r["row"] in bench.rows}
                )
                doc["skipped"].update({f"{bench.key}/{k}": v for k, v in result["skipped"].items()})
                write_json(out, {**doc, "complete": False})  # a later dataset failing keeps this one
    finally:
        if own_work:
            shutil.rmtree(work, ignore_errors=True)
    doc.update(finished=utc_now(), total_seconds=round(time.perf_counter() - t_start, 1))
    doc["load_average_after"] = load_average()
    doc["complete"] = True
    write_json(out, doc)
    for r in doc["rows"]:
        print(
            " ".join(f"{k}={r[k]:.4f}" if isinstance(r[k], float) else f"{k}={r[k]}" for k in FIELDS),
            flush=True,
        )
    print(f"wrote {out}", flush=True)
    doc["out"] = str(out)
    return doc


__all__ = ["FIELDS", "PEERS", "main"]
