"""The peer rows: LibMultiLabel's linear one-vs-rest on TF-IDF features of the same prepared splits, decided
by its own rules and measured with our metrics."""

from __future__ import annotations

import importlib.util
import time
from typing import Any

import numpy as np
import scipy.sparse as sp

from benchmarks.common.libmultilabel import LabelCountsCSC
from benchmarks.quality.config import BenchConfig
from benchmarks.quality.features import Features
from benchmarks.quality.heads import measure


def libmultilabel_available() -> str | None:
    """None when libmultilabel imports, else the reason it cannot run."""
    if importlib.util.find_spec("libmultilabel") is None:
        return "libmultilabel is not installed (make bench-deps installs the `bench` extra)"
    try:
        import libmultilabel.linear  # noqa: F401
    except Exception as err:  # an optional peer: any import failure skips it with its reason
        return f"libmultilabel.linear does not import: {type(err).__name__}: {err}"
    return None


def read_prepared_split(run: Any, split: str) -> tuple[list[str], list[list[str]]]:
    from pipeline.training.train import column_batches

    texts = [t for col in column_batches(run, split, "text") for t in col.to_pylist()]
    labels = [list(x) for col in column_batches(run, split, "labels") for x in col.to_pylist()]
    return texts, labels


def libmultilabel_rows(
    bc: BenchConfig, stats: dict[str, Any], inputs: Any, feats: Features, timings: dict[str, float]
) -> dict[str, dict[str, Any]]:
    """LibMultiLabel's linear methods on the run's prepared train split (TF-IDF), scored on its test split."""
    import libmultilabel.linear as linear

    seed = bc.cfg.run.seed
    t0 = time.perf_counter()
    train_x, train_y = read_prepared_split(inputs.run, "train")
    test_x, test_y = read_prepared_split(inputs.run, "test")
    pre = linear.Preprocessor()
    data = pre.fit_transform(
        {
            "data_format": "txt",
            "classes": list(inputs.labels),
            "train": {"x": train_x, "y": train_y},
            "test": {"x": test_x, "y": test_y},
        }
    )
    if list(pre.label_mapping) != list(inputs.labels):
        raise RuntimeError("libmultilabel's label mapping differs from the run's vocabulary")
    y_test = data["test"]["y"]
    y_test = np.asarray(y_test.toarray() if sp.issparse(y_test) else y_test, dtype=np.float32)
    # The same test documents as the embedded rows (row order may differ; each side keeps its own order).
    if y_test.shape != feats.y_test.shape or not np.array_equal(y_test.sum(0), feats.y_test.sum(0)):
        raise RuntimeError("libmultilabel's test labels differ from the embedded test split")
    timings["libmultilabel_tfidf"] = round(time.perf_counter() - t0, 1)
    options = bc.libmultilabel_options
    rows = {}
    for row, train_fn, y_train in (
        ("libmultilabel-1vsrest", linear.train_1vsrest, data["train"]["y"]),
        ("libmultilabel-thresholding", linear.train_thresholding, LabelCountsCSC(data["train"]["y"])),
    ):
        np.random.seed(seed)  # train_thresholding's cross-validation folds use np.random
        t0 = time.perf_counter()
        model = train_fn(y_train, data["train"]["x"], options=options, verbose=False)
        seconds = time.perf_counter() - t0
        values = np.asarray(linear.predict_values(model, data["test"]["x"]), dtype=np.float64)
        result = measure(bc, stats, inputs, y_test, values > 0, values)
        result.update(
            {
                "seconds": round(seconds, 1),
                "decision": "decision value > 0 (libmultilabel's get_positive_labels rule); for thresholding "
                "the value includes the per-label offset train_thresholding learned by cross-validation",
                "scores_for_ap": "libmultilabel decision values",
            }
        )
        timings[row] = round(seconds, 1)
        rows[row] = result
    return rows
