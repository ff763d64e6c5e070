"""Local paths and object-store URIs behind one pyarrow.fs interface, with atomic writes.

Atomicity: on a local filesystem a file is written under a temporary name and renamed; a folder of outputs is
written into a staging folder and renamed into place. On object stores an object only becomes visible when its
upload completes, so a file is written directly; a folder is staged under a sibling prefix and copied
object by object, and readers trust a folder only once its marker file (written last) exists.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pyarrow.fs as pafs

from pipeline.core.config import StorageSection

log = logging.getLogger(__name__)

#: Written last into a folder output on object storage: its files are all there (readers check it).
COMPLETE_MARKER = "_COMPLETE"


@dataclass(frozen=True)
class Location:
    """A filesystem plus a path inside it (no scheme); `uri` is what users see in messages."""

    fs: pafs.FileSystem
    path: str
    uri: str

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    @property
    def address(self) -> str:
        """An absolute path (local) or a URI: names this location from any working directory or node."""
        return self.path if self.is_local else self.uri

    def join(self, *parts: str) -> Location:
        path = posixpath.join(self.path, *parts)
        uri = self.uri.rstrip("/") + "/" + "/".join(parts)
        return Location(self.fs, path, uri)

    @property
    def parent(self) -> Location:
        """The folder holding this location."""
        return Location(self.fs, posixpath.dirname(self.path), posixpath.dirname(self.uri.rstrip("/")))

    def exists(self) -> bool:
        return self.fs.get_file_info(self.path).type != pafs.FileType.NotFound

    def is_dir(self) -> bool:
        return self.fs.get_file_info(self.path).type == pafs.FileType.Directory

    def files(self, suffix: str = "") -> list[str]:
        """Paths of the files under this folder (recursive, sorted), filtered by suffix."""
        infos = self.fs.get_file_info(pafs.FileSelector(self.path, recursive=True, allow_not_found=True))
        return sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(suffix))


def make_filesystem(uri: str, storage: StorageSection | None = None) -> tuple[pafs.FileSystem, str]:
    storage = storage or StorageSection()
    if uri.startswith("s3://"):
        kwargs: dict[str, Any] = {}
        for key in ("endpoint_override", "scheme", "access_key", "secret_key", "region"):
            value = getattr(storage, key)
            if value is not None:
                kwargs[key] = value
        return pafs.S3FileSystem(**kwargs), uri[len("s3://") :]
    if "://" in uri:
        fs, path = pafs.FileSystem.from_uri(uri)
        return fs, path
    return pafs.LocalFileSystem(), posixpath.abspath(uri)


def locate(uri: str, storage: StorageSection | None = None) -> Location:
    fs, path = make_filesystem(uri, storage)
    return Location(fs, path.rstrip("/") or "/", uri)


def write_bytes(loc: Location, data: bytes) -> None:
    """Write a file so that no reader ever sees it half-written."""
    parent = posixpath.dirname(loc.path)
    loc.fs.create_dir(parent, recursive=True)
    if not loc.is_local:
        with loc.fs.open_output_stream(loc.path) as out:
            out.write(data)
        return
    tmp = posixpath.join(parent, f".tmp-{uuid.uuid4().hex}-{posixpath.basename(loc.path)}")
    try:
        with loc.fs.open_output_stream(tmp) as out:
            out.write(data)
        loc.fs.move(tmp, loc.path)
    finally:
        if loc.fs.get_file_info(tmp).type != pafs.FileType.NotFound:
            loc.fs.delete_file(tmp)


def write_json(loc: Location, obj: Any) -> None:
    write_bytes(loc, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def read_bytes(loc: Location) -> bytes:
    with loc.fs.open_input_stream(loc.path) as f:
        return f.read()


def read_json(loc: Location) -> Any:
    return json.loads(read_bytes(loc))


def delete_file(loc: Location) -> None:
    """Remove the file at ``loc`` if there is one."""
    if loc.exists():
        loc.fs.delete_file(loc.path)


def delete_dir(loc: Location) -> None:
    if loc.exists():
        loc.fs.delete_dir(loc.path)


_LEFTOVER = re.compile(r"^\.staging-[0-9a-f]{32}-(?P<a>.+)$|^(?P<b>.+)\.old-[0-9a-f]{32}$")


def remove_leftovers(final: Location) -> list[str]:
    """Delete what a killed :func:`staged_dir` of `final` left beside it (its staging folder, or the old
    folder it was swapping out); returns their paths. Only the run's lease holder writes a run's outputs, so
    no live writer owns them."""
    parent = posixpath.dirname(final.path)
    name = posixpath.basename(final.path)
    infos = final.fs.get_file_info(pafs.FileSelector(parent, allow_not_found=True))
    gone = []
    for info in infos:
        m = _LEFTOVER.match(info.base_name)
        if m and (m.group("a") or m.group("b")) == name and info.type == pafs.FileType.Directory:
            final.fs.delete_dir(info.path)
            gone.append(info.path)
    if gone:
        log.warning("removed %d leftover(s) of an interrupted write of %s: %s", len(gone), final.uri, gone)
    return gone


@contextmanager
def staged_dir(final: Location) -> Iterator[Location]:
    """Yield a staging folder; on success it replaces `final` whole, on error it is removed.

    Readers of `final` therefore see the old complete output or the new complete output, never a mix.
    Leftovers of an earlier write of `final` that was killed are removed first (:func:`remove_leftovers`).
    """
    remove_leftovers(final)
    stage = Location(
        final.fs,
        posixpath.join(
            posixpath.dirname(final.path), f".staging-{uuid.uuid4().hex}-{posixpath.basename(final.path)}"
        ),
        final.uri + ".staging",
    )
    stage.fs.create_dir(stage.path, recursive=True)
    try:
        yield stage
    except BaseException:
        delete_dir(stage)
        raise
    if final.is_local:
        old = None
        if final.exists():
            old = final.path + f".old-{uuid.uuid4().hex}"
            final.fs.move(final.path, old)
        final.fs.move(stage.path, final.path)
        if old is not None:
            final.fs.delete_dir(old)
        return
    delete_dir(final)  # its marker goes with it: from here readers refuse the folder until the copy ends
    for path in stage.files():
        rel = posixpath.relpath(path, stage.path)
        final.fs.copy_file(path, posixpath.join(final.path, rel))
    write_json(final.join(COMPLETE_MARKER), {"files": len(stage.files())})
    delete_dir(stage)


def is_complete(loc: Location) -> bool:
    """Whether a folder output can be read whole (see :func:`require_complete`); True for what is absent or
    local."""
    return loc.is_local or not loc.is_dir() or loc.join(COMPLETE_MARKER).exists()


def require_complete(loc: Location, stage: str) -> None:
    """Refuse a folder output on object storage whose marker is missing (its write was interrupted, or is
    running). Local folders are renamed into place whole and need none."""
    if not is_complete(loc):
        from pipeline.core.errors import InputError

        raise InputError(
            f"{loc.uri} is incomplete (no {COMPLETE_MARKER}: its write was interrupted or is still running); "
            f"run the {stage} stage again"
        )


def upload_dir(local: str | os.PathLike[str], dest: Location) -> None:
    """Copy a local folder to `dest` as one unit (staged, then swapped in)."""
    with staged_dir(dest) as stage:
        pafs.copy_files(os.fspath(local), stage.path, destination_filesystem=stage.fs)


def download_dir(src: Location, local: str | os.PathLike[str], stage: str = "train") -> None:
    """Copy a folder output to a local folder (its completion marker checked, not copied)."""
    require_complete(src, stage)
    pafs.copy_files(src.path, os.fspath(local), source_filesystem=src.fs)
    marker = os.path.join(os.fspath(local), COMPLETE_MARKER)
    if os.path.exists(marker):
        os.remove(marker)
