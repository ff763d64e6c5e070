"""How far iterative stratification scales, ours (split.py) against scikit-multilearn: seconds, peak
memory and split quality.

    .venv/bin/python -m benchmarks.split_scaling [--rows 10000 --rows 100000 --rows 1000000 --labels 1000]
    .venv/bin/python -m benchmarks.split_scaling --smoke      # tiny sizes, seconds; writes to a temp file

Every measurement runs in its own child process, so each has its own peak RSS (`ru_maxrss`, which also counts
the interpreter, the imports and the synthetic data; `peak_rss_before_split_mb` is that figure just before the
split; `split_alloc_peak_mb` is the split's own allocation peak, from an untimed second run under
tracemalloc). Synthetic label sets are Zipf-distributed over --labels labels with 1 + Poisson(--per-doc - 1)
labels per row (as in the synthetic corpus); the --dense case has label frequencies between 1% and 15% (an
8k-label, many-labels-per-row corpus). scikit-multilearn (order=1, the implementation we replaced) runs
only up to --skmultilearn-max-rows rows: it took 243 s and 1 GB at 1e5 rows x 1,000 labels. Split quality
(`pipeline.data.split.proportion_error`) is compared on every synthetic size where both run and on the
Reuters-21578 training labels (reuters21578/train in the corpora folder, benchmarks/corpora.py).
Writes benchmarks/results/split_scaling.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from benchmarks.common.machine import machine_summary
from benchmarks.common.measure import ru_maxrss_mib
from benchmarks.common.paths import RESULTS, ROOT
from benchmarks.common.provenance import command_line, git_sha, package_versions
from benchmarks.common.results import write_json
from benchmarks.corpora import data_root
from pipeline.data.labels import csr_from_arrow
from pipeline.data.split import _ensure_in_first, proportion_error, stratified_assign

RATIOS = {"train": 0.7, "validation": 0.15, "test": 0.15}
REUTERS = data_root() / "reuters21578" / "train"


def zipf_labels(
    rows: int, labels: int, per_doc: float, seed: int = 0, exponent: float = 1.1
) -> sp.csr_matrix:
    """Rows with 1 + Poisson(per_doc - 1) distinct labels (at most `labels`); label j has p ~ 1/(j+1)^a.

    Vectorised: draw every row's labels with replacement at once, drop repeats within a row, redraw the
    shortfall (a few rounds; what is still short after 30 rounds stays short).
    """
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, labels + 1) ** exponent
    p /= p.sum()
    want = np.minimum(1 + rng.poisson(max(per_doc - 1.0, 0.0), size=rows), labels).astype(np.int64)
    keys = np.zeros(0, np.int64)
    short = want
    for _ in range(30):
        new_rows = np.repeat(np.arange(rows, dtype=np.int64), short)
        keys = np.sort(
            np.concatenate([keys, new_rows * labels + rng.choice(labels, size=len(new_rows), p=p)])
        )
        keys = keys[np.r_[True, keys[1:] != keys[:-1]]]  # np.unique is ~50x slower than this here
        short = want - np.bincount(keys // labels, minlength=rows)
        if not short.any():
            break
    indptr = np.zeros(rows + 1, np.int64)
    np.cumsum(np.bincount(keys // labels, minlength=rows), out=indptr[1:])
    return sp.csr_matrix((np.ones(len(keys), np.int8), keys % labels, indptr), shape=(rows, labels))


def dense_labels(
    rows: int, labels: int, per_doc: float, seed: int = 0, fmin: float = 0.01, fmax: float = 0.15
) -> sp.csr_matrix:
    """Independent labels with frequencies fmin + (fmax - fmin) * rank^-a, a chosen so a row has `per_doc`
    labels on average. Each label's rows are drawn by geometric gaps: O(nnz) work, not rows x labels.
    """
    if not labels * fmin <= per_doc <= labels * fmax:
        raise ValueError(f"{per_doc} labels per row is out of reach with frequencies in [{fmin}, {fmax}]")
    rank = np.arange(1, labels + 1, dtype=np.float64)
    lo, hi = 0.0, 50.0
    for _ in range(100):
        a = (lo + hi) / 2
        lo, hi = (a, hi) if (fmin + (fmax - fmin) * rank**-a).sum() > per_doc else (lo, a)
    freq = fmin + (fmax - fmin) * rank ** -((lo + hi) / 2)
    rng = np.random.default_rng(seed)
    cols = []
    for f in freq:
        positions = np.cumsum(rng.geometric(f, size=int(rows * f + 6 * np.sqrt(rows * f) + 16))) - 1
        while positions[-1] < rows:
            more = np.cumsum(rng.geometric(f, size=int(rows * f) + 16)) + positions[-1]
            positions = np.concatenate([positions, more])
        cols.append(positions[positions < rows])
    indptr = np.zeros(labels + 1, np.int64)
    np.cumsum([len(c) for c in cols], out=indptr[1:])
    indices = np.concatenate(cols)
    return sp.csc_matrix((np.ones(len(indices), np.int8), indices, indptr), shape=(rows, labels)).tocsr()


def reuters_labels(path: Path = REUTERS) -> sp.csr_matrix:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    column = pa.concat_tables(pq.read_table(f, columns=["labels"]) for f in sorted(path.glob("*.parquet")))
    column = column.column("labels")
    vocab = sorted(pc.unique(pc.list_flatten(column)).to_pylist())
    return csr_from_arrow(column, vocab)


def skmultilearn_assign(y: sp.csr_matrix, ratios: dict[str, float], seed: int) -> np.ndarray:
    """The implementation split.py had before: scikit-multilearn IterativeStratification, order 1."""
    from skmultilearn.model_selection import IterativeStratification

    names = list(ratios)
    # scikit-multilearn draws ties and label-free rows from numpy's global generator and ignores random_state.
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        strat = IterativeStratification(
            n_splits=len(names), order=1, sample_distribution_per_fold=[ratios[n] for n in names]
        )
        codes = np.full(y.shape[0], -1, dtype=np.int64)
        for fold, (_, test_idx) in enumerate(strat.split(np.zeros((y.shape[0], 1)), y)):
            codes[test_idx] = fold
    finally:
        np.random.set_state(state)
    _ensure_in_first(y, codes)
    return np.asarray(names, dtype=object)[codes]


def _child(impl: str, data: str, rows: int, labels: int, per_doc: float) -> dict:
    """One measurement (in a child process): build the label matrix, time the split, then score it."""
    if data == "zipf":
        y = zipf_labels(rows, labels, per_doc)
    elif data == "dense":
        y = dense_labels(rows, labels, per_doc)
    else:
        y = reuters_labels()
    if impl == "skmultilearn":
        import skmultilearn.model_selection  # noqa: F401  (import cost outside the timing, as for ours)
    before = ru_maxrss_mib()
    assign = stratified_assign if impl == "ours" else skmultilearn_assign
    t0 = time.perf_counter()
    names = assign(y, RATIOS, seed=0)
    seconds = time.perf_counter() - t0
    peak = ru_maxrss_mib()
    # The RSS peak often belongs to building the synthetic data; an untimed second run under tracemalloc
    # (numpy and scipy.sparse report their buffers to it) gives the split's own allocation peak.
    tracemalloc.start()
    assign(y, RATIOS, seed=0)
    split_alloc_peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return {
        "rows": y.shape[0],
        "labels": y.shape[1],
        "labels_per_doc": round(y.nnz / y.shape[0], 3),
        "nnz": int(y.nnz),
        "seconds": round(seconds, 3),
        "peak_rss_mb": round(peak, 1),
        "peak_rss_before_split_mb": round(before, 1),
        "split_alloc_peak_mb": round(split_alloc_peak, 1),
        "quality": {k: round(v, 5) for k, v in proportion_error(y, names, RATIOS).items()},
    }


def _run_child(impl: str, data: str, rows: int, labels: int, per_doc: float, timeout: int) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.split_scaling", "--child", impl, data, str(rows), str(labels)]
    try:
        proc = subprocess.run(
            [*cmd, str(per_doc)], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {"seconds": None, "note": f"did not finish within {timeout}s"}
    if proc.returncode != 0:
        return {"seconds": None, "note": f"exit {proc.returncode}: {proc.stderr.strip()[-500:]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.split_scaling", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--rows", type=int, action="append", default=None)
    parser.add_argument("--labels", type=int, default=1000)
    parser.add_argument("--per-doc", type=float, default=1.3)
    parser.add_argument("--skmultilearn-max-rows", type=int, default=10_000)
    parser.add_argument(
        "--dense", default="80000,7900,130", help="rows,labels,labels_per_doc of the dense case, or 'none'"
    )
    parser.add_argument("--no-reuters", action="store_true", help="skip the Reuters-21578 comparison")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per child process")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for tests; writes to a temp file")
    parser.add_argument("--out", default=None)
    parser.add_argument("--child", nargs=5, metavar=("IMPL", "DATA", "ROWS", "LABELS", "PER_DOC"))
    args = parser.parse_args(argv)
    if args.child:
        impl, data, rows, labels, per_doc = args.child
        result = _child(impl, data, int(rows), int(labels), float(per_doc))
        print(json.dumps(result), flush=True)
        return result

    if args.smoke:
        sizes, labels, sk_max, dense = args.rows or [1000], 50, 1000, "2000,300,12"
        reuters = False
        out_path = Path(args.out) if args.out else Path(tempfile.mkdtemp()) / "split_scaling.json"
    else:
        sizes, labels, dense = args.rows or [10_000, 100_000, 1_000_000], args.labels, args.dense
        sk_max, reuters = args.skmultilearn_max_rows, not args.no_reuters
        out_path = Path(args.out or RESULTS / "split_scaling.json")

    results = []
    for rows in sizes:
        ours = _run_child("ours", "zipf", rows, labels, args.per_doc, args.timeout)
        entry = {k: ours.get(k) for k in ("rows", "labels", "labels_per_doc", "nnz")}
        entry["rows"] = rows
        entry.update({k: v for k, v in ours.items() if k not in entry})
        if rows <= sk_max:
            sk = _run_child("skmultilearn", "zipf", rows, labels, args.per_doc, args.timeout)
            keep = ("seconds", "peak_rss_mb", "split_alloc_peak_mb", "quality", "note")
            entry["skmultilearn"] = {k: sk[k] for k in keep if k in sk}
        else:
            entry["skmultilearn"] = {"skipped": f"rows > --skmultilearn-max-rows {sk_max}"}
        print(json.dumps(entry), flush=True)
        results.append(entry)

    canonical = [
        *(["--smoke"] if args.smoke else []),
        *(f"--rows {r}" for r in sizes),
        f"--labels {labels} --per-doc {args.per_doc} --skmultilearn-max-rows {sk_max} --dense {dense}",
    ]
    out: dict = {
        "command": command_line("benchmarks.split_scaling", canonical),
        "git_sha": git_sha(),
        "machine": machine_summary(),
        "versions": package_versions("numpy", "scipy", "scikit-multilearn"),
        "ratios": RATIOS,
        "results": results,
    }
    if dense != "none":
        d_rows, d_labels, d_per_doc = dense.split(",")
        out["dense"] = _run_child("ours", "dense", int(d_rows), int(d_labels), float(d_per_doc), args.timeout)
        out["dense"]["label_frequency_range"] = [0.01, 0.15]
        print(json.dumps({"dense": out["dense"]}), flush=True)
    quality: dict = {}
    both = [r for r in results if "quality" in r["skmultilearn"]]
    if both:
        r = max(both, key=lambda r: r["rows"])
        quality["synthetic_zipf"] = {
            "rows": r["rows"],
            "labels": r["labels"],
            "ours": r["quality"],
            "skmultilearn": r["skmultilearn"]["quality"],
        }
    if reuters and REUTERS.is_dir():
        ours = _run_child("ours", "reuters", 0, 0, 0.0, args.timeout)
        sk = _run_child("skmultilearn", "reuters", 0, 0, 0.0, args.timeout)
        quality["reuters21578_train"] = {
            "path": str(REUTERS),
            "rows": ours.get("rows"),
            "labels": ours.get("labels"),
            "ours": {k: ours.get(k) for k in ("quality", "seconds", "peak_rss_mb", "split_alloc_peak_mb")},
            "skmultilearn": {
                k: sk.get(k) for k in ("quality", "seconds", "peak_rss_mb", "split_alloc_peak_mb")
            },
        }
    elif reuters:
        quality["reuters21578_train"] = {"skipped": f"{REUTERS} is absent"}
    out["quality"] = quality
    print(json.dumps({"quality": quality}), flush=True)
    write_json(out_path, out)
    print(f"wrote {out_path}", flush=True)
    return out


if __name__ == "__main__":
    main()
