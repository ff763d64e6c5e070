"""The evaluate stage: score validation and test with Ray Data, pick per-label thresholds on validation,
measure on test, and write predictions, thresholds and the report back to storage.

Labels of validation / test that never occur in train (prepare's `zero-shot` policy) have no score column:
thresholds ignore them, and on test they are counted apart as the zero-shot group (`metrics`), so
the vocabulary's figures are the same with or without them. With `evaluate.label_names`, those that have a
name are scored from it (`label_names`) and the group counts their predictions and ranking.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import socket
import time
from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray.data

from pipeline.core.config import Config, LabelNamesSection
from pipeline.core.errors import InputError
from pipeline.core.layout import MODEL_DESCRIBING_KEYS, RunLayout, require_evaluated
from pipeline.core.parquet_reader import read_parquet
from pipeline.core.progress import RowProgress
from pipeline.core.storage import (
    Location,
    delete_file,
    read_json,
    require_complete,
    staged_dir,
    write_bytes,
    write_json,
)
from pipeline.data.labels import outside_counts
from pipeline.data.prepare import PartFiles
from pipeline.evaluation import label_names
from pipeline.evaluation.blocks import ScoreBlocks, top_scores
from pipeline.evaluation.document import build_metrics_document, per_label_csv, summary_table
from pipeline.evaluation.html import render_html
from pipeline.evaluation.metrics import evaluate as compute_metrics
from pipeline.evaluation.metrics import inverse_propensities, score_figures
from pipeline.evaluation.plots import render_plots
from pipeline.evaluation.rank_adjust import adjusted_scores, choose_tau
from pipeline.evaluation.scoring import (
    DatasetBlocks,
    check_scoring_resources,
    decide,
    score_dataset,
    scored_blocks,
)
from pipeline.evaluation.thresholds import decision_counts, decisions, fit_thresholds_with

log = logging.getLogger(__name__)


SPLITS = ("validation", "test")


def _rows_of(table: pa.Table, split: str) -> pa.Table:
    """map_batches (pyarrow): the rows read from `prepared/<split>/`, without the path column."""
    paths = table.column("path")
    # .../prepared/<split>/part-*.parquet -> <split>
    folder = pc.replace_substring_regex(paths, pattern=r"^.*/prepared/([^/]+)/[^/]*$", replacement=r"\1")
    return table.filter(pc.equal(folder, split)).drop_columns(["path"])


def _zero_shot_positives(ds: ray.data.Dataset, labels: list[str]) -> dict[str, int]:
    """label -> documents holding it, for the labels of `ds` outside the model's vocabulary `labels`."""
    total: Counter[str] = Counter()
    for batch in ds.select_columns(["labels"]).iter_batches(batch_format="pyarrow", batch_size=65536):
        total.update(outside_counts(batch.column("labels"), labels))
    return dict(total)


def _require(loc: Location, stage: str) -> None:
    if not loc.exists():
        raise InputError(f"{loc.uri} not found: run the {stage} stage first")


def _rank_adjustment(
    ecfg: Any, y_val: Any, s_val: ScoreBlocks, prior: np.ndarray, train_counts: np.ndarray, n_train: int
) -> dict[str, Any]:
    """evaluate.rank_adjust as {"tau", "chosen": config | validation, "validation": [per-tau figures]}."""
    if ecfg.rank_adjust != "auto":
        return {"tau": float(ecfg.rank_adjust), "chosen": "config"}
    inv_ps = inverse_propensities(train_counts, max(n_train, 1), ecfg.propensity_a, ecfg.propensity_b)
    tau, table = choose_tau(y_val, s_val, prior, inv_ps)
    log.info("rank_adjust: tau %.3f chosen on validation (%s)", tau, table)
    return {"tau": tau, "chosen": "validation", "validation": table}


def _named_zero_shot(
    run: RunLayout,
    names: dict[str, str],
    labels: list[str],
    s_test: DatasetBlocks,
    n_positives: int,
    closed: tuple[int, int, int],
    section: LabelNamesSection,
) -> dict[str, Any]:
    """Scores of the named labels outside the vocabulary on test (pipeline.evaluation.label_names):
    {"scored": what metrics.evaluate counts, "record": what the report records}; `n_positives`: the test
    positives outside the vocabulary; `closed`: the model's (true positives, predicted, positives) on
    validation, against which the names' threshold is chosen."""
    scorer = label_names.load_scorer(run.model, section)
    unseen = label_names.unseen_named(names, labels)
    validation = run.prepared_split("validation")
    calibration = label_names.calibrate(scorer, names, labels, validation, unseen, closed)
    predicted, hits, ranking = label_names.score_unseen(
        scorer,
        names,
        unseen,
        calibration,
        run.prepared_split("test"),
        [str(x) for x in s_test.ids.to_pylist()],
        top_scores(s_test, label_names.TOP),
    )
    log.info(
        "label names: %d unseen named label(s) scored; threshold %.4g chosen on validation's %s labels "
        "(name-only F1 %.3f; validation micro-F1 %s without name predictions, %s with); test: %d of %d "
        "unseen positive(s) predicted, P@5 %s, recall@5 %s",
        len(unseen),
        calibration.threshold,
        calibration.threshold_from,
        calibration.validation_f1,
        calibration.closed_micro_f1,
        calibration.micro_f1_with_names,
        sum(hits.values()),
        n_positives,
        ranking["p_at_5"],
        ranking["recall_at_5"],
    )
    record = {
        "named_labels": len(names),
        "named_in_vocabulary": len(labels) - len(set(labels) - set(names)),
        "unseen_scored": len(unseen),
        "similarity": {"encoder": section.encoder, "encoder_weight": scorer.weight},
        "calibration": calibration.to_dict(),
    }
    return {"scored": {"predicted": predicted, "hits": hits, "ranking": ranking}, "record": record}


def run_evaluate(cfg: Config, compare: str | None = None) -> dict[str, Any]:
    """Returns the metrics document written to `report/metrics.json`."""
    t0 = time.perf_counter()
    ecfg = cfg.evaluate
    run = RunLayout.of(cfg)
    _require(run.label_stats, "prepare")
    _require(run.model_config, "train")
    stats = read_json(run.label_stats)
    model_cfg = read_json(run.model_config)
    labels: list[str] = model_cfg["labels"]
    if labels != stats["labels"]:
        raise InputError(f"{run.uri}: the model's label vocabulary differs from label_stats.json; retrain")
    train_counts = np.array([stats["label_counts"][lab]["train"] for lab in labels])
    check_scoring_resources(ecfg, "evaluate")
    if run.evaluating.exists():
        log.warning(
            "the last evaluate of %s was interrupted while it replaced its outputs (%s is left); this one "
            "replaces them all",
            run.uri,
            run.evaluating.uri,
        )
    names: dict[str, str] = {}
    if ecfg.label_names.source is not None:  # read and checked before any scoring
        label_names.check_kind(str(model_cfg.get("kind", "encoder")))
        label_names.check_encoder(ecfg.label_names)
        names = label_names.read_label_names(ecfg.label_names, cfg.storage)

    require_complete(run.prepared, "prepare")
    # Both splits through one actor pool (one model load per actor), told apart by their file paths.
    both = read_parquet(
        [run.prepared_split(split).path for split in SPLITS], filesystem=run.fs, include_paths=True
    )
    total = sum(int(stats["documents"][split]) for split in SPLITS)
    with RowProgress(total, "evaluate") as progress:
        scored_both = score_dataset(
            both.select_columns(["id", "text", "labels", "path"]),
            run.model.address,  # scoring actors need not share the driver's working directory
            cfg.storage,
            settings=ecfg,
            counter=progress.counter,
        ).materialize()
    scored = {
        split: scored_both.map_batches(_rows_of, batch_format="pyarrow", fn_args=(split,)).materialize()
        for split in SPLITS
    }
    for split, ds in scored.items():
        log.info("scored %s: %d rows", split, ds.count())

    # Labels on the driver (sparse); scores read block by block from the object store on each pass.
    y_val, s_val = scored_blocks(scored["validation"], labels, ignore_unknown=True)
    n_train = int(stats["documents"]["train"])
    prior = train_counts / max(n_train, 1)  # training prevalence: fallback thresholds, ranking adjustment
    thr = fit_thresholds_with(ecfg, y_val, s_val, labels, prior)
    thr_doc = thr.to_json_dict()
    thr_doc["provenance"] = {
        "run": cfg.run.name,
        "fitted_on": "validation",
        "documents": y_val.shape[0],
        "model_id": model_cfg.get("model_id"),  # predict refuses these thresholds for another model
    }

    y_test, s_test = scored_blocks(scored["test"], labels, ignore_unknown=True)
    zero_shot = _zero_shot_positives(scored["test"], labels)
    if zero_shot:
        log.info(
            "test holds %d zero-shot label(s) with %d positive(s) outside the vocabulary",
            len(zero_shot),
            sum(zero_shot.values()),
        )
    pred_test = decisions(s_test, thr.thresholds, thr.at_least_one)
    rank = _rank_adjustment(ecfg, y_val, s_val, prior, train_counts, n_train)
    named = None
    if names:
        tp_v, fp_v = decision_counts(y_val, s_val, thr.thresholds, thr.at_least_one)
        closed = (int(tp_v.sum()), int(tp_v.sum() + fp_v.sum()), int(thr.support.sum()))
        named = _named_zero_shot(
            run, names, labels, s_test, sum(zero_shot.values()), closed, ecfg.label_names
        )
    measure = {
        "head_min": stats["groups"]["head_min"],
        "tail_max": stats["groups"]["tail_max"],
        "zero_shot": zero_shot,
        "n_train_docs": n_train,
        "propensity_a": ecfg.propensity_a,
        "propensity_b": ecfg.propensity_b,
    }
    s_rank = (
        s_test.map(functools.partial(adjusted_scores, prior=prior, tau=rank["tau"])) if rank["tau"] else None
    )
    # The score-only figures (AP, AUPRC, rankings) once, for the fitted thresholds and for 0.5 alike.
    by_score = {k: v for k, v in measure.items() if k != "zero_shot"}
    scored_test = score_figures(y_test, s_test, train_counts, rank_scores=s_rank, **by_score)
    del s_rank
    ev = compute_metrics(
        y_test,
        pred_test,
        s_test,
        labels,
        train_counts,
        zero_shot_scored=named["scored"] if named else None,
        scored=scored_test,
        **measure,
    )
    # For the report: what a single 0.5 cut-off would have given on test (its ranking figures are the
    # report's: they do not depend on the cut-off).
    at_half = compute_metrics(
        y_test,
        decisions(s_test, np.full(len(labels), 0.5)),
        s_test,
        labels,
        train_counts,
        scored=scored_test,
        **measure,
    )["overall"]
    provenance = {
        "run": cfg.run.name,
        "run_uri": run.uri,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "data_source": stats.get("source"),
        "model": {k: model_cfg.get(k) for k in (*MODEL_DESCRIBING_KEYS, "training")},
        "config": cfg.model_dump(),
    }
    doc = build_metrics_document(
        ev,
        thr_doc,
        stats,
        provenance,
        extra={
            "test_at_0.5": at_half,
            "rank_adjust": rank,
            **({"label_names": named["record"]} if named else {}),
        },
    )

    other = None
    compare = compare or ecfg.compare
    if compare:
        other_run = RunLayout.at(
            compare if ("/" in compare) else cfg.run.output.rstrip("/") + "/" + compare, cfg.storage
        )
        _require(other_run.metrics, "evaluate (of the compared run)")
        require_evaluated(other_run, f"compare: {other_run.metrics.uri}")
        other_doc = read_json(other_run.metrics)
        other = (compare, other_doc, other_doc)

    # The three outputs are one unit: the marker, written first and removed last, makes readers refuse them
    # (pipeline.core.layout.require_evaluated) while some are old and some new, or after a kill in between.
    write_json(
        run.evaluating,
        {
            "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "host": socket.gethostname(),
            "pid": os.getpid(),
        },
    )
    thresholds = np.asarray(thr.thresholds, dtype=np.float64)
    predictions = run.predictions
    for split, ds in scored.items():
        out = ds.map_batches(decide, batch_format="pyarrow", fn_args=(labels, thresholds, ecfg.at_least_one))
        with staged_dir(predictions.join(split)) as stage:
            out.write_parquet(stage.path, filesystem=stage.fs, filename_provider=PartFiles())
    write_json(run.thresholds, thr_doc)
    plots = render_plots(ev, thr_doc, stats)
    rep = run.report
    with staged_dir(rep) as stage:
        for name, png in plots.items():
            write_bytes(stage.join("plots", f"{name}.png"), png)
        write_bytes(stage.join("per_label.csv"), per_label_csv(ev, thr_doc).encode())
        write_bytes(
            stage.join("report.html"),
            render_html(doc, ev, plots, compare=other, thresholds=thr_doc).encode(),
        )
        write_json(stage.join("metrics.json"), doc)
    delete_file(run.evaluating)
    print(summary_table(doc, other[1] if other else None), flush=True)
    log.info("evaluate done in %.1fs: report at %s", time.perf_counter() - t0, rep.join("report.html").uri)
    return doc
