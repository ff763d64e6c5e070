"""Find the input shards, check them against the input contract, and read them with Ray Data.

Every check names the file, the column and what was expected, before any Ray work starts or
anything is written.
"""

from __future__ import annotations

import fnmatch
import posixpath
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.core.config import DataSection, StorageSection
from pipeline.core.errors import InputError
from pipeline.core.storage import make_filesystem

SPLITS = ("train", "validation", "test")
_SPLIT_ALIASES = {
    "train": "train",
    "validation": "validation",
    "val": "validation",
    "dev": "validation",
    "valid": "validation",
    "test": "test",
}


@dataclass
class InputSpec:
    """What was found at the source: a filesystem, and files either per split folder or all together."""

    fs: pafs.FileSystem
    uri: str
    by_split: dict[str, list[str]] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    has_split_column: bool = False
    has_id_column: bool = False
    #: Rows in all files, from their footers.
    rows: int = 0

    @property
    def all_files(self) -> list[str]:
        return self.files + [f for fs in self.by_split.values() for f in fs]


def _display(uri: str, fs: pafs.FileSystem, path: str) -> str:
    if "://" in uri:
        return uri.split("://", 1)[0] + "://" + path
    return path


def _list_parquet(fs: pafs.FileSystem, base: str) -> list[str]:
    infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    return sorted(
        i.path
        for i in infos
        if i.type == pafs.FileType.File
        and i.path.endswith(".parquet")
        and not any(part.startswith((".", "_")) for part in posixpath.relpath(i.path, base).split("/"))
    )


def _expand(fs: pafs.FileSystem, path: str) -> list[str]:
    """A file, a folder (recursive), or a glob; globs are matched below their first wildcard-free prefix."""
    if any(ch in path for ch in "*?["):
        parts = path.split("/")
        first = next(i for i, p in enumerate(parts) if any(ch in p for ch in "*?["))
        base = "/".join(parts[:first]) or "/"
        return [p for p in _list_parquet(fs, base) if fnmatch.fnmatch(p, path)]
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        return [path]
    if info.type == pafs.FileType.Directory:
        return _list_parquet(fs, path)
    return []


def discover(source: str, data: DataSection, storage: StorageSection | None = None) -> InputSpec:
    """Locate the shards and validate every file's schema (metadata only, no rows are read)."""
    try:
        return _discover(source, data, storage)
    except OSError as err:  # an unreachable store or bucket, a denied listing
        raise InputError(f"{source}: cannot be listed or read ({err})") from None


def _discover(source: str, data: DataSection, storage: StorageSection | None) -> InputSpec:
    fs, path = make_filesystem(source, storage)
    path = path.rstrip("/")
    spec = InputSpec(fs=fs, uri=source)
    info = fs.get_file_info(path) if not any(ch in path for ch in "*?[") else None
    if info is not None and info.type == pafs.FileType.Directory:
        subdirs = {
            i.base_name: i.path
            for i in fs.get_file_info(pafs.FileSelector(path))
            if i.type == pafs.FileType.Directory and i.base_name in _SPLIT_ALIASES
        }
        for name, sub in sorted(subdirs.items()):
            split = _SPLIT_ALIASES[name]
            if split in spec.by_split:
                raise InputError(f"{source}: both '{name}/' and another folder name the {split} split")
            spec.by_split[split] = _list_parquet(fs, sub)
    if spec.by_split:  # which sets of split folders can make three splits is the prepare plan's call
        for split, files in spec.by_split.items():
            if not files:
                raise InputError(f"{source}: the {split} split folder holds no .parquet files")
    else:
        spec.files = _expand(fs, path)
        if not spec.files:
            raise InputError(
                f"{source}: no .parquet files found (expected a folder, a glob or a file of Parquet shards)"
            )
    _check_schemas(spec, data)
    return spec


def _is_string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def is_string_list(t: pa.DataType) -> bool:
    """list<string> or a large variant of either: what a labels column must be."""
    return (pa.types.is_list(t) or pa.types.is_large_list(t)) and _is_string(t.value_type)


def read_footer(fs: pafs.FileSystem, path: str, where: str) -> tuple[int, pa.Schema]:
    """(rows, Arrow schema) from a Parquet file's footer, without reading data; `where` names it in errors."""
    try:
        with fs.open_input_file(path) as f:
            meta = pq.ParquetFile(f).metadata
            return meta.num_rows, meta.schema.to_arrow_schema()
    except (pa.ArrowInvalid, OSError) as err:
        raise InputError(f"{where}: not a readable Parquet file ({err})") from None


#: Fewer documents than this cannot fill train, validation and test (a corpus of one raised a raw ValueError
#: in the split).
MIN_DOCUMENTS = 3


def _check_schemas(spec: InputSpec, data: DataSection) -> None:
    split_cols: list[bool] = []
    id_cols: list[bool] = []
    total_rows = 0
    for path in spec.all_files:
        where = _display(spec.uri, spec.fs, path)
        rows, schema = read_footer(spec.fs, path, where)
        total_rows += rows
        names = schema.names
        for col, kind in ((data.text_column, "text"), (data.labels_column, "labels")):
            if col not in names:
                raise InputError(
                    f"{where}: missing column '{col}' (the {kind} column); found columns {names}. "
                    f"Set data.{kind}_column if it is named differently."
                )
        t = schema.field(data.text_column).type
        if not _is_string(t):
            raise InputError(f"{where}: column '{data.text_column}' has type {t}, expected string")
        t = schema.field(data.labels_column).type
        if not is_string_list(t):
            raise InputError(
                f"{where}: column '{data.labels_column}' has type {t}, expected list<string> "
                "(one list of label names per row)"
            )
        has_split = data.split_column in names
        if has_split and not _is_string(schema.field(data.split_column).type):
            raise InputError(
                f"{where}: column '{data.split_column}' has type {schema.field(data.split_column).type}, "
                "expected string (train / validation / test)"
            )
        split_cols.append(has_split)
        id_cols.append(data.id_column in names)
    spec.rows = total_rows
    if total_rows == 0:
        raise InputError(f"{spec.uri}: the input holds no rows ({len(spec.all_files)} file(s), all empty)")
    if total_rows < MIN_DOCUMENTS:
        raise InputError(
            f"{spec.uri}: {total_rows} document(s); the pipeline needs at least {MIN_DOCUMENTS} (one each "
            "for train, validation and test)"
        )
    if len(set(id_cols)) > 1:
        raise InputError(
            f"{spec.uri}: column '{data.id_column}' is present in some files and missing in others"
        )
    spec.has_id_column = bool(id_cols and id_cols[0])
    if not spec.by_split:
        if len(set(split_cols)) > 1:
            raise InputError(
                f"{spec.uri}: column '{data.split_column}' is present in some files and missing in others"
            )
        spec.has_split_column = bool(split_cols and split_cols[0])


def normalise_split_name(value: str | None) -> str | None:
    return _SPLIT_ALIASES.get(value.strip().lower()) if isinstance(value, str) else None
