"""Batch scoring with Ray Data: an actor pool that loads a saved model once per actor.

Shared by the evaluate stage (validation and test), the predict job (new shards) and retraining (the current
model on the challenger's test split): scores per row, the thresholded decision, the scored rows as the
driver reads them for thresholds and metrics (labels collected, scores in blocks), progress lines, and the
resource check that keeps Ray Data from waiting forever.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import ray
import ray.data
import scipy.sparse as sp
from ray.data.dataset import MaterializedDataset

from pipeline.core.config import EvaluateSection, StorageSection
from pipeline.core.resources import plan_scoring
from pipeline.core.storage import download_dir, locate, require_complete
from pipeline.evaluation.blocks import ScoreBlocks, block_rows, check_block

log = logging.getLogger(__name__)


class Scorer:
    """map_batches actor: text -> per-label probabilities (sigmoid of the logits, no loss shift)."""

    def __init__(
        self,
        model_uri: str,
        storage: StorageSection | None,
        device: str,
        batch_size: int,
        counter: Any = None,
    ) -> None:
        import torch

        from pipeline.modeling.model import load_model

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
        self.counter = counter

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        scores = self.model.predict_scores(list(batch["text"]), batch_size=self.batch_size)
        if self.counter is not None:  # fire and forget: the driver reads the total (RowProgress)
            self.counter.add.remote(len(scores))
        # Label lists arrive as object arrays of arrays; plain lists keep them a list<string> column.
        out = {
            k: ([list(x) if isinstance(x, np.ndarray) else x for x in v] if v.dtype == object else v)
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
    settings: EvaluateSection | None = None,
    counter: Any = None,
) -> ray.data.Dataset:
    """Add a `scores` column (float32 [C] per row); keeps every other column except `text`.

    `settings`: the scoring actors (`concurrency`, `cpus_per_actor`, `gpus_per_actor`) and `batch_size`;
    `counter`: `pipeline.core.progress.RowProgress.counter`, to which each actor adds the rows it scored.
    """
    e = settings or EvaluateSection()
    require_complete(locate(model_uri, storage), "train")  # here, not as each actor's constructor error
    return ds.map_batches(
        Scorer,
        fn_constructor_args=(
            model_uri,
            storage,
            "cuda" if e.gpus_per_actor else "auto",
            e.batch_size,
            counter,
        ),
        batch_size=e.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=e.concurrency),
        num_cpus=e.cpus_per_actor,
        num_gpus=e.gpus_per_actor,
    )


def decide(table: pa.Table, labels: list[str], thresholds: np.ndarray, at_least_one: bool) -> pa.Table:
    """map_batches (pyarrow): add `predicted` (list<string>) from `scores` and the per-label thresholds."""
    from pipeline.evaluation.thresholds import apply_thresholds

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


class DatasetBlocks(ScoreBlocks):
    """The ``scores`` column of a materialised scored dataset as row blocks (``pipeline.evaluation.blocks``),
    read from the object store on each pass: the driver holds one block, not documents x labels.

    Each pass checks that its rows come in the order of ``ids`` (the order the labels were collected in),
    so labels and scores cannot be paired wrongly."""

    def __init__(
        self, ds: MaterializedDataset, ids: pa.Array, n_labels: int, rows: int | None = None
    ) -> None:
        self.ds, self.ids = ds, ids
        self.shape = (len(ids), int(n_labels))
        self.rows = rows or block_rows(n_labels)

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        at = 0
        for batch in self.ds.iter_batches(batch_format="pyarrow", batch_size=self.rows):
            if not batch.num_rows:
                continue
            expected = self.ids.slice(at, batch.num_rows)
            if len(expected) != batch.num_rows or not batch.column("id").combine_chunks().equals(expected):
                raise RuntimeError("scored rows came in another order than on the first pass")
            yield at, check_block(np.stack(batch.column("scores").to_numpy(zero_copy_only=False)))
            at += batch.num_rows
        if at != self.shape[0]:
            raise RuntimeError(f"read {at} rows of scores, expected {self.shape[0]}")


def scored_blocks(
    ds: MaterializedDataset, labels: list[str], ignore_unknown: bool = False
) -> tuple[sp.csr_matrix, DatasetBlocks]:
    """(0/1 CSR y_true, the scores as :class:`DatasetBlocks`) of a materialised scored dataset (columns
    ``id``, ``labels``, ``scores``): one pass reads the labels and ids; the scores stay in the object store.
    A label outside ``labels`` is an error unless ``ignore_unknown`` (zero-shot labels of a prepared split:
    no score column)."""
    from pipeline.data.labels import csr_from_arrow

    c = len(labels)
    ys, ids = [], []
    # The plain dataset, as every pass of DatasetBlocks reads it (a projection could order blocks otherwise).
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=block_rows(c)):
        ys.append(csr_from_arrow(batch.column("labels"), labels, ignore_unknown))
        ids.append(batch.column("id").combine_chunks())
    y = sp.vstack(ys, format="csr") if ys else sp.csr_matrix((0, c), dtype=np.int8)
    return y, DatasetBlocks(ds, pa.concat_arrays(ids) if ids else pa.array([], pa.string()), c)


def check_scoring_resources(
    ecfg: EvaluateSection, stage: str = "predict", cluster: dict[str, float] | None = None
) -> None:
    """:func:`pipeline.core.resources.plan_scoring` against `cluster` (default: the live cluster's)."""
    plan_scoring(ecfg, stage, ray.cluster_resources() if cluster is None else cluster)
