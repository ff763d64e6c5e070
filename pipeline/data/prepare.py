"""The prepare stage: shards -> validated, split, normalised Parquet plus label statistics.

Data flow (all row work in Ray Data): read -> normalise (canonical columns, row key, row issues) ->
materialise -> [stratified split on (row key, label set) only] -> per-block partial statistics -> checks ->
write.
Every check runs before anything is written, so a failed run leaves no output behind.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
import ray.data
import scipy.sparse as sp
from ray.data import DataContext
from ray.data.datasource.filename_provider import FilenameProvider

from pipeline.core.config import Config
from pipeline.core.errors import InputError
from pipeline.core.layout import RunLayout
from pipeline.core.parquet_reader import read_parquet
from pipeline.core.progress import PassProgress, RowProgress
from pipeline.core.storage import Location, staged_dir, write_json
from pipeline.data import row_keys
from pipeline.data import stats as stats_mod
from pipeline.data.sources import SPLITS, InputSpec, discover, normalise_split_name
from pipeline.data.split import stratified_assign
from pipeline.data.synthetic import write_shards

log = logging.getLogger(__name__)

#: Columns of every prepared shard.
PREPARED_SCHEMA = pa.schema(
    [("id", pa.string()), ("text", pa.string()), ("labels", pa.list_(pa.string())), ("split", pa.string())]
)


class PartFiles(FilenameProvider):
    """Ray Data writes `part-<task>-<write uuid>.parquet` files (the layout Ray Data uses elsewhere)."""

    def __init__(self) -> None:
        super().__init__(file_format="parquet")

    def get_filename_for_task(self, write_uuid: str, task_index: int) -> str:
        return f"part-{task_index:05d}-{write_uuid}.parquet"


def _row_key(row_id: str | None, text: str, labels: list[str]) -> int:
    """A stable 63-bit key of one row (the per-row definition `Normalise` vectorises): from the id when there
    is one, else from the content (so exact duplicates always land in the same split)."""
    return row_keys.reference_key(row_id if row_id is not None else text + "\x1f" + "\x1e".join(labels))


def _path_key(path: str) -> str:
    """A file path without its URI scheme or leading slashes (Ray's `path` column and pyarrow's listing may
    spell the same object differently)."""
    return path.split("://", 1)[-1].lstrip("/")


@functools.cache
def _blank_pattern() -> str:
    """A regex matching texts made only of characters Python's str.strip() removes (`not text.strip()`)."""
    return f"^{row_keys.space_class()}*$"


@functools.cache
def _space_leads() -> np.ndarray:
    """A 256-entry table: which bytes begin the UTF-8 encoding of a character of `row_keys.space_class`."""
    table = np.zeros(256, bool)
    table[[chr(c).encode()[0] for c in range(0x10000) if chr(c).isspace()]] = True
    return table


def _blank(text: pa.Array) -> np.ndarray:
    """`not text.strip()` for each row of a StringArray without nulls. A row that is not empty and whose
    first byte begins no whitespace character is not blank (numpy over the buffers); only the others go
    through the regex (`_blank_pattern`, 7 ms per 250,000 short rows alone, against under 1 ms this way)."""
    n = len(text)
    offsets = np.frombuffer(text.buffers()[1], np.int32, n + 1, text.offset * 4)
    starts, empty = offsets[:-1], offsets[1:] == offsets[:-1]
    out = empty.copy()
    data = text.buffers()[2]
    if data is None or empty.all():
        return out
    first = np.frombuffer(data, np.uint8)[np.where(empty, 0, starts)]
    maybe = np.flatnonzero(~empty & _space_leads()[first])
    if len(maybe):
        rows = text.take(pa.array(maybe))
        out[maybe] = pc.match_substring_regex(rows, _blank_pattern()).to_numpy(zero_copy_only=False)
    return out


def _hex_ids(keys: np.ndarray) -> pa.Array:
    """`row-<key as 16 lower-case hex digits>` for each key, built as fixed-width bytes in numpy."""
    n = len(keys)
    nibbles = keys.astype(">u8").view(np.uint8).reshape(n, 8)
    digits = np.frombuffer(b"0123456789abcdef", np.uint8)
    chars = np.empty((n, 20), np.uint8)
    chars[:, :4] = np.frombuffer(b"row-", np.uint8)
    chars[:, 4::2] = digits[nibbles >> 4]
    chars[:, 5::2] = digits[nibbles & 15]
    offsets = np.arange(0, 20 * (n + 1), 20, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(chars))


def _clean_labels(labels: pa.ChunkedArray) -> pa.Array:
    """Each row's labels without nulls, empty strings and repeats (first occurrence kept, order kept), as
    list<string>; a null list becomes an empty one. Arrow and numpy only, no per-label Python; a column
    with nothing to remove is returned as it is (the common case, and twice as fast)."""
    return _clean_coded_labels(labels)[0]


def _clean_coded_labels(labels: pa.ChunkedArray) -> tuple[pa.Array, np.ndarray, pa.Array]:
    """(`_clean_labels`, each value's code in the dictionary, the dictionary): the hash that finds repeats
    also numbers the labels, which the profile counts with a bincount instead of hashing them again."""
    column = labels.cast(pa.list_(pa.string()))
    flat, lengths = stats_mod.flat_lists(column)
    n = len(lengths)
    parents = np.repeat(np.arange(n), lengths)
    valid = pc.fill_null(pc.greater(pc.binary_length(flat), 0), False)  # offsets only, no UTF-8 scan
    at = None if pc.all(valid).as_py() is not False else np.flatnonzero(valid.to_numpy(zero_copy_only=False))
    kept = flat if at is None else flat.take(pa.array(at))
    encoded = pc.dictionary_encode(kept)
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    pair = (parents if at is None else parents[at]) * (int(codes.max(initial=0)) + 1) + codes
    ordered = np.sort(pair)
    repeats = bool((ordered[1:] == ordered[:-1]).any())
    if at is None and not repeats and not column.null_count:
        whole = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        return whole, codes, encoded.dictionary
    if repeats:
        first = np.unique(pair, return_index=True)[1]
        first.sort()
        codes = codes[first]
        at = first if at is None else at[first]
    elif at is None:
        at = np.arange(len(flat))
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(np.bincount(parents[at], minlength=n), out=offsets[1:])
    clean = pa.ListArray.from_arrays(pa.array(offsets), flat.take(pa.array(at)), type=pa.list_(pa.string()))
    return clean, codes, encoded.dictionary


class Normalise:
    """map_batches (pyarrow): canonical columns, row key, row issues and the keep decision of the policy.

    Labels: nulls, empty strings and repeats removed (first occurrence kept). Row key: `_row_key` of the id
    when there is one, else of the content. Issues: bad_split_value:<value>, empty_text (null or only
    whitespace), no_labels. With `group_key`, also `_group`: the `text` family key of
    `row_keys.normalised_text` (rows with the same normalised text are one duplicate group, split together),
    or the row key for empty texts, which are no group. Arrow and numpy only: Python runs per distinct split
    value and file, never per row (except for ids of a type other than string or integer).

    `keys=False` (the profile stage's counting pass) computes no keys: `id` is each row's file (the read's
    `path` column), which names the rows in `row_issues` examples, and there is no `_key`; the cleaning,
    splits, issues and keep decision are the same.

    `counter`: `pipeline.core.progress.RowProgress.counter`, to which each call adds the rows it read
    (prepare's read, materialised: the driver sees no block before the end).
    """

    def __init__(
        self,
        cols: dict[str, str],
        has_id: bool,
        fixed_split: str | None,
        split_from_column: bool,
        empty_policy: str,
        split_of_path: dict[str, str] | None = None,
        group_key: bool = False,
        keys: bool = True,
        counter: Any | None = None,
    ) -> None:
        self.cols, self.has_id, self.fixed_split, self.group_key = cols, has_id, fixed_split, group_key
        self.keys, self.counter = keys, counter
        self.split_from_column, self.keep_empty = split_from_column, empty_policy == "keep"
        self.split_of_path = (
            None if split_of_path is None else {_path_key(f): s for f, s in split_of_path.items()}
        )

    def _raw_splits(self, table: pa.Table) -> pa.DictionaryArray | None:
        """Each row's split as written in the data (dictionary-encoded), or None for a fixed split."""
        if self.split_from_column:
            return pc.dictionary_encode(table.column(self.cols["split"]).combine_chunks())
        if self.split_of_path is None:
            return None
        paths = table.column("path").combine_chunks()
        if len(paths) and pc.all(pc.equal(paths, paths[0])).as_py():  # a block of one file (the usual)
            enc = pa.DictionaryArray.from_arrays(pa.array(np.zeros(len(paths), np.int32)), paths.slice(0, 1))
        else:
            enc = pc.dictionary_encode(paths)
        names = []
        for path in enc.dictionary.to_pylist():
            split = self.split_of_path.get(_path_key(path))
            if split is None:
                raise InputError(f"read a row from {path!r}, which is in no split folder found by discover")
            names.append(split)
        return pa.DictionaryArray.from_arrays(enc.indices, pa.array(names, pa.string()))

    def _splits(self, table: pa.Table) -> tuple[pa.Array, pa.Array]:
        """(each row's split name or null, its issue when the written split is no split name or null). Python
        runs once per distinct written value."""
        n = table.num_rows
        raw = self._raw_splits(table)
        if raw is None:
            return pa.repeat(pa.scalar(self.fixed_split, pa.string()), n), pa.nulls(n, pa.string())
        values = raw.dictionary.to_pylist()
        names = [normalise_split_name(v) if isinstance(v, str) else None for v in values]
        issues = [f"bad_split_value:{v}" if sp is None else None for v, sp in zip(values, names, strict=True)]
        splits = pc.take(pa.array(names, pa.string()), raw.indices)
        return splits, pc.take(pa.array(issues, pa.string()), raw.indices)

    def _rows(self, table: pa.Table) -> _Rows:
        """The cleaned columns and each row's checks, as masks."""
        text = pc.fill_null(table.column(self.cols["text"]).cast(pa.string()).combine_chunks(), "")
        clean, codes, dictionary = _clean_coded_labels(table.column(self.cols["labels"]))
        splits, split_issue = self._splits(table)
        bad = pc.is_valid(split_issue).to_numpy(zero_copy_only=False)
        empty_text = _blank(text)
        no_labels = pc.equal(pc.list_value_length(clean), 0).to_numpy(zero_copy_only=False)
        keep = ~(bad | empty_text | no_labels) | (self.keep_empty & ~bad)
        return _Rows(text, clean, codes, dictionary, splits, split_issue, empty_text, no_labels, keep)

    def __call__(self, table: pa.Table) -> pa.Table:
        n = table.num_rows
        r = self._rows(table)
        if self.counter is not None:
            self.counter.add.remote(n)
        text, clean, splits, issues, keep = r.text, r.clean, r.splits, r.issues(), r.keep
        if not self.keys:
            files = table.column("path").combine_chunks() if "path" in table.column_names else None
            return pa.table(
                {
                    "id": pa.nulls(n, pa.string()) if files is None else files,
                    "text": text,
                    "labels": clean,
                    "split": splits,
                    "_issue": issues,
                    "_keep": pa.array(keep, pa.bool_()),
                }
            )
        ids = pa.nulls(n, pa.string())
        if self.has_id:
            id_col = table.column(self.cols["id"]).combine_chunks()
            if pa.types.is_string(id_col.type) or pa.types.is_large_string(id_col.type):
                ids = id_col.cast(pa.string())
            elif pa.types.is_integer(id_col.type):
                ids = pc.cast(id_col, pa.string())  # the digits str() writes
            else:
                ids = pa.array([None if v is None else str(v) for v in id_col.to_pylist()], pa.string())
        no_id = ids.is_null()
        bases = ids
        if ids.null_count:
            content = pc.binary_join_element_wise(text, pc.binary_join(clean, "\x1e"), "\x1f")
            bases = pc.if_else(no_id, content, ids)
        keys = row_keys.string_keys(bases, "row")
        out_ids = pc.if_else(no_id, _hex_ids(keys), ids) if ids.null_count else ids
        out = pa.table(
            {
                "id": out_ids,
                "text": text,
                "labels": clean,
                "split": splits,
                "_key": pa.array(keys, pa.int64()),
                "_issue": issues,
                "_keep": pa.array(keep, pa.bool_()),
            }
        )
        if self.group_key:
            text_keys = row_keys.string_keys(row_keys.normalised_text(text), "text")
            out = out.append_column("_group", pa.array(np.where(r.empty_text, keys, text_keys), pa.int64()))
        return out


class CountRows(Normalise):
    """map_batches (pyarrow) of the profile stage: a block's statistics partial (`stats.block_partial`'s
    one-row table) straight from the rows read, by `Normalise`'s cleaning, splits, issues and keep rule,
    without building the normalised table: label counts are a bincount of the dictionary codes the label
    cleaning already made, issues are built only for the rows that have one. In one process, on a shard
    of 250,000 rows read: about 29 ms, against about 43 ms for Normalise and then block_partial."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, keys=False, **kwargs)

    def __call__(self, table: pa.Table) -> pa.Table:
        r = self._rows(table)
        codes = stats_mod.split_codes(r.splits)
        codes[~r.keep] = -1
        issue_rows = None
        has_issue = r.has_issue()
        if has_issue.any():
            at = pa.array(np.flatnonzero(has_issue))
            files = table.column("path").combine_chunks() if "path" in table.column_names else None
            issue_rows = pa.table(
                {
                    "_issue": r.issues().take(at),
                    "split": r.splits.take(at),
                    "id": pa.nulls(len(at), pa.string()) if files is None else files.take(at),
                }
            )
        lengths = pc.list_value_length(r.clean).to_numpy(zero_copy_only=False).astype(np.int64)
        blob = stats_mod.coded_partial(codes, lengths, r.codes, r.dictionary, r.text, issue_rows)
        return blob.append_column("rows", pa.array([table.num_rows], pa.int64()))  # for progress lines


@dataclass
class _Rows:
    """One block's rows after `Normalise._rows`: cleaned columns, the label dictionary codes of the
    cleaned values (in order), and per-row checks."""

    text: pa.Array
    clean: pa.Array
    codes: np.ndarray
    dictionary: pa.Array
    splits: pa.Array
    split_issue: pa.Array
    empty_text: np.ndarray
    no_labels: np.ndarray
    keep: np.ndarray

    def has_issue(self) -> np.ndarray:
        return pc.is_valid(self.split_issue).to_numpy(zero_copy_only=False) | self.empty_text | self.no_labels

    def issues(self) -> pa.Array:
        """Each row's issue: its split value's, else empty_text, else no_labels, else ""."""
        empty, none = pa.array(self.empty_text), pa.array(self.no_labels)
        return pc.coalesce(
            self.split_issue, pc.if_else(empty, "empty_text", pc.if_else(none, "no_labels", ""))
        )


def _assign_splits(table: pa.Table, keys: np.ndarray, names: np.ndarray, only: str | None) -> pa.Table:
    """map_batches: set `split` from a sorted group key -> split lookup (rows of other splits are left
    alone)."""
    k = table.column("_group").to_numpy()
    pos = np.clip(np.searchsorted(keys, k), 0, max(len(keys) - 1, 0))
    found = (keys[pos] == k) if len(keys) else np.zeros(len(k), bool)
    current = np.array(table.column("split").to_pylist(), dtype=object)
    eligible = found if only is None else found & (current == only)
    current[eligible] = names[pos[eligible]]
    return table.set_column(table.schema.get_field_index("split"), "split", pa.array(current, pa.string()))


def _drop_unknown_labels(table: pa.Table, vocab: list[str]) -> pa.Table:
    """map_batches: remove the labels outside `vocab` from every row (Arrow kernels, no per-label Python)."""
    flat, lengths = stats_mod.flat_lists(table.column("labels"))
    known = pc.is_in(flat, value_set=pa.array(vocab, pa.string()))
    parents = np.repeat(np.arange(len(lengths)), lengths)[known.to_numpy(zero_copy_only=False)]
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(np.bincount(parents, minlength=len(lengths)), out=offsets[1:])
    kept = pa.ListArray.from_arrays(pa.array(offsets), flat.filter(known), type=pa.list_(pa.string()))
    idx = table.schema.get_field_index("labels")
    return table.set_column(idx, "labels", kept)


def _select_split(table: pa.Table, split: str) -> pa.Table:
    mask = pc.and_(pc.equal(table.column("split"), split), table.column("_keep"))
    return table.filter(mask).select(PREPARED_SCHEMA.names).cast(PREPARED_SCHEMA)


#: The profile's counting pass reads about this many rows per task (files are grouped into tasks).
ROWS_PER_COUNT_TASK = 1_000_000


def _count_tasks(spec: InputSpec) -> int:
    """Read tasks of the counting pass: at least 8 per cluster CPU (to balance the load), else one per
    `ROWS_PER_COUNT_TASK` rows, at most one per file. Measured on 2 CPUs, 50M rows in 200 shards: 200 tasks
    took 6.3 s, 100 took 5.7 s, 50 took 5.4 s (a task costs Ray about 12 ms of CPU beside the counting)."""
    cpus = int(ray.cluster_resources().get("CPU", 1))
    by_rows = -(-spec.rows // ROWS_PER_COUNT_TASK)
    return max(1, min(len(spec.all_files), max(8 * cpus, by_rows)))


def read_normalised(
    spec: InputSpec, cfg: Config, keys: bool = True, counted: bool = False, counter: Any | None = None
) -> ray.data.Dataset:
    """Every row of the input through `Normalise`. `keys=False` (the profile stage) reads no id column, always
    records each row's file, and computes no row or duplicate-group keys; `counted` (implies no keys) maps
    each block to its statistics partial instead (`CountRows`, with the block's rows read for progress
    lines). `counter`: a `RowProgress` counter of the rows read (not with `counted`)."""
    keys = keys and not counted
    data = cfg.data
    cols = {
        "text": data.text_column,
        "labels": data.labels_column,
        "id": data.id_column,
        "split": data.split_column,
    }
    has_id = spec.has_id_column and keys
    wanted = [data.text_column, data.labels_column] + ([data.id_column] if has_id else [])
    # One read over every split folder, each row's split from its file's path: a read per folder (and a
    # union) ran about 3x slower on 1M rows in 20 shards, and small shards were packed into one read task per
    # folder. At least one read task per file (up to Ray's minimum block count) keeps every CPU busy.
    split_of = {f: s for s, files in spec.by_split.items() for f in files} or None
    from_column = split_of is None and spec.has_split_column
    files = spec.all_files
    # Without operator resource reservation: the read and its map are this dataset's only operators, and the
    # reservation ran the read tasks one at a time on 2 CPUs.
    ds = read_parquet(
        files,
        reserve_resources=False,
        filesystem=spec.fs,
        columns=wanted + ([data.split_column] if from_column else []),
        include_paths=split_of is not None or not keys,
        override_num_blocks=_count_tasks(spec)
        if counted
        else min(len(files), DataContext.get_current().read_op_min_num_blocks),
    )
    # prepare splits a corpus that gives no split later (null until then); the profile counts it as train.
    fixed = "train" if not keys and split_of is None and not from_column else None
    if counted:
        count = CountRows(cols, has_id, fixed, from_column, data.empty_policy, split_of_path=split_of)
        return ds.map_batches(count, batch_format="pyarrow", zero_copy_batch=True, batch_size=None)
    norm = Normalise(
        cols,
        has_id,
        fixed,
        from_column,
        data.empty_policy,
        split_of_path=split_of,
        group_key=keys,
        keys=keys,
        counter=counter,
    )
    return ds.map_batches(norm, batch_format="pyarrow", zero_copy_batch=True)


def read_input(spec: InputSpec, cfg: Config, source: str) -> ray.data.Dataset:
    """The normalised rows, materialised (read errors as in `reading`), with progress lines."""
    with reading(source), RowProgress(spec.rows, "prepare: reading", verb="read") as progress:
        return read_normalised(spec, cfg, counter=progress.counter).materialize()


@contextlib.contextmanager
def reading(source: str) -> Iterator[None]:
    """Around a pass that reads the input: a shard whose footer is sound but whose data cannot be read (a
    corrupt page, a truncated column chunk: the preflight reads footers only) raised Ray's task error with
    the whole remote traceback; it is an InputError of one line here. Other errors propagate unchanged."""
    try:
        yield
    except ray.exceptions.RayTaskError as err:
        cause = err.cause
        if isinstance(cause, InputError):
            raise InputError(str(cause)) from None
        if isinstance(cause, OSError | pa.ArrowException):
            first = (str(cause).strip().splitlines() or [""])[0]
            raise InputError(
                f"{source}: a shard's data could not be read ({type(cause).__name__}: {first}); its footer "
                "was readable, so a data page is corrupt or cut short"
            ) from None
        raise


def count_rows(spec: InputSpec, cfg: Config) -> stats_mod.Partial:
    """The profile's counting pass: each block's partial straight from its rows (`CountRows`), merged once,
    with progress lines as the partials come."""
    progress = PassProgress(spec.rows, "profile: counting", verb="counted")
    return stats_mod.combine(_per_block(read_normalised(spec, cfg, counted=True), "partial", progress))


def _per_block(blobs: ray.data.Dataset, column: str, progress: PassProgress | None) -> list[Any]:
    """`column` of each row of `blobs` (one row per block, with the block's `rows`), read as the blocks
    finish; `progress` is told each block's rows."""
    out = []
    for row in blobs.iter_rows():
        out.append(row[column])
        if progress is not None:
            progress.add(row["rows"])
    return out


def collect_partials(ds: ray.data.Dataset) -> stats_mod.Partial:
    blobs = ds.map_batches(stats_mod.block_partial, batch_format="pyarrow", batch_size=None)
    return stats_mod.combine([row["partial"] for row in blobs.take_all()])


def count_top_pairs(
    ds: ray.data.Dataset,
    total: stats_mod.Partial,
    k: int,
    limit: int,
    progress: PassProgress | None = None,
) -> tuple[list[dict], bool]:
    """The k most frequent co-occurring train pairs: a second pass counting pairs among the `limit` most
    frequent train labels only (an M x M array on the driver), plus whether they are provably exact.
    `progress` is told the rows of each block counted."""
    if k <= 0:
        return [], True
    label_counts = total.splits["train"].label_counts
    candidates = stats_mod.pair_candidates(label_counts, limit)
    blobs = ds.map_batches(
        stats_mod.block_pairs, batch_format="pyarrow", batch_size=None, fn_args=(candidates,)
    )
    counts = stats_mod.combine_pairs(_per_block(blobs, "pairs", progress), len(candidates))
    pairs, exact = stats_mod.top_pairs(counts, candidates, label_counts, k)
    if not exact:
        log.warning(
            "top_pairs: pairs were counted among the %d most frequent of %d train labels; the %d-th pair "
            "count (%d) is below the most frequent label left out, so the list may miss pairs "
            "(label_stats.json top_pairs_exact=false; raise data.pair_candidates for an exact list)",
            len(candidates),
            len(label_counts),
            k,
            pairs[k - 1]["count"] if len(pairs) >= k else 0,
        )
    return pairs, exact


def _split_plan(spec: InputSpec, cfg: Config) -> tuple[str, dict[str, float] | None, str | None]:
    """(method, ratios to stratify with, which split the stratification re-divides), from discovery alone, so
    split folders that cannot give three splits fail before any row is read."""
    s = cfg.data.split
    three = {"train": s.train, "validation": s.validation, "test": s.test}
    folders = set(spec.by_split)
    if folders == {"train"}:
        return "train-folder-only+iterative-stratification", three, "train"
    if folders == {"train", "test"}:
        r = s.validation_from_train
        return "folders+validation-carved-from-train", {"train": 1 - r, "validation": r}, "train"
    if folders == set(SPLITS):
        return "folders", None, None
    if folders:
        missing = "train" if "train" not in folders else "test"
        raise InputError(
            f"{spec.uri}: split folders {sorted(folders)} found but no '{missing}/' folder, so three splits "
            "cannot be made. Give train/ alone (split three ways by data.split), train/ and test/ "
            "(validation carved from train), or all three."
        )
    if spec.has_split_column:
        return "split-column", None, None
    return "iterative-stratification", three, None


def _stratify(
    ds: ray.data.Dataset, ratios: dict[str, float], only: str | None, seed: int
) -> ray.data.Dataset:
    """Collect (group key, label set) of the rows to divide, stratify groups on the driver, write the splits
    back. A duplicate group (rows of one normalised text) is one row to the stratifier, with the union of its
    rows' labels, so all its rows land in one split.

    The label sets reach the driver as a CSR matrix built batch by batch from the Arrow label column, never
    as Python lists.
    """
    key_batches, index_batches, length_batches = [], [], []
    vocab: list[str] = []
    cols = ["_group", "labels", "_keep", "split"]
    for batch in ds.select_columns(cols).iter_batches(batch_format="pyarrow", batch_size=65536):
        mask = batch.column("_keep")
        if only is not None:
            mask = pc.and_(mask, pc.equal(batch.column("split"), only))
        batch = batch.filter(pc.fill_null(mask, False))
        key_batches.append(batch.column("_group").to_numpy())
        flat, lengths = stats_mod.flat_lists(batch.column("labels"))
        # Grow the vocabulary by this batch's new labels; indices point into it (sorted by name below).
        uniq = pc.unique(flat)
        if vocab:
            uniq = uniq.filter(pc.is_null(pc.index_in(uniq, value_set=pa.array(vocab, pa.string()))))
        vocab.extend(uniq.to_pylist())
        idx = pc.index_in(flat, value_set=pa.array(vocab, pa.string()))
        index_batches.append(idx.to_numpy(zero_copy_only=False).astype(np.int32))
        length_batches.append(lengths)
    keys = np.concatenate(key_batches) if key_batches else np.zeros(0, np.int64)
    if len(keys) == 0:
        raise InputError("no usable rows to split (every row was dropped by data.empty_policy)")
    indptr = np.zeros(len(keys) + 1, dtype=np.int64)
    np.cumsum(np.concatenate(length_batches), out=indptr[1:])
    # Columns in label-name order, so the split does not depend on the order Ray Data streams blocks in
    # (rows are ordered by key below).
    rank = np.empty(len(vocab), dtype=np.int32)
    rank[np.argsort(np.asarray(vocab, dtype=object), kind="stable")] = np.arange(len(vocab), dtype=np.int32)
    indices = rank[np.concatenate(index_batches)]
    y_all = sp.csr_matrix(
        (np.ones(len(indices), dtype=np.int8), indices, indptr), shape=(len(keys), len(vocab))
    )
    # One row per group: the union of its rows' labels (an indicator product, so any stream order gives it).
    keys, inverse = np.unique(keys, return_inverse=True)
    member = sp.csr_matrix(
        (np.ones(len(inverse), dtype=np.int32), (inverse, np.arange(len(inverse)))),
        shape=(len(keys), len(inverse)),
    )
    y = (member @ y_all.astype(np.int32)).astype(bool).astype(np.int8)
    del y_all, indices, index_batches, member
    t0 = time.perf_counter()
    names = stratified_assign(y, ratios, seed)
    log.info("stratified %d rows x %d labels in %.1fs", y.shape[0], y.shape[1], time.perf_counter() - t0)
    return ds.map_batches(_assign_splits, batch_format="pyarrow", fn_args=(keys, names, only)).materialize()


#: Split codes in the order a duplicate group spanning given splits is kept in (3: no split yet).
_SPLIT_NAMES = pa.array(list(SPLITS), pa.string())
_MAX_DUP_EXAMPLES = 5


def _dup_candidates(table: pa.Table) -> np.ndarray:
    """Rows that can be duplicates: kept for the output and with a text (empty texts are no group)."""
    mask = pc.and_(table.column("_keep"), pc.not_equal(table.column("_issue"), "empty_text"))
    return np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), dtype=bool)


def _split_codes(split: pa.ChunkedArray) -> np.ndarray:
    codes = pc.fill_null(pc.index_in(split, value_set=_SPLIT_NAMES), len(SPLITS))
    return np.asarray(codes.to_numpy(zero_copy_only=False), dtype=np.int8)


def _in_sorted(values: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(whether each value is in the sorted `keys`, its position there)."""
    if len(keys) == 0:
        return np.zeros(len(values), dtype=bool), np.zeros(len(values), dtype=np.int64)
    pos = np.clip(np.searchsorted(keys, values), 0, len(keys) - 1)
    return keys[pos] == values, pos


def _dup_scan(table: pa.Table) -> pa.Table:
    """map_batches: (group key, row key, split code) of the candidate rows, 17 bytes a row for the driver."""
    t = table.filter(pa.array(_dup_candidates(table)))
    codes = pa.array(_split_codes(t.column("split")), pa.int8())
    return pa.table({"g": t.column("_group"), "k": t.column("_key"), "c": codes})


def _rows_of(table: pa.Table, column: str, keys: np.ndarray) -> pa.Table:
    """map_batches: the candidate rows whose `column` (a key) is in the sorted `keys`."""
    found = _in_sorted(table.column(column).to_numpy(), keys)[0]
    return table.filter(pa.array(_dup_candidates(table) & found))


def _drop_copies(table: pa.Table, keys: np.ndarray, kept: np.ndarray) -> pa.Table:
    """map_batches: remove the candidate rows of the groups in the sorted `keys` whose split code is not their
    group's `kept` code (-1: remove them all, a merged row replaces them)."""
    found, pos = _in_sorted(table.column("_group").to_numpy(), keys)
    drop = _dup_candidates(table) & found & (_split_codes(table.column("split")) != kept[pos])
    return table.filter(pa.array(~drop))


def _gather(ds: ray.data.Dataset, column: str, keys: np.ndarray) -> pa.Table:
    """The candidate rows whose `column` is in `keys`, on the driver (only duplicate rows: few)."""
    parts = ray.get(ds.map_batches(_rows_of, batch_format="pyarrow", fn_args=(column, keys)).to_arrow_refs())
    return pa.concat_tables(parts)


def _check_ids(ds: ray.data.Dataset, groups: np.ndarray, row_keys: np.ndarray) -> None:
    """One id with two different normalised texts is an error: the id would name two documents."""
    pairs = np.unique(np.stack([row_keys, groups], axis=1), axis=0)
    bad = np.unique(pairs[1:, 0][pairs[1:, 0] == pairs[:-1, 0]])
    if len(bad) == 0:
        return
    texts: dict[str, set[str]] = {}
    for row in _gather(ds, "_key", bad[:_MAX_DUP_EXAMPLES]).select(["id", "text"]).to_pylist():
        texts.setdefault(row["id"], set()).add(row["text"][:60])
    detail = "; ".join(f"{rid!r}: {sorted(t)}" for rid, t in sorted(texts.items()))
    raise InputError(
        f"{len(bad)} id(s) name rows with different texts (after case, whitespace and NFC normalisation), "
        f"e.g. {detail}. An id must name one document: fix the ids, or leave the id column out to key rows "
        "by their text."
    )


def _resolve_duplicates(ds: ray.data.Dataset, policy: str) -> tuple[ray.data.Dataset, dict[str, Any]]:
    """Rows of one normalised text (a duplicate group) are resolved before the split and the statistics, so no
    text is both trained on and evaluated.

    A group spanning given splits keeps only its rows in the earliest of train -> validation -> test. Then
    `merge` replaces each group by one row (the first id by split, id, text; labels the union of the group's
    labels in that split), `keep` leaves the rows (the stratifier still keeps each group in one split), and
    `error` fails. Only the int64 keys come to the driver, and the rows of duplicate groups. Returns the
    dataset and the `duplicates` record of label_stats.json.
    """
    record: dict[str, Any] = {
        "policy": policy,
        "groups": 0,
        "rows_merged": 0,
        "rows_dropped_across_splits": 0,
        "conflicting_groups": 0,
        "examples": [],
        "conflicting_examples": [],
    }
    g_parts, k_parts, c_parts = [], [], []
    scan = ds.map_batches(_dup_scan, batch_format="pyarrow", batch_size=None)
    for batch in scan.iter_batches(batch_format="pyarrow", batch_size=None):
        g_parts.append(batch.column("g").to_numpy())
        k_parts.append(batch.column("k").to_numpy())
        c_parts.append(batch.column("c").to_numpy())
    if not g_parts or sum(map(len, g_parts)) == 0:
        return ds, record
    g, k, c = np.concatenate(g_parts), np.concatenate(k_parts), np.concatenate(c_parts)
    _check_ids(ds, g, k)
    order = np.lexsort((c, g))
    g, c = g[order], c[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    sizes = np.diff(np.r_[starts, len(g)])
    group_of_row = np.repeat(np.arange(len(starts)), sizes)
    later = c != c[starts][group_of_row]  # rows in a later split than their group's first
    dup_keys = g[starts[sizes > 1]]
    if len(dup_keys) == 0:
        log.info("duplicates: none (no two rows share a normalised text)")
        return ds, record
    if policy == "error":
        rows = _gather(ds, "_group", dup_keys[:_MAX_DUP_EXAMPLES]).select(["id", "_group"]).to_pylist()
        ids: dict[int, list[str]] = {}
        for row in rows:
            ids.setdefault(row["_group"], []).append(row["id"])
        raise InputError(
            f"{len(dup_keys)} group(s) of rows share one text (after case, whitespace and NFC "
            f"normalisation), e.g. ids {sorted(sorted(v) for v in ids.values())} (data.duplicates=error). "
            "Set data.duplicates=merge (one row per text, labels united) or keep."
        )
    rows = _gather(ds, "_group", dup_keys)
    by_group: dict[int, list[dict[str, Any]]] = {}
    for row in rows.to_pylist():
        by_group.setdefault(row["_group"], []).append(row)
    rank = {s: i for i, s in enumerate(SPLITS)}
    members = [
        sorted(rs, key=lambda r: (rank.get(r["split"], len(SPLITS)), r["id"], r["text"], r["labels"]))
        for rs in by_group.values()
    ]
    merged: list[dict[str, Any]] = []
    for group in sorted(members, key=lambda rs: rs[0]["id"]):
        kept = [r for r in group if r["split"] == group[0]["split"]]
        ids_ = [r["id"] for r in group][:_MAX_DUP_EXAMPLES]
        if len(record["examples"]) < _MAX_DUP_EXAMPLES:
            record["examples"].append(ids_)
        if len({frozenset(r["labels"]) for r in group}) > 1:
            record["conflicting_groups"] += 1
            if len(record["conflicting_examples"]) < _MAX_DUP_EXAMPLES:
                record["conflicting_examples"].append(ids_)
        if policy == "merge":
            labels = list(dict.fromkeys(lab for r in kept for lab in r["labels"]))
            merged.append({**kept[0], "labels": labels, "_issue": "" if labels else "no_labels"})
            record["rows_merged"] += len(kept) - 1
    record["groups"] = len(dup_keys)
    record["rows_dropped_across_splits"] = int(later.sum())
    if policy == "merge":
        keys, kept_code = dup_keys, np.full(len(dup_keys), -1, dtype=np.int8)
    else:
        spanning = np.unique(group_of_row[later])
        keys, kept_code = g[starts[spanning]], c[starts[spanning]]
    if len(keys):
        ds = ds.map_batches(_drop_copies, batch_format="pyarrow", fn_args=(keys, kept_code))
    if merged:
        ds = ds.union(ray.data.from_arrow(pa.Table.from_pylist(merged, schema=rows.schema)))
    log.info(
        "duplicates (data.duplicates=%s): %d group(s) of rows share a normalised text; %d row(s) merged, %d "
        "dropped as copies in a later given split; %d group(s) with conflicting label sets",
        policy,
        record["groups"],
        record["rows_merged"],
        record["rows_dropped_across_splits"],
        record["conflicting_groups"],
    )
    return ds.materialize(), record


def _check_vocabulary(total: stats_mod.Partial, policy: str) -> list[str]:
    """The model's vocabulary (the train labels, sorted) once `policy` has judged the labels seen only in
    validation / test: `error` fails; `zero-shot` keeps them in their rows, outside the vocabulary (the
    evaluation counts them as its zero-shot group), and logs how many; `drop` leaves them to the caller."""
    train_vocab = set(total.splits["train"].label_counts)
    if not train_vocab:
        raise InputError("the train split has no labelled rows")
    unknown = {s: sorted(set(total.splits[s].label_counts) - train_vocab) for s in ("validation", "test")}
    unknown = {s: u for s, u in unknown.items() if u}
    if unknown and policy == "error":
        detail = "; ".join(f"{s}: {len(u)} label(s) e.g. {u[:10]}" for s, u in unknown.items())
        raise InputError(
            f"label vocabulary differs between splits: labels absent from train appear in {detail}. "
            "Set data.unknown_label_policy=zero-shot to keep them (evaluated as the zero-shot group) or "
            "drop to remove them from those rows."
        )
    if unknown and policy == "zero-shot":
        log.info(
            "%d zero-shot label(s) (in validation / test, never in train) kept outside the %d-label "
            "vocabulary (%s; label_stats.json zero_shot_labels)",
            len(set().union(*unknown.values())),
            len(train_vocab),
            ", ".join(f"{s}: {len(u)}" for s, u in unknown.items()),
        )
    return sorted(train_vocab)


def check_issues(total: stats_mod.Partial) -> None:
    bad = {k: v for k, v in total.issues.items() if k.startswith("bad_split_value:")}
    if bad:
        values = sorted(k.split(":", 1)[1] for k in bad)
        examples = [e for k in bad for e in total.examples.get(k, [])][:5]
        raise InputError(
            f"split column holds values {values} that are not train / validation / test "
            f"(rows e.g. {examples})"
        )


def resolve_source(cfg: Config, run: RunLayout) -> str:
    """`data.source`, or for `synthetic` the run's corpus folder (written first when absent)."""
    if cfg.data.source != "synthetic":
        return cfg.data.source
    data_loc = run.data
    if not data_loc.exists():
        write_shards(cfg.data.synthetic, data_loc)
        log.info("wrote the synthetic corpus (%d docs) to %s", cfg.data.synthetic.num_docs, data_loc.uri)
    return data_loc.uri


def run_prepare(cfg: Config) -> dict[str, Any]:
    """Run the stage; returns the label statistics it wrote."""
    t0 = time.perf_counter()
    run = RunLayout.of(cfg)
    source = resolve_source(cfg, run)
    spec = discover(source, cfg.data, cfg.storage)
    log.info(
        "input %s: %d file(s)%s",
        source,
        len(spec.all_files),
        f", split folders {sorted(spec.by_split)}" if spec.by_split else "",
    )

    method, ratios, only = _split_plan(spec, cfg)  # before any read: impossible folder sets fail here
    ds = read_input(spec, cfg, source)
    ds, duplicates = _resolve_duplicates(ds, cfg.data.duplicates)
    if ratios is not None:
        ds = _stratify(ds, ratios, only, cfg.data.split.seed)
    total = collect_partials(ds)
    check_issues(total)
    vocab = _check_vocabulary(total, cfg.data.unknown_label_policy)
    dropped_unknown = {}
    if cfg.data.unknown_label_policy == "drop":
        extra = {s: sorted(set(total.splits[s].label_counts) - set(vocab)) for s in SPLITS}
        dropped_unknown = {s: u for s, u in extra.items() if u}
        if dropped_unknown:
            ds = ds.map_batches(_drop_unknown_labels, batch_format="pyarrow", fn_args=(vocab,)).materialize()
            total = collect_partials(ds)
    for split in SPLITS:
        if total.splits[split].docs == 0:
            raise InputError(f"the {split} split is empty after preparation (method {method})")

    pairs, exact = count_top_pairs(ds, total, cfg.data.top_pairs, cfg.data.pair_candidates)
    groups = cfg.data.groups
    doc = stats_mod.label_stats(total, groups.head_min, groups.tail_max, pairs, exact)
    doc["source"] = source
    doc["split"] = {"method": method, "ratios": ratios, "seed": cfg.data.split.seed}
    doc["duplicates"] = duplicates
    doc["empty_policy"] = cfg.data.empty_policy
    issues = {k: v["total"] for k, v in doc["row_issues"].items() if v["total"]}
    if issues:  # counted in label_stats.json with example ids; never dropped silently
        log.warning(
            "%s %d row(s) with %s (data.empty_policy=%s; example ids in label_stats.json row_issues)",
            "kept" if cfg.data.empty_policy == "keep" else "dropped",
            sum(issues.values()),
            ", ".join(f"{k}: {n}" for k, n in issues.items()),
            cfg.data.empty_policy,
        )
    doc["unknown_label_policy"] = cfg.data.unknown_label_policy
    doc["unknown_labels_dropped"] = dropped_unknown
    _write(ds, run, doc, cfg.data.rows_per_file)
    log.info(
        "prepare done in %.1fs: %s docs, %d labels -> %s",
        time.perf_counter() - t0,
        doc["documents"],
        doc["num_labels"],
        run.uri,
    )
    return doc


def _write(ds: ray.data.Dataset, run: Location, doc: dict, rows_per_file: int) -> None:
    prepared, stats_loc = run.prepared, run.label_stats
    if stats_loc.exists():  # the old statistics must not vouch for the new prepared/ while it is replaced
        stats_loc.fs.delete_file(stats_loc.path)
    with staged_dir(prepared) as stage:
        for split in SPLITS:
            part = ds.map_batches(_select_split, batch_format="pyarrow", fn_args=(split,))
            part.write_parquet(
                stage.join(split).path,
                filesystem=stage.fs,
                filename_provider=PartFiles(),
                min_rows_per_file=rows_per_file,
            )
    # Written last: later stages take prepared/ as complete only when label_stats.json exists.
    write_json(stats_loc, doc)
