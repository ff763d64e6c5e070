"""#24 item 4: a folder output written through staged_dir is the old or the new one, never a mix, and what a
killed write left beside it is removed by the next write, locally and on object storage."""

from __future__ import annotations

import uuid

import pytest

from pipeline.core.config import StorageSection
from pipeline.core.errors import InputError
from pipeline.core.storage import (
    COMPLETE_MARKER,
    download_dir,
    is_complete,
    locate,
    read_bytes,
    remove_leftovers,
    require_complete,
    staged_dir,
    write_bytes,
)
from tests.conftest import s3_bucket


def _killed_write(root, name: str, files: dict[str, bytes]) -> None:
    """What a process killed inside staged_dir(root/name) leaves: a staging folder with part of the files."""
    leftover = root.join(f".staging-{uuid.uuid4().hex}-{name}")
    for rel, data in files.items():
        write_bytes(leftover.join(rel), data)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_staged_output_is_whole_and_leftovers_go(where, tmp_path, request):
    if where == "s3":
        storage = request.getfixturevalue("moto_storage")
        s3_bucket(storage, "staged")
        root = locate("s3://staged/run", StorageSection(**storage))
    else:
        root = locate(str(tmp_path / "run"))
    report = root.join("report")
    with staged_dir(report) as stage:
        write_bytes(stage.join("a.txt"), b"old a")
        write_bytes(stage.join("b.txt"), b"old b")
    # A write killed half-way: its staging folder holds the new a.txt only; the report is still the old one.
    _killed_write(root, "report", {"a.txt": b"new a"})
    assert any(".staging-" in p for p in root.files()) and read_bytes(report.join("a.txt")) == b"old a"
    with pytest.raises(RuntimeError, match="boom"):
        with staged_dir(report) as stage:  # the next write removes it first; a write that fails, at once
            write_bytes(stage.join("a.txt"), b"failed a")
            raise RuntimeError("boom")
    assert not any(".staging-" in p for p in root.files())
    marker = [COMPLETE_MARKER] if where == "s3" else []  # object storage: the folder's completion marker
    assert sorted(p.rsplit("/", 1)[1] for p in report.files()) == [*marker, "a.txt", "b.txt"]
    assert read_bytes(report.join("a.txt")) == b"old a"
    _killed_write(root, "report", {"a.txt": b"half"})
    _killed_write(root, "other", {"x": b"not this output's"})
    with staged_dir(report) as stage:
        write_bytes(stage.join("a.txt"), b"new a")
    assert read_bytes(report.join("a.txt")) == b"new a" and not report.join("b.txt").exists()
    leftovers = [p for p in root.files() if ".staging-" in p or ".old-" in p]
    assert len(leftovers) == 1 and leftovers[0].endswith("-other/x")  # another output's is not touched
    assert remove_leftovers(report) == []


def test_object_storage_readers_refuse_a_folder_without_its_marker(moto_storage, tmp_path):
    """On object storage a folder is copied object by object: the marker, written last, says it is whole;
    a reader refuses the folder without it (a copy killed half-way, or still running), with one line."""
    s3_bucket(moto_storage, "marked")
    model = locate("s3://marked/run/model", StorageSection(**moto_storage))
    with staged_dir(model) as stage:
        write_bytes(stage.join("weights.bin"), b"w")
        write_bytes(stage.join("sub", "config.json"), b"{}")
    assert is_complete(model) and model.join(COMPLETE_MARKER).exists()
    download_dir(model, tmp_path / "copy")
    assert sorted(p.name for p in (tmp_path / "copy").rglob("*") if p.is_file()) == [
        "config.json",
        "weights.bin",
    ]
    model.fs.delete_file(model.join(COMPLETE_MARKER).path)  # as a copy killed before its last object
    assert not is_complete(model)
    with pytest.raises(InputError, match=r"model is incomplete \(no _COMPLETE.*run the train stage again"):
        require_complete(model, "train")
    with pytest.raises(InputError, match="incomplete"):
        download_dir(model, tmp_path / "again", stage="train")
    assert not (tmp_path / "again").exists()
    local = locate(str(tmp_path / "copy"))
    assert is_complete(local) and is_complete(model.join("absent"))  # local folders are renamed in whole
