"""The predict job: score new Parquet shards with a trained model and its per-label thresholds, and write
`predictions/<name>/` as one staged folder with a `_SUCCESS` summary last.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.core.config import Config
from pipeline.core.errors import InputError
from pipeline.core.layout import MODEL_DESCRIBING_KEYS, RunLayout
from pipeline.core.parquet_reader import read_parquet
from pipeline.core.progress import RowProgress
from pipeline.core.storage import (
    Location,
    locate,
    staged_dir,
    write_json,
)
from pipeline.evaluation.scoring import check_scoring_resources, decide, score_dataset
from pipeline.serving.inputs import _canonical, check_rows, discover_input, listed
from pipeline.serving.registry import choose_model

log = logging.getLogger(__name__)

#: Folder names under <run>/predictions/ that belong to the evaluate stage.
RESERVED_NAMES = ("validation", "test")
SUCCESS_FILE = "_SUCCESS"


def output_schema(id_type: pa.DataType, has_labels: bool) -> pa.Schema:
    """Columns of predictions/<name>/*.parquet: plain Parquet types any reader understands."""
    fields = [pa.field("id", id_type)]
    if has_labels:
        fields.append(pa.field("labels", pa.list_(pa.string())))
    fields += [pa.field("scores", pa.list_(pa.float32())), pa.field("predicted", pa.list_(pa.string()))]
    return pa.schema(fields)


def _finish(
    table: pa.Table,
    labels: list[str],
    thresholds: np.ndarray,
    at_least_one: bool,
    schema: pa.Schema,
) -> pa.Table:
    """map_batches (pyarrow): `predicted` from the thresholds, one fixed schema for every file."""
    return decide(table, labels, thresholds, at_least_one).select(schema.names).cast(schema)


def output_location(cfg: Config, run: RunLayout) -> Location:
    """predict.output, else <run>/predictions/<predict.name>; refuses names that clash with evaluate."""
    pcfg = cfg.predict
    if pcfg.output:
        out = locate(pcfg.output, cfg.storage)
    else:
        name = pcfg.name
        if not name or "/" in name or name.startswith((".", "_")):
            raise InputError(
                f"predict.name {name!r}: expected a plain folder name (no '/', not starting with '.' or '_')"
            )
        if name in RESERVED_NAMES:
            raise InputError(
                f"predict.name '{name}' would replace the evaluate stage's predictions/{name}/; "
                "choose another name"
            )
        out = run.predictions.join(name)
    if out.exists():
        if not out.is_dir():
            raise InputError(f"predict output {out.uri} exists and is a file, expected a folder")
        # Not recursive: a predictions folder is flat, and a wrong predict.output may be a large tree.
        others = [
            i.path
            for i in out.fs.get_file_info(pafs.FileSelector(out.path))
            if not i.base_name.startswith(".")
            and not (
                i.type == pafs.FileType.File
                and (i.base_name.endswith(".parquet") or i.base_name == SUCCESS_FILE)
            )
        ]
        if others:
            raise InputError(
                f"predict output {out.uri} already holds files that are not predictions, e.g. "
                f"{listed(others, 3)}; refusing to replace it (set predict.output to a folder of its own)"
            )
    return out


def _count_rows(loc: Location) -> tuple[int, int]:
    """(files, rows) of the Parquet files under `loc`, from their footers."""
    files = loc.files(".parquet")
    rows = 0
    for path in files:
        with loc.fs.open_input_file(path) as f:
            rows += pq.ParquetFile(f).metadata.num_rows
    return len(files), rows


def run_predict(cfg: Config) -> dict[str, Any]:
    """Score the shards at `predict.source` with a saved model and its thresholds.

    Writes `predictions/<name>/part-*.parquet` (id, labels if the input has them, scores list<float>,
    predicted list<string>) under the run (or to `predict.output`) as one staged folder, then
    `_SUCCESS`, a JSON summary (rows, model, thresholds), last. Every check runs before anything is
    written. Returns the summary.
    """
    from pipeline.data.prepare import PartFiles

    t0 = time.perf_counter()
    pcfg, ecfg, data = cfg.predict, cfg.evaluate, cfg.data
    if not pcfg.source:
        raise InputError(
            "predict.source is not set: pass --set predict.source=PATH_OR_URI (the Parquet shards to score)"
        )
    run = RunLayout.of(cfg)
    out = output_location(cfg, run)
    choice = choose_model(cfg, run)
    inp = discover_input(pcfg.source, data, cfg.storage)
    if type(inp.fs) is type(out.fs):
        inside = [f for f in inp.files if f == out.path or f.startswith(out.path.rstrip("/") + "/")]
        if inside:
            raise InputError(
                f"predict output {out.uri} holds the input shards (e.g. {listed(inside, 2)}); "
                "writing there would replace them: set predict.output or predict.name"
            )
    log.info(
        "predict: %d rows in %d file(s) at %s; model %s (%d labels%s), thresholds %s -> %s",
        inp.rows,
        len(inp.files),
        inp.uri,
        choice.model.uri,
        len(choice.labels),
        f", via {choice.pointer.uri}" if choice.pointer else "",
        choice.thresholds.uri,
        out.uri,
    )
    check_scoring_resources(ecfg)
    counts = check_rows(inp, data, choice.labels, choice.model.uri)
    if counts["empty_texts"]:
        log.warning(
            "predict: %d row(s) have a null or blank '%s'; they are scored as empty documents",
            counts["empty_texts"],
            data.text_column,
        )
    log.info("predict: input checked in %.1fs", time.perf_counter() - t0)

    labels_col = data.labels_column if inp.has_labels else None
    columns = [data.id_column, data.text_column] + ([labels_col] if labels_col else [])
    ds = read_parquet(inp.files, filesystem=inp.fs, columns=columns, partitioning=None)
    ds = ds.map_batches(
        _canonical,
        batch_format="pyarrow",
        fn_kwargs={
            "id_col": data.id_column,
            "text_col": data.text_column,
            "labels_col": labels_col,
            "id_type": inp.id_type,
        },
    )
    fitted = choice.fitted
    schema = output_schema(inp.id_type, inp.has_labels)
    t_score = time.perf_counter()
    with RowProgress(inp.rows, "predict") as progress:
        scored = score_dataset(
            ds,
            choice.model.address,  # scoring actors need not share the driver's working directory
            cfg.storage,
            settings=ecfg,
            counter=progress.counter,
        )
        final = scored.map_batches(
            _finish,
            batch_format="pyarrow",
            fn_args=(choice.labels, np.asarray(fitted.thresholds, dtype=np.float64), fitted.at_least_one),
            fn_kwargs={"schema": schema},
        )
        with staged_dir(out) as stage:
            final.write_parquet(stage.path, filesystem=stage.fs, filename_provider=PartFiles())
            n_files, n_rows = _count_rows(stage)
            if n_rows != inp.rows:
                raise RuntimeError(f"predict wrote {n_rows} rows for {inp.rows} input rows; nothing was kept")
    seconds = time.perf_counter() - t_score
    summary: dict[str, Any] = {
        "rows": n_rows,
        "files": n_files,
        "source": inp.uri,
        "input_files": len(inp.files),
        "output": out.uri,
        "model": choice.model.uri,
        "thresholds": choice.thresholds.uri,
        "pointer": choice.pointer.uri if choice.pointer else None,
        "num_labels": len(choice.labels),
        "at_least_one": fitted.at_least_one,
        "threshold_strategy": fitted.strategy,
        "thresholds_provenance": choice.thresholds_doc.get("provenance"),
        "model_info": {k: choice.model_config.get(k) for k in MODEL_DESCRIBING_KEYS},
        "columns": schema.names,
        "empty_text_rows": counts["empty_texts"],
        "scoring_seconds": round(seconds, 3),
        "rows_per_second": round(n_rows / seconds, 2) if seconds > 0 else None,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    write_json(out.join(SUCCESS_FILE), summary)  # last: its presence says the folder is complete
    log.info(
        "predict done: %d rows scored in %.1fs (%.1f rows/s), %d file(s) at %s (total %.1fs)",
        n_rows,
        seconds,
        n_rows / seconds if seconds > 0 else 0.0,
        n_files,
        out.uri,
        time.perf_counter() - t0,
    )
    return summary
