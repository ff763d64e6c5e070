"""Peer rows: LibMultiLabel's linear one-vs-rest (at its default decision and with its own thresholding),
napkinXC's label tree and PECOS's XR-Linear on TF-IDF features of the same prepared splits, each decided by
its own rule (PECOS, a ranker without one, by napkinXC's), measured with our metrics."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from benchmarks.common.libmultilabel import LabelCountsCSC
from benchmarks.common.measure import MIB, PeakRSS

PEERS = ("libmultilabel-1vsrest", "libmultilabel-thresholding", "napkinxc-plt", "pecos-xrlinear")
_MODULES = {
    "libmultilabel-1vsrest": "libmultilabel",
    "libmultilabel-thresholding": "libmultilabel",
    "napkinxc-plt": "napkinxc",
}
#: PECOS lives in a virtual environment of its own (it pins numpy < 2): `make bench-pecos` makes it.
PECOS_PYTHON = Path(__file__).resolve().parents[2] / ".venv-pecos" / "bin" / "python"
#: Labels PECOS returns per test document (its beam search ranks, it does not score every label).
PECOS_TOP_K = 100


def pecos_python() -> Path:
    """The interpreter PECOS runs in (`BML_PECOS_PYTHON` overrides the project's `.venv-pecos`)."""
    return Path(os.environ.get("BML_PECOS_PYTHON", PECOS_PYTHON))


def pecos_version() -> str | None:
    """libpecos's version in PECOS's environment (None without one)."""
    if not pecos_python().is_file():
        return None
    code = "import importlib.metadata as m; print(m.version('libpecos'))"
    out = subprocess.run([str(pecos_python()), "-c", code], capture_output=True, text=True, check=False)
    return out.stdout.strip() or None


def peer_unavailable(row: str) -> str | None:
    """None when the peer's package imports, else why the row is skipped."""
    if row not in PEERS:
        raise ValueError(f"unknown peer row {row!r}; known: {PEERS}")
    if row == "pecos-xrlinear":
        if not pecos_python().is_file():
            return f"{pecos_python()} not found (make bench-pecos makes PECOS's environment)"
        return None
    if importlib.util.find_spec(_MODULES[row]) is None:
        return f"{_MODULES[row]} is not installed (make bench-deps installs the `bench` extra)"
    return None


class SplitText:
    """A prepared split's texts and labels (as the training vocabulary's column indices) on the driver."""

    def __init__(self, run: Any, split: str, labels: list[str]) -> None:
        from pipeline.data.labels import csr_from_arrow
        from pipeline.training.train import column_batches

        self.texts = [t for col in column_batches(run, split, "text") for t in col.to_pylist()]
        parts = [
            csr_from_arrow(col, labels, ignore_unknown=True) for col in column_batches(run, split, "labels")
        ]
        self.y = sp.vstack(parts, format="csr").astype(np.int8)


def tfidf(train: SplitText, test: SplitText) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """scikit-learn's TfidfVectorizer at its defaults (what LibMultiLabel's Preprocessor fits)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer()
    return vec.fit_transform(train.texts).tocsr(), vec.transform(test.texts).tocsr()


def _libmultilabel(x_train, y_train, x_test, seed: int) -> tuple[sp.csr_matrix, np.ndarray]:
    import libmultilabel.linear as linear

    model = linear.train_1vsrest(y_train.astype(np.float64).tocsr(), x_train, options="", verbose=False)
    values = np.asarray(linear.predict_values(model, x_test), dtype=np.float32)
    return sp.csr_matrix(values > 0), values


def _libmultilabel_thresholding(x_train, y_train, x_test, seed: int) -> tuple[sp.csr_matrix, np.ndarray]:
    """One-vs-rest with the per-label offsets `train_thresholding` learns by 3-fold cross-validation on the
    training split (its micromacro-freq method); decided at decision value > 0, offsets included. The folds
    follow `seed`; liblinear's solvers also draw from C's rand(), which nothing reseeds, so a second fit in
    one process differs slightly (as 1vsrest's does)."""
    import libmultilabel.linear as linear

    np.random.seed(seed)  # train_thresholding draws its cross-validation folds from np.random
    y = LabelCountsCSC(y_train.astype(np.float64))
    model = linear.train_thresholding(y, x_train, options="", verbose=False)
    values = np.asarray(linear.predict_values(model, x_test), dtype=np.float32)
    return sp.csr_matrix(values > 0), values


def _napkinxc(x_train, y_train, x_test, seed: int) -> tuple[sp.csr_matrix, np.ndarray]:
    import tempfile

    from napkinxc.models import PLT

    with tempfile.TemporaryDirectory() as d:
        model = PLT(d, seed=seed)
        y = y_train.tocsr()
        model.fit(x_train, [y.indices[y.indptr[r] : y.indptr[r + 1]].tolist() for r in range(y.shape[0])])
        # Every label's estimate (top_k = all) as the scores; napkinXC's own decision: probability >= 0.5.
        ranked = model.predict_proba(x_test, top_k=y_train.shape[1])
    scores = np.zeros((x_test.shape[0], y_train.shape[1]), dtype=np.float32)
    for r, pairs in enumerate(ranked):
        for j, p in pairs:
            scores[r, int(j)] = p
    return sp.csr_matrix(scores >= 0.5), scores


def _pecos(x_train, y_train, x_test, seed: int) -> tuple[sp.csr_matrix, np.ndarray]:
    """XR-Linear in PECOS's own environment (benchmarks/longtail/pecos_runner.py); its top PECOS_TOP_K
    scores per document, the other labels 0; decided as napkinXC's: score >= 0.5."""
    runner = Path(__file__).with_name("pecos_runner.py")
    with tempfile.TemporaryDirectory(prefix="bml-pecos-") as d:
        for name, m in (("x_train", x_train), ("y_train", y_train), ("x_test", x_test)):
            sp.save_npz(f"{d}/{name}.npz", sp.csr_matrix(m))
        subprocess.run([str(pecos_python()), str(runner), d, str(PECOS_TOP_K)], check=True)
        top = sp.load_npz(f"{d}/scores.npz").tocsr()
    scores = top.toarray().astype(np.float32)
    return sp.csr_matrix(scores >= 0.5), scores


TRAINERS: dict[str, Callable[..., tuple[sp.csr_matrix, np.ndarray]]] = {
    "libmultilabel-1vsrest": _libmultilabel,
    "libmultilabel-thresholding": _libmultilabel_thresholding,
    "napkinxc-plt": _napkinxc,
    "pecos-xrlinear": _pecos,
}


def peer_row(
    row: str, train: SplitText, test: SplitText, features: tuple, measure: Callable, seed: int = 0
) -> dict[str, Any]:
    """Fit the peer on `features` (train, test TF-IDF), decide by its rule, measure on test."""
    x_train, x_test = features
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        pred, scores = TRAINERS[row](x_train, train.y, x_test, seed)
        seconds = time.perf_counter() - t0
    out = measure(test.y, pred, scores)
    out.update(train_seconds=round(seconds, 2), peak_rss_mb=round(rss.tree / MIB))
    return out
