"""How far iterative stratification (scikit-multilearn, on the driver) scales: seconds and peak memory.

    .venv/bin/python -m benchmarks.split_scaling [--rows 10000 --rows 50000 ...]

Label sets are Zipf-distributed (like the synthetic corpus); only (row, label set) pairs are used, as in the
prepare stage. Writes benchmarks/results/split_scaling.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_CHILD = """
import json, resource, sys, time
import numpy as np
from pipeline.split import label_matrix, stratified_assign
rows, labels, per_doc = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
rng = np.random.default_rng(0)
p = 1.0 / np.arange(1, labels + 1) ** 1.1
p /= p.sum()
label_rows = [rng.choice(labels, size=min(1 + rng.poisson(per_doc - 1), labels), replace=False, p=p).tolist()
              for _ in range(rows)]
y = label_matrix(label_rows, labels)
t0 = time.perf_counter()
stratified_assign(y, {"train": 0.7, "validation": 0.15, "test": 0.15}, seed=0)
print(json.dumps({"seconds": time.perf_counter() - t0,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, action="append", default=None)
    parser.add_argument("--labels", type=int, default=90)
    parser.add_argument("--per-doc", type=float, default=1.3)
    parser.add_argument("--timeout", type=int, default=900)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "split_scaling.json"))
    args = parser.parse_args()
    results = []
    for rows in args.rows or [10_000, 50_000, 100_000]:
        try:
            proc = subprocess.run(
                [sys.executable, "-c", _CHILD, str(rows), str(args.labels), str(args.per_doc)],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=args.timeout,
                check=True,
            )
            entry = {"rows": rows, **json.loads(proc.stdout.strip().splitlines()[-1])}
        except subprocess.TimeoutExpired:
            entry = {"rows": rows, "seconds": None, "note": f"did not finish within {args.timeout}s"}
        print(entry, flush=True)
        results.append(entry)
    out = {
        "command": "python -m benchmarks.split_scaling "
        + " ".join(f"--rows {r['rows']}" for r in results)
        + f" --labels {args.labels} --per-doc {args.per_doc}",
        "labels": args.labels,
        "labels_per_doc": args.per_doc,
        "machine": "2 CPUs (one used), 24 GiB",
        "results": results,
    }
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
