"""Encoder embeddings computed once with Ray Data and cached as Parquet: the input of the fast tune mode,
where every trial trains only the classification head (dropout + linear) on them.

The encoder is frozen here, so the search ranks loss families and weighting parameters on fixed features.
That is meant for pretrained encoders (`model.encoder: minilm`); with the embedded tiny-bert the features
come from a randomly initialised encoder and only the ranking between losses is informative.

Layout: `<run>/embeddings/<key>/data/split={train,validation}/*.parquet` (columns `embedding` list<float32>,
`labels` list<string>) and `done.json`, written last; `key` hashes everything that shapes the features.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from pipeline.core.config import Config
from pipeline.core.layout import RunLayout
from pipeline.core.parquet_reader import read_parquet
from pipeline.core.storage import Location, read_json, require_complete, staged_dir, write_json

log = logging.getLogger(__name__)

SPLITS = ("train", "validation")


class Embed:
    """map_batches actor: text -> pooled encoder output (the head's input), labels passed through."""

    def __init__(self, model_cfg: dict[str, Any], tokenizer: Any, seed: int, batch_size: int) -> None:
        import torch

        from pipeline.modeling.encoder import Tokenize
        from pipeline.modeling.model import build_model

        torch.manual_seed(seed)  # tiny-bert's random encoder must be the same in every actor and every run
        self.model = build_model(model_cfg, 1, tokenizer).eval()
        self.tokenize = Tokenize(tokenizer, max_length=model_cfg["max_length"], text_column="text")
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        import torch

        enc = self.tokenize(batch)
        out = []
        with torch.no_grad():
            for start in range(0, len(enc["input_ids"]), self.batch_size):
                ids = torch.from_numpy(enc["input_ids"][start : start + self.batch_size])
                mask = torch.from_numpy(enc["attention_mask"][start : start + self.batch_size])
                hidden = self.model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
                out.append(self.model.pool(hidden, mask).numpy().astype(np.float32))
        # The split comes from the file's path: .../prepared/<split>/part-*.parquet.
        split = [str(p).rstrip("/").split("/")[-2] for p in batch["path"]]
        return {
            "embedding": np.concatenate(out),
            "labels": [list(x) for x in batch["labels"]],
            "split": split,
        }


def cache_key(cfg: Config, stats: dict[str, Any], tokenizer: Any) -> str:
    blob = json.dumps(
        {
            "model": cfg.model.model_dump(exclude={"dropout", "init_bias_from_priors"}),
            "seed": cfg.run.seed,
            "documents": stats["documents"],
            "label_counts": stats["label_counts"],
            "vocab": sorted(tokenizer.get_vocab().items()),
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def ensure_embeddings(cfg: Config, run: RunLayout, stats: dict[str, Any], tokenizer: Any) -> Location:
    """The cache folder for this run's encoder and data, computing it with Ray Data if it is missing."""
    import ray.data

    from pipeline.modeling.model import ModelConfig

    folder = run.embeddings.join(cache_key(cfg, stats, tokenizer))
    if folder.join("done.json").exists():
        log.info("embeddings: reusing the cache at %s", folder.uri)
        return folder
    model_cfg = ModelConfig.from_any(cfg.model.model_dump(exclude={"init_bias_from_priors"})).to_dict()
    t0 = time.perf_counter()
    require_complete(run.prepared, "prepare")
    # Both splits in one pass: one actor pool, so the encoder is loaded once per actor, not once per split.
    ds = read_parquet(
        [run.prepared_split(split).path for split in SPLITS], filesystem=run.fs, include_paths=True
    )
    # Bounded blocks: a read block can be a whole large file, and a map over one block emits
    # its small output only at the end; Ray Data 2.60 aborts a dataset after 1,800 s without output (seen
    # embedding 43,410 GoEmotions documents with MiniLM on a loaded 2-CPU machine).
    ds = ds.select_columns(["text", "labels", "path"]).repartition(target_num_rows_per_block=2048)
    emb = ds.map_batches(
        Embed,
        fn_constructor_args=(model_cfg, tokenizer, cfg.run.seed, cfg.train.eval_batch_size),
        batch_size=512,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=cfg.evaluate.concurrency),
        num_cpus=cfg.evaluate.cpus_per_actor,
    )
    with staged_dir(folder.join("data")) as stage:
        emb.write_parquet(stage.path, filesystem=stage.fs, partition_cols=["split"])
    rows = {split: _rows(folder, split) for split in SPLITS}
    write_json(folder.join("done.json"), {"rows": rows, "seconds": round(time.perf_counter() - t0, 2)})
    log.info("embeddings cached in %.1fs at %s (%s rows)", time.perf_counter() - t0, folder.uri, rows)
    return folder


def _split_dir(folder: Location, split: str) -> Location:
    return folder.join("data", f"split={split}")


def _rows(folder: Location, split: str) -> int:
    return sum(
        pq.ParquetFile(folder.fs.open_input_file(p)).metadata.num_rows
        for p in _parts(_split_dir(folder, split))
    )


def _parts(loc: Location) -> list[str]:
    import pyarrow.fs as pafs

    infos = loc.fs.get_file_info(pafs.FileSelector(loc.path))
    return sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(".parquet"))


@dataclass
class HeadData:
    """The cached features of one split and its labels as a 0/1 CSR matrix (rows x labels)."""

    x: np.ndarray
    y: sp.csr_matrix


def load_split(folder: Location, split: str, labels: list[str]) -> HeadData:
    from pipeline.data.labels import csr_from_arrow

    tables = [
        pq.read_table(folder.fs.open_input_file(p), columns=["embedding", "labels"])
        for p in _parts(_split_dir(folder, split))
    ]
    table = pa.concat_tables(tables) if tables else None
    if table is None or table.num_rows == 0:
        raise ValueError(f"{_split_dir(folder, split).uri}: no cached embeddings")
    x = np.stack(table.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)
    # Zero-shot labels (outside the train vocabulary) have no head output: left out of the targets.
    return HeadData(x, csr_from_arrow(table.column("labels"), labels, ignore_unknown=True))


def cache_info(folder: Location) -> dict[str, Any]:
    return read_json(folder.join("done.json"))
