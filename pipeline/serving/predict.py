"""Batch scoring with Ray Data: an actor pool that loads the saved model once per actor.

Shared by the evaluate stage (validation and test) and the predict job (new shards).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import posixpath
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray
import ray.data
import scipy.sparse as sp
from ray.data.dataset import MaterializedDataset

from pipeline.core.config import Config, DataSection, EvaluateSection, StorageSection
from pipeline.core.errors import InputError
from pipeline.core.layout import RunLayout
from pipeline.core.storage import (
    Location,
    download_dir,
    locate,
    make_filesystem,
    read_json,
    staged_dir,
    write_json,
)
from pipeline.data.sources import _display, _expand, _is_string
from pipeline.evaluation.thresholds import ThresholdResult


class Scorer:
    """map_batches actor: text -> per-label probabilities (sigmoid of the logits, no loss shift)."""

    def __init__(
        self,
        model_uri: str,
        storage: StorageSection | None,
        device: str,
        batch_size: int,
        counter: Any = None,
    ) -> None:
        import torch

        from pipeline.modeling.model import load_model

        loc = locate(model_uri, storage)
        path = loc.path
        if not loc.is_local:  # each actor keeps its own local copy of the model folder
            self._tmp = tempfile.TemporaryDirectory(prefix="bml-model-")
            path = os.path.join(self._tmp.name, "model")
            download_dir(loc, path)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = load_model(path, device=device)
        self.batch_size = batch_size
        self.counter = counter

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        scores = self.model.predict_scores(list(batch["text"]), batch_size=self.batch_size)
        if self.counter is not None:  # fire and forget: the driver reads the total (ScoringProgress)
            self.counter.add.remote(len(scores))
        # Label lists arrive as object arrays of arrays; plain lists keep them a list<string> column.
        out = {
            k: ([list(x) if isinstance(x, np.ndarray) else x for x in v] if v.dtype == object else v)
            for k, v in batch.items()
            if k != "text"
        }
        out["scores"] = scores.astype(np.float32)
        return out


def score_dataset(
    ds: ray.data.Dataset,
    model_uri: str,
    storage: StorageSection | None = None,
    *,
    concurrency: int = 1,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    batch_size: int = 256,
    counter: Any = None,
) -> ray.data.Dataset:
    """Add a `scores` column (float32 [C] per row); keeps every other column except `text`. `counter`:
    `ScoringProgress.counter`, to which each actor adds the rows of every batch it scored."""
    return ds.map_batches(
        Scorer,
        fn_constructor_args=(model_uri, storage, "cuda" if num_gpus else "auto", batch_size, counter),
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=concurrency),
        num_cpus=num_cpus,
        num_gpus=num_gpus,
    )


def decide(table: pa.Table, labels: list[str], thresholds: np.ndarray, at_least_one: bool) -> pa.Table:
    """map_batches (pyarrow): add `predicted` (list<string>) from `scores` and the per-label thresholds."""
    from pipeline.evaluation.thresholds import apply_thresholds

    c = len(labels)
    scores = (
        np.stack(table.column("scores").to_numpy(zero_copy_only=False)).astype(np.float32)
        if table.num_rows
        else np.zeros((0, c), np.float32)
    )
    pred = apply_thresholds(scores, thresholds, at_least_one=at_least_one)
    names = np.asarray(labels, dtype=object)
    predicted = [names[np.flatnonzero(row)].tolist() for row in pred]
    # Plain list<float> (not Ray's tensor extension type) so any Parquet reader can use the file.
    offsets = pa.array(np.arange(0, (len(scores) + 1) * c, c, dtype=np.int32))
    plain = pa.ListArray.from_arrays(offsets, pa.array(scores.reshape(-1), pa.float32()))
    table = table.set_column(table.schema.get_field_index("scores"), "scores", plain)
    return table.append_column("predicted", pa.array(predicted, pa.list_(pa.string())))


def collect_scores(
    ds: ray.data.Dataset, labels: list[str], ignore_unknown: bool = False
) -> tuple[sp.csr_matrix, np.ndarray]:
    """(0/1 CSR y_true, dense scores) on the driver: threshold fitting and metrics need every row's scores;
    the labels stay sparse (a dense matrix of them would be as large as the scores again). A label outside
    `labels` is an error unless `ignore_unknown` (zero-shot labels of a prepared split: no score column).

    A materialised dataset knows its row count, so the scores are written into one preallocated array: at
    12,000 rows x 7,900 labels, concatenating batches held a second 380 MB copy at the peak.
    """
    from pipeline.data.labels import csr_from_arrow

    c = len(labels)
    rows = ds.count() if isinstance(ds, MaterializedDataset) else None
    out = np.empty((rows, c), np.float32) if rows is not None else None
    ys, ss, at = [], [], 0
    batches = ds.select_columns(["labels", "scores"]).iter_batches(batch_format="pyarrow", batch_size=2048)
    for batch in batches:
        ys.append(csr_from_arrow(batch.column("labels"), labels, ignore_unknown))
        block = np.stack(batch.column("scores").to_numpy(zero_copy_only=False)) if batch.num_rows else None
        if block is None:
            continue
        if out is not None:
            out[at : at + len(block)] = block
        else:
            ss.append(block.astype(np.float32, copy=False))
        at += len(block)
    y = sp.vstack(ys, format="csr") if ys else sp.csr_matrix((0, c), dtype=np.int8)
    if out is not None:
        if at != rows:
            raise RuntimeError(f"collect_scores: read {at} rows of a dataset of {rows}")
        return y, out
    return y, (np.concatenate(ss) if ss else np.zeros((0, c), np.float32))


# ------------------------------------------------------------------------------------------ predict job

log = logging.getLogger(__name__)

#: Inputs up to this many rows are checked on the driver; larger ones with a Ray Data pass.
LOCAL_CHECK_MAX_ROWS = 50_000
#: Seconds between progress lines while rows are scored (evaluate, predict).
PROGRESS_INTERVAL_S = 30.0
#: Folder names under <run>/predictions/ that belong to the evaluate stage.
RESERVED_NAMES = ("validation", "test")
#: How many offending labels / files an error message lists.
MAX_LISTED = 5
SUCCESS_FILE = "_SUCCESS"
POINTER_FILE = "current.json"
MODEL_CONFIG = "model_config.json"  # pipeline.modeling.model.CONFIG_FILE (not imported: it pulls in torch)


@dataclass
class PredictInput:
    """The shards to score: a filesystem, their paths, and what their schemas hold (metadata only)."""

    fs: pafs.FileSystem
    uri: str
    files: list[str]
    rows: int
    id_type: pa.DataType
    has_labels: bool


@dataclass
class ModelChoice:
    """The model folder and thresholds.json to use, where they came from, and what they hold."""

    model: Location
    thresholds: Location
    pointer: Location | None
    labels: list[str]
    model_config: dict[str, Any]
    thresholds_doc: dict[str, Any]
    fitted: ThresholdResult


def _listed(items: list[str], limit: int = MAX_LISTED) -> str:
    shown = ", ".join(repr(x) for x in items[:limit])
    return f"[{shown}{f', ... ({len(items) - limit} more)' if len(items) > limit else ''}]"


def _is_integer_or_string(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or _is_string(t)


def discover_input(source: str, data: DataSection, storage: StorageSection | None = None) -> PredictInput:
    """Find the shards (a file, a folder searched recursively, a glob, or a URI) and check every schema.

    Required: the text column (string) and the id column (string or integer), so predictions can be joined
    back to the documents. The labels column is optional; when present it must be list<string>.
    Only Parquet footers are read here.
    """
    fs, path = make_filesystem(source, storage)
    files = _expand(fs, path.rstrip("/") or "/")
    if not files:
        raise InputError(
            f"{source}: no .parquet files found (expected a file, a folder, or a glob of Parquet shards)"
        )
    rows = 0
    id_types: dict[str, pa.DataType] = {}
    with_labels: list[bool] = []
    for file in files:
        where = _display(source, fs, file)
        try:
            with fs.open_input_file(file) as f:
                meta = pq.ParquetFile(f).metadata
                schema = meta.schema.to_arrow_schema()
        except (pa.ArrowInvalid, OSError) as err:
            raise InputError(f"{where}: not a readable Parquet file ({err})") from None
        rows += meta.num_rows
        names = schema.names
        for col, kind in ((data.text_column, "text"), (data.id_column, "id")):
            if col not in names:
                raise InputError(
                    f"{where}: missing column '{col}' (the {kind} column); found columns {names}. "
                    f"Set data.{kind}_column if it is named differently"
                    + (" (predictions are joined back to documents by id)." if kind == "id" else ".")
                )
        t = schema.field(data.text_column).type
        if not _is_string(t):
            raise InputError(f"{where}: column '{data.text_column}' has type {t}, expected string")
        t = schema.field(data.id_column).type
        if not _is_integer_or_string(t):
            raise InputError(f"{where}: column '{data.id_column}' has type {t}, expected string or integer")
        id_types[where] = pa.string() if _is_string(t) else pa.int64()
        has_labels = data.labels_column in names
        if has_labels:
            t = schema.field(data.labels_column).type
            if not ((pa.types.is_list(t) or pa.types.is_large_list(t)) and _is_string(t.value_type)):
                raise InputError(
                    f"{where}: column '{data.labels_column}' has type {t}, expected list<string> "
                    "(one list of label names per row; the labels column is optional for predict)"
                )
        with_labels.append(has_labels)
    if rows == 0:
        raise InputError(f"{source}: the input holds no rows ({len(files)} file(s), all empty)")
    if len(set(id_types.values())) > 1:
        kinds = {str(t): w for w, t in id_types.items()}
        raise InputError(
            f"{source}: column '{data.id_column}' is a string in some files and an integer in others, "
            f"e.g. {kinds}"
        )
    if len(set(with_labels)) > 1:
        missing = [_display(source, fs, f) for f, h in zip(files, with_labels, strict=True) if not h]
        raise InputError(
            f"{source}: column '{data.labels_column}' is present in some files and missing in "
            f"{_listed(missing)}; give it to every file or to none"
        )
    return PredictInput(fs, source, files, rows, next(iter(id_types.values())), with_labels[0])


def _ref(value: Any, run: RunLayout, pointer: Location, key: str, storage: StorageSection | None) -> Location:
    """A location named by the pointer: a URI or absolute path as it is; a relative path against the run
    folder, or (local runs, when only that exists) the working directory, which is what `Location.uri`
    gives for a relative run.output."""
    if not isinstance(value, str) or not value:
        raise InputError(f"{pointer.uri}: key '{key}' must be a non-empty path or URI, got {value!r}")
    if "://" in value or value.startswith("/"):
        return locate(value, storage)
    inside = run.join(value)
    if not run.is_local or inside.exists():
        return inside
    outside = locate(value, storage)
    return outside if outside.exists() else inside


def choose_model(cfg: Config, run: RunLayout) -> ModelChoice:
    """Resolve predict.model / predict.thresholds (explicit, else the run's current.json, else <run>/model
    and <run>/thresholds.json), check both exist and were fitted for the same labels."""
    pcfg, storage = cfg.predict, cfg.storage
    pointer: Location | None = None
    from_pointer: dict[str, Any] = {}
    ptr = run.join(POINTER_FILE)
    if pcfg.model is None and ptr.exists():  # the pointer names a model and its thresholds as a pair
        pointer = ptr
        try:
            from_pointer = read_json(ptr)
        except ValueError as err:
            raise InputError(f"{ptr.uri}: not valid JSON ({err})") from None
        if not isinstance(from_pointer, dict) or not {"model", "thresholds"} <= set(from_pointer):
            raise InputError(
                f"{ptr.uri}: expected a JSON object with keys 'model' and 'thresholds' (written by the "
                f"retrain stage), got {from_pointer!r:.200}"
            )

    if pcfg.model is not None:
        model, model_from = locate(pcfg.model, storage), f"predict.model ({pcfg.model})"
        model_hint = "fix predict.model or run the train stage"
    elif pointer is not None:
        model = _ref(from_pointer["model"], run, pointer, "model", storage)
        model_from, model_hint = (
            f"{pointer.uri} (key 'model')",
            "run the retrain stage again or set predict.model",
        )
    else:
        model, model_from = run.model, "the run's default model folder"
        model_hint = "run the train stage first (or set predict.model)"
    if pcfg.thresholds is not None:
        thresholds, thr_from = locate(pcfg.thresholds, storage), f"predict.thresholds ({pcfg.thresholds})"
        thr_hint = "fix predict.thresholds or run the evaluate stage"
    elif pointer is not None:
        thresholds = _ref(from_pointer["thresholds"], run, pointer, "thresholds", storage)
        thr_from = f"{pointer.uri} (key 'thresholds')"
        thr_hint = "run the retrain stage again or set predict.thresholds"
    elif pcfg.model is not None:
        # An explicit model folder: the thresholds.json beside it (<run>/model -> <run>/thresholds.json).
        thresholds = locate(
            posixpath.join(posixpath.dirname(pcfg.model.rstrip("/")), "thresholds.json"), storage
        )
        thr_from = "the thresholds.json beside predict.model"
        thr_hint = "run the evaluate stage for that model or set predict.thresholds"
    else:
        thresholds, thr_from = run.thresholds, "the run's default thresholds"
        thr_hint = "run the evaluate stage first (it fits thresholds.json) or set predict.thresholds"

    model_cfg_loc = model.join(MODEL_CONFIG)
    if not model_cfg_loc.exists():
        raise InputError(
            f"model not found: {model_cfg_loc.uri} does not exist (model from {model_from}); {model_hint}"
        )
    if not thresholds.exists() or thresholds.is_dir():
        raise InputError(
            f"thresholds not found: {thresholds.uri} does not exist (thresholds from {thr_from}); {thr_hint}"
        )
    try:
        model_cfg = read_json(model_cfg_loc)
        labels = [str(x) for x in model_cfg["labels"]]
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(
            f"{model_cfg_loc.uri}: not a model_config.json with a 'labels' list ({err!r})"
        ) from None
    try:
        thr_doc = read_json(thresholds)
        fitted = ThresholdResult.from_json_dict(thr_doc)
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise InputError(
            f"{thresholds.uri}: not a thresholds.json written by the evaluate stage ({err!r})"
        ) from None
    if fitted.labels != labels:
        only_thr = [x for x in fitted.labels if x not in set(labels)]
        only_model = [x for x in labels if x not in set(fitted.labels)]
        if only_thr or only_model:
            detail = (
                f"labels only in the thresholds: {_listed(only_thr)}; "
                f"labels only in the model: {_listed(only_model)}"
            )
        else:
            detail = f"the same {len(labels)} labels in a different order"
        raise InputError(
            f"thresholds {thresholds.uri} do not match the model's label vocabulary ({model_cfg_loc.uri}, "
            f"{len(labels)} labels; thresholds list {len(fitted.labels)}): {detail}. "
            "Use the thresholds.json fitted for this model (run the evaluate stage on it)."
        )
    if not np.isfinite(fitted.thresholds).all():
        bad = [lab for lab, t in zip(labels, fitted.thresholds, strict=True) if not np.isfinite(t)]
        raise InputError(f"{thresholds.uri}: non-finite thresholds for labels {_listed(bad)}")
    return ModelChoice(model, thresholds, pointer, labels, model_cfg, thr_doc, fitted)


def _check_block(
    table: pa.Table, id_col: str, text_col: str, labels_col: str | None, vocab: list[str]
) -> pa.Table:
    """map_batches (pyarrow, whole blocks): per input file, rows, null ids, empty texts and the labels
    outside the model's vocabulary with how often they occur. A few rows per block go to the driver."""
    out: dict[str, list[Any]] = {
        k: [] for k in ("path", "rows", "null_ids", "empty_texts", "unknown", "count")
    }
    vocab_arr = pa.array(vocab, pa.string())
    paths = table.column("path")
    for path in pc.unique(paths).to_pylist():
        sub = table.filter(pc.equal(paths, path))
        texts = sub.column(text_col)
        blank = pc.sum(pc.equal(pc.utf8_trim_whitespace(texts), "")).as_py() or 0
        unknown: list[str] = []
        count: list[int] = []
        if labels_col is not None:
            flat = pc.drop_null(pc.list_flatten(sub.column(labels_col)))
            flat = flat.filter(pc.not_equal(flat, ""))
            flat = flat.filter(pc.invert(pc.is_in(flat, value_set=vocab_arr)))
            if len(flat):
                vc = pc.value_counts(flat)
                unknown = vc.field("values").to_pylist()
                count = vc.field("counts").to_pylist()
        out["path"].append(path)
        out["rows"].append(sub.num_rows)
        out["null_ids"].append(sub.column(id_col).null_count)
        out["empty_texts"].append(texts.null_count + blank)
        out["unknown"].append(unknown)
        out["count"].append(count)
    return pa.table(
        {
            "path": pa.array(out["path"], pa.string()),
            "rows": pa.array(out["rows"], pa.int64()),
            "null_ids": pa.array(out["null_ids"], pa.int64()),
            "empty_texts": pa.array(out["empty_texts"], pa.int64()),
            "unknown": pa.array(out["unknown"], pa.list_(pa.string())),
            "count": pa.array(out["count"], pa.list_(pa.int64())),
        }
    )


def check_rows(inp: PredictInput, data: DataSection, labels: list[str], model_uri: str) -> dict[str, int]:
    """One pass over the shards (Ray Data, or the driver for small inputs) before anything is scored or
    written: every row needs an id, and a labels column (passed through) may only hold labels the model
    knows. Returns row counts (rows, empty_texts)."""
    labels_col = data.labels_column if inp.has_labels else None
    columns = [data.id_column, data.text_column] + ([labels_col] if labels_col else [])
    kwargs = {
        "id_col": data.id_column,
        "text_col": data.text_column,
        "labels_col": labels_col,
        "vocab": labels,
    }
    if inp.rows <= LOCAL_CHECK_MAX_ROWS:
        # A small input: the same per-block check on the driver, without a Ray Data job's start-up.
        parts = []
        for path in inp.files:
            with inp.fs.open_input_file(path) as f:
                table = pq.ParquetFile(f).read(columns=columns)
            table = table.append_column("path", pa.array([path] * table.num_rows, pa.string()))
            parts.extend(_check_block(table, **kwargs).to_pylist())
    else:
        ds = ray.data.read_parquet(
            inp.files, filesystem=inp.fs, columns=columns, include_paths=True, partitioning=None
        )
        parts = ds.map_batches(
            _check_block, batch_format="pyarrow", batch_size=None, fn_kwargs=kwargs
        ).take_all()
    rows = sum(int(p["rows"]) for p in parts)
    null_ids: dict[str, int] = {}
    unknown: dict[str, int] = {}
    unknown_files: dict[str, None] = {}
    for p in parts:
        where = _display(inp.uri, inp.fs, p["path"])
        if p["null_ids"]:
            null_ids[where] = null_ids.get(where, 0) + int(p["null_ids"])
        for lab, n in zip(list(p["unknown"]), list(p["count"]), strict=True):
            unknown[str(lab)] = unknown.get(str(lab), 0) + int(n)
            unknown_files[where] = None
    if null_ids:
        first = sorted(null_ids)[:MAX_LISTED]
        raise InputError(
            f"{sum(null_ids.values())} row(s) have a null '{data.id_column}' (the id column), in "
            + ", ".join(f"{f} ({null_ids[f]} rows)" for f in first)
            + (f" and {len(null_ids) - len(first)} more file(s)" if len(null_ids) > len(first) else "")
            + "; every row needs an id so its prediction can be joined back"
        )
    if unknown:
        ranked = sorted(unknown, key=lambda lab: (-unknown[lab], lab))
        shown = ", ".join(f"{lab!r} ({unknown[lab]}x)" for lab in ranked[:MAX_LISTED])
        more = f" and {len(ranked) - MAX_LISTED} more" if len(ranked) > MAX_LISTED else ""
        files = sorted(unknown_files)
        raise InputError(
            f"column '{data.labels_column}' holds {len(ranked)} label(s) that are not in the model's "
            f"vocabulary ({model_uri}/{MODEL_CONFIG}, {len(labels)} labels): {shown}{more}; "
            f"in file(s) {_listed(files)}. Score with a model trained on these labels, or drop the "
            "labels column (predict only passes it through)."
        )
    if rows != inp.rows:
        raise RuntimeError(f"{inp.uri}: Parquet footers promise {inp.rows} rows but {rows} were read")
    return {"rows": rows, "empty_texts": sum(int(p["empty_texts"]) for p in parts)}


def _canonical(
    table: pa.Table, id_col: str, text_col: str, labels_col: str | None, id_type: pa.DataType
) -> pa.Table:
    """map_batches (pyarrow): the configured columns under the names the Scorer expects (id, text, labels);
    a null text is scored as an empty document, a null label list passes through as an empty list."""
    cols: dict[str, Any] = {
        "id": table.column(id_col).cast(id_type),
        "text": pc.fill_null(table.column(text_col).cast(pa.string()), ""),
    }
    if labels_col is not None:
        lab = table.column(labels_col)
        if lab.null_count:
            lab = pa.array([x if x is not None else [] for x in lab.to_pylist()], pa.list_(pa.string()))
        cols["labels"] = lab.cast(pa.list_(pa.string()))
    return pa.table(cols)


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


@ray.remote(num_cpus=0)
class _RowCounter:
    """Rows the scoring actors have scored so far, for progress lines on the driver."""

    def __init__(self) -> None:
        self.rows = 0

    def add(self, n: int) -> None:
        self.rows += n

    def get(self) -> int:
        return self.rows


class ScoringProgress:
    """Rows scored / total, elapsed time and rate, logged by the driver every `interval` seconds while a
    scoring pass runs (`with ScoringProgress(...) as p: score_dataset(..., counter=p.counter)...`).

    Counted per batch by the actors, not per finished block on the driver: an input block (a Parquet
    file) can take minutes to score on CPUs, and a count of finished blocks would stand still that long.
    Printed by the driver, so it is one line for the whole pass however many actors score.
    """

    def __init__(self, total: int, what: str, interval: float = PROGRESS_INTERVAL_S) -> None:
        self.total, self.what, self.interval = total, what, interval
        self.counter = _RowCounter.remote()
        self.t0 = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="predict-progress", daemon=True)

    def __enter__(self) -> ScoringProgress:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        ray.kill(self.counter)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                done = int(ray.get(self.counter.get.remote(), timeout=10))
            except Exception:  # progress is best effort; scoring goes on regardless
                continue
            elapsed = time.perf_counter() - self.t0
            log.info(
                "%s: %d / %d rows scored (%.0f%%) in %.0fs, %.1f rows/s",
                self.what,
                done,
                self.total,
                100.0 * done / max(self.total, 1),
                elapsed,
                done / elapsed if elapsed > 0 else 0.0,
            )


def check_scoring_resources(
    ecfg: EvaluateSection, stage: str = "predict", cluster: dict[str, float] | None = None
) -> None:
    """Scoring actors plus one CPU for read/decision tasks must fit, or Ray Data waits forever.

    `cluster`: total resources (default: the live cluster's); `stage` names the caller in the message.
    """
    from pipeline.core.errors import ResourceError

    have = ray.cluster_resources() if cluster is None else cluster
    cpus, gpus = ecfg.concurrency * ecfg.cpus_per_actor, ecfg.concurrency * ecfg.gpus_per_actor
    problems = []
    if cpus + 1.0 > have.get("CPU", 0.0) + 1e-9:
        problems.append(
            f"{ecfg.concurrency} scoring actor(s) x {ecfg.cpus_per_actor:g} CPU + 1 CPU for reading = "
            f"{cpus + 1:g} CPU, the cluster has {have.get('CPU', 0.0):g}"
        )
    if gpus > have.get("GPU", 0.0) + 1e-9:
        problems.append(f"{gpus:g} GPU for the scoring actors, the cluster has {have.get('GPU', 0.0):g}")
    if problems:
        raise ResourceError(
            f"infeasible resource request for {stage}: "
            + "; ".join(problems)
            + ". Lower evaluate.concurrency / evaluate.cpus_per_actor / evaluate.gpus_per_actor."
        )


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
                f"{_listed(others, 3)}; refusing to replace it (set predict.output to a folder of its own)"
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
                f"predict output {out.uri} holds the input shards (e.g. {_listed(inside, 2)}); "
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
    ds = ray.data.read_parquet(inp.files, filesystem=inp.fs, columns=columns, partitioning=None)
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
    with ScoringProgress(inp.rows, "predict") as progress:
        scored = score_dataset(
            ds,
            # Absolute for local paths: scoring actors need not share the driver's working directory.
            choice.model.path if choice.model.is_local else choice.model.uri,
            cfg.storage,
            concurrency=ecfg.concurrency,
            num_cpus=ecfg.cpus_per_actor,
            num_gpus=ecfg.gpus_per_actor,
            batch_size=ecfg.batch_size,
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
        "model_info": {k: choice.model_config.get(k) for k in ("encoder", "pooling", "max_length", "loss")},
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
