"""The evaluate stage's driver memory at the label-space sizes users bring (issue #25, item 2).

Evaluates a model that `benchmarks.longtail` trained (its --work-dir) once more, in a fresh process and a
copy of the row's run folder, and samples the driver's resident memory from /proc: `rss` as the system
counts it, split into `anon` (the driver's own), `shmem` (object store pages it read: the scored splits,
owned by the store and shared with it) and `file` (mapped libraries). Also records the stage's seconds and
headline figures, which must not change between code versions (the streamed evaluation is exact).

    python -m benchmarks.eval_memory --work-dir <path> --dataset synthetic-7900 --row db-sparse-l2

Run it with another checkout's `pipeline` first on PYTHONPATH (`PYTHONPATH=<checkout> python
<this file> ...`) to measure that code: `code_sha` records which `pipeline` package was measured. A row is
kept per (dataset, row, code_sha).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: PYTHONPATH's packages first, then this checkout's
    sys.path.append(str(Path(__file__).resolve().parents[1]))

from benchmarks.common.paths import RESULTS, ROOT  # noqa: E402
from benchmarks.common.provenance import run_header, utc_now  # noqa: E402
from benchmarks.common.results import write_json  # noqa: E402

FIELDS = ("VmRSS", "RssAnon", "RssShmem", "RssFile")
OUT = RESULTS / "eval_memory.json"


class ProcPeaks:
    """Peaks of this process's /proc/self/status memory fields (MiB), sampled on a thread."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval, self.peak = interval, dict.fromkeys(FIELDS, 0.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> dict[str, float]:
        now = {}
        with open("/proc/self/status") as f:
            for line in f:
                key = line.split(":", 1)[0]
                if key in FIELDS:
                    now[key] = int(line.split()[1]) / 1024
        return now

    def _run(self) -> None:
        while not self._stop.is_set():
            for k, v in self.sample().items():
                self.peak[k] = max(self.peak[k], v)
            time.sleep(self.interval)

    def __enter__(self) -> ProcPeaks:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def code_sha() -> str | None:
    """The commit of the checkout the imported `pipeline` package comes from (+ '-dirty')."""
    import pipeline

    where = Path(pipeline.__file__).resolve().parents[1]
    try:
        git = ["git", "-C", str(where)]
        head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run([*git, "diff", "--quiet", "HEAD", "--"], check=False).returncode == 1
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() + ("-dirty" if dirty else "")


def measure(work: Path, dataset: str, row: str) -> dict[str, Any]:
    from benchmarks.common.ray_session import benchmark_ray
    from benchmarks.corpora import data_root
    from benchmarks.longtail.driver import load_bench, row_config

    config = ROOT / "benchmarks" / "configs" / "longtail" / f"{dataset}.yaml"
    bench = load_bench(config)
    if row not in bench.rows or row in bench.model_of:
        raise SystemExit(f"{config}: no trained row {row!r}")
    src = work / bench.key / row
    if not (src / "model" / "model_config.json").is_file():
        raise SystemExit(f"{src}/model is absent: train it with python -m benchmarks.longtail --rows {row}")
    name = f"{row}-eval-memory"
    dst = work / bench.key / name
    shutil.rmtree(dst, ignore_errors=True)
    skip = shutil.ignore_patterns("checkpoints", "report", "predictions", "*.staging-*")
    shutil.copytree(src, dst, ignore=skip, copy_function=os.link)  # the model can be GBs: hard links
    cfg = row_config(bench, work, data_root(), name, bench.rows[row])
    from pipeline.evaluation.evaluate import run_evaluate

    with benchmark_ray(2):
        peaks = ProcPeaks()
        baseline = peaks.sample()  # imports and Ray up, before the stage
        with peaks:
            t0 = time.perf_counter()
            doc = run_evaluate(cfg)
            seconds = time.perf_counter() - t0
    shutil.rmtree(dst, ignore_errors=True)
    o, docs = doc["overall"], doc.get("data", {}).get("documents", {})
    return {
        "dataset": dataset,
        "row": row,
        "code_sha": code_sha(),
        "measured": utc_now(),
        "documents": {k: docs.get(k) for k in ("validation", "test")},
        "labels": doc.get("data", {}).get("num_labels"),
        "evaluate_seconds": round(seconds, 1),
        **{f"peak_{k.lower()}_mb": round(v) for k, v in peaks.peak.items()},
        **{f"baseline_{k.lower()}_mb": round(v) for k, v in baseline.items()},
        **{k: o.get(k) for k in ("micro_f1", "macro_f1", "macro_ap", "p_at_1", "psp_at_5")},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", type=Path, required=True, help="benchmarks.longtail's --work-dir")
    parser.add_argument("--dataset", default="synthetic-7900")
    parser.add_argument("--row", default="db-sparse-l2")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    row = measure(args.work_dir, args.dataset, args.row)
    print(json.dumps(row), flush=True)
    doc = json.loads(args.out.read_text()) if args.out.exists() else {}
    key = (row["dataset"], row["row"], row["code_sha"])
    rows = [r for r in doc.get("rows", []) if (r["dataset"], r["row"], r["code_sha"]) != key]
    header = run_header("benchmarks.eval_memory", argv, ["ray", "numpy", "pyarrow"])
    write_json(args.out, {**header, "rows": [*rows, row]})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
