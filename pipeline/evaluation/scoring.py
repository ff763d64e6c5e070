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
from collections import deque
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
    """The ``scores`` column of a materialised scored dataset as row blocks (``pipeline.evaluation.blocks``).

    :meth:`each` and :meth:`fold` run the block function in Ray tasks beside the dataset's blocks (one task
    per dataset block, at most a task per cluster CPU in flight), which return only its results: the driver
    never reads the scores, so its memory is the statistics, not documents x labels. The dataset's blocks
    are fixed once (``parts``: block, first and end row in it), so every pass sees the rows in the order the
    labels were collected in."""

    def __init__(
        self,
        parts: list[tuple[Any, int, int]],
        ids: pa.Array,
        n_labels: int,
        rows: int | None = None,
    ) -> None:
        self.parts, self.ids = parts, ids
        self.shape = (len(ids), int(n_labels))
        self.rows = rows or block_rows(n_labels)
        self.first = np.concatenate([[0], np.cumsum([end - start for _, start, end in parts])]).astype(int)
        if self.first[-1] != self.shape[0]:
            raise RuntimeError(f"the dataset's blocks hold {self.first[-1]} rows, expected {self.shape[0]}")

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        return self.each(_whole_block)

    def each(self, fn: Any, *args: Any) -> Iterator[tuple[int, Any]]:
        for results in self._run(fn, None, args):
            yield from results

    def fold(self, fn: Any, merge: Any, *args: Any) -> Any:
        out = None
        for part in self._run(fn, merge, args):
            if part is not None:
                out = part if out is None else merge(out, part)
        return out

    def _run(self, fn: Any, merge: Any, args: tuple[Any, ...]) -> Iterator[Any]:
        """Each dataset block's task result, in row order."""
        shared = [ray.put(x) for x in (fn, *args)]  # once per pass, not once per task
        window = max(1, int(ray.cluster_resources().get("CPU", 1)))
        pending: deque[Any] = deque()
        for (ref, start, end), first in zip(self.parts, self.first, strict=False):
            pending.append(
                _block_task.remote(ref, start, end, int(first), self.shape[1], self.rows, merge, *shared)
            )
            if len(pending) >= window:
                yield ray.get(pending.popleft())
        while pending:
            yield ray.get(pending.popleft())


def _whole_block(a: int, block: np.ndarray) -> np.ndarray:
    return block


def _block_scores(table: pa.Table, width: int) -> np.ndarray:
    if not table.num_rows:
        return np.zeros((0, width), np.float32)
    scores = check_block(np.stack(table.column("scores").to_numpy(zero_copy_only=False)))
    if scores.shape[1] != width:
        raise RuntimeError(f"scored rows hold {scores.shape[1]} scores, expected {width}")
    return scores


@ray.remote(num_cpus=1)
def _block_task(
    block: Any, start: int, end: int, first: int, width: int, rows: int, merge: Any, fn: Any, *args: Any
) -> Any:
    """``fn`` on the rows [start, end) of a dataset block, ``rows`` at a time (first row ``first`` of the
    whole): the list of ``(first row, result)``, or the results merged by ``merge`` when given."""
    from ray.data.block import BlockAccessor

    table = BlockAccessor.for_block(block).to_arrow().slice(start, end - start)
    out: list[tuple[int, Any]] = []
    merged = None
    for a in range(0, table.num_rows, rows):
        part = fn(first + a, _block_scores(table.slice(a, rows), width), *args)
        if merge is None:
            out.append((first + a, part))
        else:
            merged = part if merged is None else merge(merged, part)
    return out if merge is None else merged


@ray.remote(num_cpus=1)
def _labels_task(block: Any, start: int, end: int, labels: list[str], ignore_unknown: bool) -> Any:
    """(0/1 CSR labels, ids) of the rows [start, end) of a scored dataset block."""
    from ray.data.block import BlockAccessor

    from pipeline.data.labels import csr_from_arrow

    table = BlockAccessor.for_block(block).to_arrow().slice(start, end - start)
    return csr_from_arrow(table.column("labels"), labels, ignore_unknown), table.column("id").combine_chunks()


def dataset_parts(ds: MaterializedDataset) -> list[tuple[Any, int, int]]:
    """(block, first row, end row) of each block of ``ds``, in its order (slices of blocks honoured)."""
    parts = []
    for bundle in ds.iter_internal_ref_bundles():
        for entry, piece in zip(bundle.blocks, bundle.slices, strict=True):
            if piece is not None:
                parts.append((entry.ref, int(piece.start_offset), int(piece.end_offset)))
            elif entry.metadata.num_rows:
                parts.append((entry.ref, 0, int(entry.metadata.num_rows)))
            elif entry.metadata.num_rows is None:
                raise RuntimeError("a scored block does not know its rows")
    return parts


def scored_blocks(
    ds: MaterializedDataset, labels: list[str], ignore_unknown: bool = False
) -> tuple[sp.csr_matrix, DatasetBlocks]:
    """(0/1 CSR y_true, the scores as :class:`DatasetBlocks`) of a materialised scored dataset (columns
    ``id``, ``labels``, ``scores``): Ray tasks read the labels and ids of each block; the scores stay in the
    object store. A label outside ``labels`` is an error unless ``ignore_unknown`` (zero-shot labels of a
    prepared split: no score column)."""
    c = len(labels)
    parts = dataset_parts(ds)
    shared = ray.put(labels)
    read = [_labels_task.remote(ref, start, end, shared, ignore_unknown) for ref, start, end in parts]
    ys, ids = [], []
    for y, i in ray.get(read):
        ys.append(y)
        ids.append(i)
    y = sp.vstack(ys, format="csr") if ys else sp.csr_matrix((0, c), dtype=np.int8)
    return y, DatasetBlocks(parts, pa.concat_arrays(ids) if ids else pa.array([], pa.string()), c)


def check_scoring_resources(
    ecfg: EvaluateSection, stage: str = "predict", cluster: dict[str, float] | None = None
) -> None:
    """:func:`pipeline.core.resources.plan_scoring` against `cluster` (default: the live cluster's)."""
    plan_scoring(ecfg, stage, ray.cluster_resources() if cluster is None else cluster)
