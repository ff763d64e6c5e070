"""Peer rows: LibMultiLabel's linear one-vs-rest (at its default decision and with its own thresholding),
napkinXC's label tree and PECOS's XR-Linear on TF-IDF features of the same prepared splits, each decided by
its own rule (PECOS, a ranker without one, by napkinXC's), measured with our metrics; optionally the same
scores decided by our per-label thresholds fitted on the peer's validation scores (`+<suffix>` rows)."""

from __future__ import annotations

import importlib.util
import logging
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

log = logging.getLogger("benchmarks.longtail.peers")

PEERS = ("libmultilabel-1vsrest", "libmultilabel-thresholding", "napkinxc-plt", "pecos-xrlinear")
_MODULES = {
    "libmultilabel-1vsrest": "libmultilabel",
    "libmultilabel-thresholding": "libmultilabel",
    "napkinxc-plt": "napkinxc",
}
#: PECOS lives in a virtual environment of its own (it pins numpy < 2): `make bench-pecos` makes it.
PECOS_PYTHON = Path(__file__).resolve().parents[2] / ".venv-pecos" / "bin" / "python"
#: Labels PECOS returns per document by default (its beam search ranks, it does not score every label);
#: a benchmark config's `bench.pecos_top_k` sets it.
PECOS_TOP_K = 100
#: Width of PECOS's beam search over its label tree by default (PECOS's own default); a benchmark config's
#: `bench.pecos_beam_size` sets it. A label outside the beam's clusters gets no score at all, so the width,
#: not the top k, bounds what PECOS can rank.
PECOS_BEAM_SIZE = 10

#: A fitted peer: dense float32 scores (documents x labels) of a feature matrix.
Scorer = Callable[[sp.csr_matrix], np.ndarray]


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


def tfidf(train: SplitText, *others: SplitText) -> list[sp.csr_matrix]:
    """scikit-learn's TfidfVectorizer at its defaults (what LibMultiLabel's Preprocessor fits), fitted on
    `train`: the features of train, then of each of `others`."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer()
    return [vec.fit_transform(train.texts).tocsr(), *(vec.transform(o.texts).tocsr() for o in others)]


def _libmultilabel(x_train, y_train, seed: int, folder: str) -> Scorer:
    import libmultilabel.linear as linear

    model = linear.train_1vsrest(y_train.astype(np.float64).tocsr(), x_train, options="", verbose=False)
    return lambda x: np.asarray(linear.predict_values(model, x), dtype=np.float32)


def _libmultilabel_thresholding(x_train, y_train, seed: int, folder: str) -> Scorer:
    """One-vs-rest with the per-label offsets `train_thresholding` learns by 3-fold cross-validation on the
    training split (its micromacro-freq method), in its decision values. The folds follow `seed`;
    liblinear's solvers also draw from C's rand(), which nothing reseeds, so a second fit in one process
    differs slightly (as 1vsrest's does)."""
    import libmultilabel.linear as linear

    np.random.seed(seed)  # train_thresholding draws its cross-validation folds from np.random
    y = LabelCountsCSC(y_train.astype(np.float64))
    model = linear.train_thresholding(y, x_train, options="", verbose=False)
    return lambda x: np.asarray(linear.predict_values(model, x), dtype=np.float32)


def _napkinxc(x_train, y_train, seed: int, folder: str) -> Scorer:
    from napkinxc.models import PLT

    model = PLT(folder, seed=seed)
    y = y_train.tocsr()
    model.fit(x_train, [y.indices[y.indptr[r] : y.indptr[r + 1]].tolist() for r in range(y.shape[0])])
    n_labels = y_train.shape[1]

    def score(x: sp.csr_matrix) -> np.ndarray:
        ranked = model.predict_proba(x, top_k=n_labels)  # every label's estimate
        scores = np.zeros((x.shape[0], n_labels), dtype=np.float32)
        for r, pairs in enumerate(ranked):
            for j, p in pairs:
                scores[r, int(j)] = p
        return scores

    return score


def _pecos(
    x_train, y_train, seed: int, folder: str, top_k: int = PECOS_TOP_K, beam_size: int = PECOS_BEAM_SIZE
) -> Scorer:
    """XR-Linear in PECOS's own environment (benchmarks/longtail/pecos_runner.py); its top `top_k` scores
    per document (beam search of width `beam_size`), the other labels 0."""
    runner = [str(pecos_python()), str(Path(__file__).with_name("pecos_runner.py"))]
    for name, m in (("x_train", x_train), ("y_train", y_train)):
        sp.save_npz(f"{folder}/{name}.npz", sp.csr_matrix(m))
    subprocess.run([*runner, "train", folder], check=True)

    def score(x: sp.csr_matrix) -> np.ndarray:
        sp.save_npz(f"{folder}/x.npz", sp.csr_matrix(x))
        subprocess.run([*runner, "predict", folder, str(top_k), str(beam_size)], check=True)
        return sp.load_npz(f"{folder}/scores.npz").toarray().astype(np.float32)

    return score


#: row -> (fit(x_train, y_train, seed, folder) -> Scorer, the peer's own decision on its scores).
TRAINERS: dict[str, tuple[Callable[..., Scorer], Callable[[np.ndarray], np.ndarray]]] = {
    "libmultilabel-1vsrest": (_libmultilabel, lambda s: s > 0),
    "libmultilabel-thresholding": (_libmultilabel_thresholding, lambda s: s > 0),  # offsets included
    "napkinxc-plt": (_napkinxc, lambda s: s >= 0.5),  # napkinXC's own decision: probability >= 0.5
    "pecos-xrlinear": (_pecos, lambda s: s >= 0.5),  # a ranker without a rule: napkinXC's
}

#: Per-label thresholds fitted on a peer's validation scores: (y_val, s_val) -> an object whose
#: `apply(scores)` decides (`thresholds.ThresholdResult`), and the settings to record with the row.
Thresholder = tuple[Callable[[sp.csr_matrix, np.ndarray], Any], dict[str, Any]]


def peer_rows(
    row: str,
    train: SplitText,
    test: SplitText,
    features: list[sp.csr_matrix],
    measure: Callable,
    seed: int = 0,
    validation: SplitText | None = None,
    thresholders: dict[str, Thresholder] | None = None,
    pecos_top_k: int = PECOS_TOP_K,
    pecos_beam_size: int = PECOS_BEAM_SIZE,
) -> dict[str, dict[str, Any]]:
    """Fit the peer on `features` (train, test[, validation] TF-IDF) and measure it on test: `row` decided by
    its own rule, and for each {suffix: thresholder} `row+suffix` decided by thresholds fitted on its
    validation scores (same model, same test scores; needs `validation` and its features).

    train_seconds: fitting and scoring test (scoring validation is left out, so the figure stays the
    peer's cost at its own rule); threshold_seconds: scoring validation and fitting the thresholds."""
    thresholders = thresholders or {}
    if thresholders and (validation is None or len(features) < 3):
        raise ValueError("thresholded peer rows need the validation split and its features")
    fit, decide = TRAINERS[row]
    options = {"top_k": pecos_top_k, "beam_size": pecos_beam_size} if row == "pecos-xrlinear" else {}
    with PeakRSS() as rss, tempfile.TemporaryDirectory(prefix=f"bml-{row}-") as folder:
        # The peers print nothing while they fit (LibMultiLabel's one-vs-rest takes ~10 minutes on EURLEX57K).
        (n, f), c = features[0].shape, train.y.shape[1]
        log.info("%s: fitting %d documents x %d features, %d labels", row, n, f, c)
        t0 = time.perf_counter()
        score = fit(features[0], train.y, seed, folder, **options)
        log.info("%s: fitted in %.0f s; scoring test", row, time.perf_counter() - t0)
        s_test = score(features[1])
        seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        s_val = score(features[2]) if thresholders else None
        val_seconds = time.perf_counter() - t0
        log.info("%s: test%s scored", row, " and validation" if thresholders else "")
    out = {row: measure(test.y, sp.csr_matrix(decide(s_test)), s_test)}
    out[row].update(train_seconds=round(seconds, 2), peak_rss_mb=round(rss.tree / MIB), **options)
    for suffix, (fit_thresholds, settings) in thresholders.items():
        t0 = time.perf_counter()
        fitted = fit_thresholds(validation.y, s_val)
        pred = sp.csr_matrix(fitted.apply(s_test))
        t_seconds = round(val_seconds + time.perf_counter() - t0, 2)
        name = f"{row}+{suffix}"
        out[name] = measure(test.y, pred, s_test)
        out[name].update(
            train_seconds=out[row]["train_seconds"],
            peak_rss_mb=out[row]["peak_rss_mb"],
            threshold_seconds=t_seconds,
            thresholds=settings,
            **options,
        )
    return out
