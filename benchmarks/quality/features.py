"""The frozen encoder's features of the three splits: train and validation from the pipeline's embedding
cache (`ensure_embeddings`, as tune.mode=embeddings), test with the same `Embed` class in the driver."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

log = logging.getLogger("benchmarks.quality")


@dataclass
class Features:
    """Frozen-encoder features of the three splits; y dense float32 (rows x labels)."""

    train: Any  # pipeline.training.embeddings.HeadData (as cached, handed to train_head unchanged)
    val: Any
    x_test: np.ndarray
    y_val: np.ndarray
    y_test: np.ndarray


def dense(y: Any) -> np.ndarray:
    """HeadData.y may be a dense array or a scipy.sparse matrix."""
    return np.asarray(y.toarray() if sp.issparse(y) else y, dtype=np.float32)


def embed_test(cfg: Any, inputs: Any, cache_key: str) -> tuple[np.ndarray, list[list[str]], float | None]:
    """Test embeddings with the pipeline's `Embed` class (the map_batches actor of `ensure_embeddings`),
    called here in the driver on the prepared test files: the same encoder, pooling, max_length, seed and
    batch sizes as train and validation, without starting another actor process. Kept in the work folder
    next to the pipeline's cache (same key), so a reused --work-dir does not embed test again."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from pipeline.modeling.model import ModelConfig
    from pipeline.training.embeddings import Embed

    run = inputs.run
    saved = Path(run.path) / "bench" / f"test-embeddings-{cache_key}.npz"
    if run.is_local and saved.exists():
        with np.load(saved, allow_pickle=False) as z:
            seconds = float(z["seconds"]) if "seconds" in z else None
            log.info("test embeddings: reusing %s (computed in %ss)", saved, seconds)
            return z["x"], json.loads(str(z["labels"])), seconds
    t0 = time.perf_counter()
    model_cfg = ModelConfig.from_any(cfg.model.model_dump(exclude={"init_bias_from_priors"})).to_dict()
    embed = Embed(model_cfg, inputs.featurizer.tokenizer, cfg.run.seed, cfg.train.eval_batch_size)
    loc = run.join("prepared", "test")
    infos = run.fs.get_file_info(pafs.FileSelector(loc.path))
    files = sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(".parquet"))
    xs: list[np.ndarray] = []
    labels: list[list[str]] = []
    for path in files:
        table = pq.read_table(run.fs.open_input_file(path), columns=["text", "labels"])
        for batch in table.to_batches(max_chunksize=512):
            texts = batch.column("text").to_pylist()
            rows = [list(x) for x in batch.column("labels").to_pylist()]
            out = embed(
                {
                    "text": np.array(texts, dtype=object),
                    "labels": np.array(rows + [None], dtype=object)[:-1],
                    "path": np.array([path] * len(texts), dtype=object),
                }
            )
            xs.append(np.asarray(out["embedding"], dtype=np.float32))
            labels.extend(rows)
    x = np.concatenate(xs)
    seconds = time.perf_counter() - t0
    if run.is_local:
        saved.parent.mkdir(parents=True, exist_ok=True)
        np.savez(saved, x=x, labels=np.array(json.dumps(labels)), seconds=np.array(seconds))
    return x, labels, seconds


def load_features(cfg: Any, inputs: Any, stats: dict[str, Any], timings: dict[str, float]) -> Features:
    from pipeline.modeling.model import encode_labels
    from pipeline.training.embeddings import cache_info, ensure_embeddings, load_split

    t0 = time.perf_counter()
    cache = ensure_embeddings(cfg, inputs.run, stats, inputs.featurizer.tokenizer)
    elapsed = time.perf_counter() - t0
    computed = cache_info(cache).get("seconds")
    # A reused cache reports the time it took when it was computed (done.json), flagged as reused.
    timings["embeddings_train_validation"] = computed if computed is not None else round(elapsed, 1)
    timings["reused"]["embeddings_train_validation"] = computed is not None and elapsed < 0.5 * computed
    train = load_split(cache, "train", inputs.labels)
    val = load_split(cache, "validation", inputs.labels)
    key = cache.uri.rstrip("/").split("/")[-1]
    t0 = time.perf_counter()
    x_test, test_labels, seconds = embed_test(cfg, inputs, key)
    timings["embeddings_test"] = None if seconds is None else round(seconds, 1)
    timings["reused"]["embeddings_test"] = time.perf_counter() - t0 < 0.5 * (seconds or float("inf"))
    y_test = encode_labels(test_labels, {lab: i for i, lab in enumerate(inputs.labels)})
    return Features(train, val, x_test, dense(val.y), dense(y_test))
