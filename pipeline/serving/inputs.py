"""Input checks of the predict job: find the shards, check every schema from the footers, then one pass over
the rows (ids present, labels inside the model's vocabulary) before anything is scored or written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.core.config import DataSection, StorageSection
from pipeline.core.errors import InputError
from pipeline.core.layout import MODEL_CONFIG_FILE
from pipeline.core.parquet_reader import read_parquet
from pipeline.core.storage import make_filesystem
from pipeline.data.sources import _display, _expand, _is_string, is_string_list, read_footer

#: Inputs up to this many rows are checked on the driver; larger ones with a Ray Data pass.
LOCAL_CHECK_MAX_ROWS = 50_000
#: How many offending labels / files an error message lists.
MAX_LISTED = 5


@dataclass
class PredictInput:
    """The shards to score: a filesystem, their paths, and what their schemas hold (metadata only)."""

    fs: pafs.FileSystem
    uri: str
    files: list[str]
    rows: int
    id_type: pa.DataType
    has_labels: bool


def listed(items: list[str], limit: int = MAX_LISTED) -> str:
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
        file_rows, schema = read_footer(fs, file, where)
        rows += file_rows
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
            if not is_string_list(t):
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
            f"{listed(missing)}; give it to every file or to none"
        )
    return PredictInput(fs, source, files, rows, next(iter(id_types.values())), with_labels[0])


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
        ds = read_parquet(
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
            f"vocabulary ({model_uri}/{MODEL_CONFIG_FILE}, {len(labels)} labels): {shown}{more}; "
            f"in file(s) {listed(files)}. Score with a model trained on these labels, or drop the "
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
