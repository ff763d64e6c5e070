"""#24 items 7 and 8: a bad config or input is refused by the job entry points with one line, before Ray or
torch are imported, and nothing is written."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import corpus_table, storage_overrides, write_parquet

ROOT = Path(__file__).resolve().parents[1]
# Runs a job's cli() in a fresh interpreter, then prints which heavy modules were imported.
PROBE = (
    "import sys; from jobs.{job} import cli; rc = cli(sys.argv[1:]); "
    "print('imported:', sorted(m for m in ('ray', 'torch') if m in sys.modules)); sys.exit(rc)"
)


def _job(job: str, root: Path, *sets: str) -> tuple[int, str, str, float]:
    args = ["--set", f"run.output={root / 'runs'}", "--set", "run.name=r"]
    for s in sets:
        args += ["--set", s]
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(job=job), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, done.stdout, done.stderr, time.perf_counter() - t0


def _cases(root: Path) -> dict[str, tuple[list[str], str]]:
    good = corpus_table(["a text", "another text"], [["x"], ["y"]])
    write_parquet(root / "mixed" / "a.parquet", good)
    write_parquet(root / "mixed" / "b.parquet", {"text": ["t"], "tags": [["x"]]})
    (root / "corrupt").mkdir()
    write_parquet(root / "corrupt" / "a.parquet", good)
    (root / "corrupt" / "b.parquet").write_bytes(b"PAR1 not really parquet PAR1")
    write_parquet(root / "empty" / "a.parquet", corpus_table([], []))
    write_parquet(root / "one" / "a.parquet", corpus_table(["the only text"], [["x"]]))
    return {
        "missing folder": ([f"data.source={root / 'nowhere'}"], "no .parquet files found"),
        "a shard with another schema": (
            [f"data.source={root / 'mixed'}"],
            r"b\.parquet: missing column 'labels'",
        ),
        "a corrupt shard": ([f"data.source={root / 'corrupt'}"], r"b\.parquet: not a readable Parquet file"),
        "no rows": ([f"data.source={root / 'empty'}"], "the input holds no rows"),
        "one document": ([f"data.source={root / 'one'}"], r"1 document\(s\); the pipeline needs at least 3"),
    }


@pytest.mark.parametrize("job", ["prepare", "profile", "run_all", "retrain"])
def test_bad_input_fails_before_ray_or_torch(job, tmp_path):
    for name, (sets, message) in _cases(tmp_path).items():
        rc, out, err, _ = _job(job, tmp_path, *sets)
        assert rc == 1, (name, rc, err)
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, (name, err)
        assert re.search(message, err), (name, err)
        assert "imported: []" in out, (name, out)
        assert not (tmp_path / "runs").exists(), name


@pytest.mark.parametrize(
    "sets, message",
    [
        (["data.source="], "data.source"),
        (["run.name="], "run.name"),
        (["run.name=../elsewhere"], "run.name"),
    ],
)
def test_bad_config_fails_with_exit_code_2(sets, message, tmp_path):
    rc, out, err, _ = _job("prepare", tmp_path, *sets)
    assert rc == 2 and message in err and "imported: []" in out, (rc, err, out)


@pytest.mark.parametrize("job", ["evaluate", "run_all"])
def test_a_bad_label_names_file_fails_before_ray_or_torch(job, tmp_path):
    write_parquet(tmp_path / "names.parquet", {"label": ["x"], "title": ["a name"]})
    write_parquet(tmp_path / "good.parquet", {"label": ["x"], "name": ["a name"]})
    for sets, message in (
        ([f"evaluate.label_names.source={tmp_path / 'absent.parquet'}"], "absent.parquet: not found"),
        ([f"evaluate.label_names.source={tmp_path / 'names.parquet'}"], r"no column\(s\) \['name'\]"),
        (
            [
                f"evaluate.label_names.source={tmp_path / 'good.parquet'}",
                "evaluate.label_names.encoder=/no/model",
            ],
            "evaluate.label_names.encoder: '/no/model' is not `minilm` or a local model folder",
        ),
    ):
        rc, out, err, _ = _job(job, tmp_path, *sets)
        assert rc == 1 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, (rc, err)
        assert re.search(message, err) and "imported: []" in out, (err, out)
        assert not (tmp_path / "runs").exists()


def test_missing_bucket_is_one_line(moto_storage, tmp_path):
    rc, out, err, _ = _job(
        "prepare", tmp_path, "data.source=s3://nobucket/corpus", *storage_overrides(moto_storage)
    )
    assert rc == 1 and err.startswith("error: s3://nobucket/corpus") and "imported: []" in out, (rc, err)
    assert len(err.strip().splitlines()) == 1, err


def test_a_corrupt_data_page_behind_a_sound_footer_is_one_line(tmp_path):
    """The preflight reads footers only; a shard whose data page is corrupt fails in the prepare (or profile)
    stage's read, ending with one line naming the cause instead of Ray's task error and remote traceback
    (#24 item 8)."""
    import pyarrow.parquet as pq

    texts = [f"document number {i} with some words" for i in range(200)]
    path = tmp_path / "src" / "a.parquet"
    path.parent.mkdir()
    pq.write_table(
        corpus_table(texts, [["a"] if i % 2 else ["b"] for i in range(200)]), path, compression="snappy"
    )
    column = pq.ParquetFile(path).metadata.row_group(0).column(0)
    start = column.dictionary_page_offset or column.data_page_offset
    data = bytearray(path.read_bytes())
    data[start + 20 : start + column.total_compressed_size - 10] = b"\xab" * (
        column.total_compressed_size - 30
    )
    path.write_bytes(bytes(data))
    assert pq.ParquetFile(path).metadata.num_rows == 200  # the footer still reads
    for job in ("prepare", "profile"):  # the profile's counting pass reads its results as they come
        rc, out, err, _ = _job(job, tmp_path, f"data.source={path.parent}", "ray.num_cpus=1")
        assert rc == 1, (job, rc, err[-3000:])
        last = err.strip().splitlines()[-1]
        assert last.startswith("error: ") and "data could not be read" in last and "Corrupt" in last, (
            job,
            err[-3000:],
        )
        # Ray Data logs the failed read task (with its traceback) above; the job's own end is this one line.
        assert "RayTaskError" not in last
        assert not (tmp_path / "runs" / "r" / "prepared").exists()
        assert not (tmp_path / "runs" / "r" / "profile.json").exists()
