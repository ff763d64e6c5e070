"""Batch scoring with Ray Data: an actor pool that loads the saved model once per actor.

Shared by the evaluate stage (validation and test) and the predict job (new shards).
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import numpy as np
import pyarrow as pa
import ray.data

from pipeline.config import StorageSection
from pipeline.storage import download_dir, locate


class Scorer:
    """map_batches actor: text -> per-label probabilities (sigmoid of the logits, no loss shift)."""

    def __init__(self, model_uri: str, storage: StorageSection | None, device: str, batch_size: int) -> None:
        import torch

        from pipeline.model import load_model

        loc = locate(model_uri, storage)
        path = loc.path
        if not loc.is_local:  # each actor keeps its own local copy of the model folder
            self._tmp = tempfile.TemporaryDirectory(prefix="bml-model-")
            path = os.path.join(self._tmp.name, "model")
            download_dir(loc, path)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = load_model(path, device=device)
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        scores = self.model.predict_scores(list(batch["text"]), batch_size=self.batch_size)
        # Label lists arrive as object arrays of arrays; plain lists keep them a list<string> column.
        out = {
            k: ([list(x) for x in v] if v.dtype == object and k != "id" else v)
            for k, v in batch.items()
            if k != "text"
        }
        out["scores"] = scores.astype(np.float32)
        return out


def score_dataset(
    ds: ray.data.Dataset,
    model_uri: str,
    storage: StorageSection | None = None,
    *,
    concurrency: int = 1,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    batch_size: int = 256,
) -> ray.data.Dataset:
    """Add a `scores` column (float32 [C] per row); keeps every other column except `text`."""
    return ds.map_batches(
        Scorer,
        fn_constructor_args=(model_uri, storage, "cuda" if num_gpus else "auto", batch_size),
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=concurrency),
        num_cpus=num_cpus,
        num_gpus=num_gpus,
    )


def decide(table: pa.Table, labels: list[str], thresholds: np.ndarray, at_least_one: bool) -> pa.Table:
    """map_batches (pyarrow): add `predicted` (list<string>) from `scores` and the per-label thresholds."""
    from pipeline.thresholds import apply_thresholds

    c = len(labels)
    scores = (
        np.stack(table.column("scores").to_numpy(zero_copy_only=False)).astype(np.float32)
        if table.num_rows
        else np.zeros((0, c), np.float32)
    )
    pred = apply_thresholds(scores, thresholds, at_least_one=at_least_one)
    names = np.asarray(labels, dtype=object)
    predicted = [names[np.flatnonzero(row)].tolist() for row in pred]
    # Plain list<float> (not Ray's tensor extension type) so any Parquet reader can use the file.
    offsets = pa.array(np.arange(0, (len(scores) + 1) * c, c, dtype=np.int32))
    plain = pa.ListArray.from_arrays(offsets, pa.array(scores.reshape(-1), pa.float32()))
    table = table.set_column(table.schema.get_field_index("scores"), "scores", plain)
    return table.append_column("predicted", pa.array(predicted, pa.list_(pa.string())))


def collect_scores(ds: ray.data.Dataset, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(multi-hot y_true, scores) on the driver: threshold fitting and metrics need every row's scores."""
    from pipeline.model import encode_labels

    ys, ss = [], []
    index = {lab: i for i, lab in enumerate(labels)}
    for batch in ds.select_columns(["labels", "scores"]).iter_batches(batch_format="numpy", batch_size=8192):
        ys.append(encode_labels(batch["labels"], index))
        ss.append(np.stack(batch["scores"]).astype(np.float32))
    c = len(labels)
    y = np.concatenate(ys) if ys else np.zeros((0, c), np.float32)
    s = np.concatenate(ss) if ss else np.zeros((0, c), np.float32)
    return y, s
