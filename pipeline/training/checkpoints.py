"""Training checkpoints: the files of one (`state.pt`, `meta.json`), the fingerprint a resumed run must match,
and which checkpoint of earlier attempts a run resumes from.

A checkpoint folder holds `STATE_FILE` (weights, optimizer, scheduler, scaler, loop state and the best epoch's
weights, written by the worker loop) and `META_FILE`, a small sidecar the driver reads without loading
weights: the fingerprint of the configuration that made it, its epoch, and whether training finished.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import posixpath
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import torch
from ray.train import Checkpoint

from pipeline.core.config import Config
from pipeline.core.errors import CheckpointError
from pipeline.core.storage import Location

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"
META_FILE = "meta.json"

#: Train settings that do not change the model: resources, retries, bookkeeping.
TRAIN_RESOURCE_KEYS = frozenset(
    {
        "num_workers",
        "use_gpu",
        "cpus_per_worker",
        "gpus_per_worker",
        "data_cpus",
        "placement_strategy",
        "max_failures",
        "keep_checkpoints",
        "eval_batch_size",
        "progress_seconds",
        "shard_in_memory_mb",
    }
)


#: `best_weights` of a checkpoint whose own epoch is the best so far: the weights are `model`'s, stored once
#: (a lexical model over 4,108 labels is 1.6 GB of weights; the copy made every checkpoint 6.6 GB).
BEST_IS_MODEL = "model"


def best_weights(saved: dict[str, Any]) -> dict[str, Any]:
    """The best epoch's weights of a loaded checkpoint state."""
    best = saved["best_weights"]
    return saved["model"] if isinstance(best, str) and best == BEST_IS_MODEL else best


#: The state file's size in bytes, recorded in META_FILE: a copy cut short (disk full, a killed upload) has a
#: state file of another size and is no checkpoint to resume from.
STATE_BYTES = "state_bytes"


def save_state(folder: Path, state: dict[str, Any], meta: dict[str, Any]) -> None:
    """Write a checkpoint's two files into `folder` (the meta file records the state file's size)."""
    torch.save(state, folder / STATE_FILE)
    (folder / META_FILE).write_text(json.dumps({**meta, STATE_BYTES: (folder / STATE_FILE).stat().st_size}))


def read_state(path: str | Path) -> dict[str, Any]:
    """A state file written by `torch.save` (a checkpoint's `STATE_FILE`, a Tune trial's head), on the CPU.

    Read with `weights_only=True`: tensors and plain data only. Anyone who can write to a run's storage prefix
    could otherwise run code on every node that resumes from it (a pickled object's `__reduce__`).
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: refused: it holds objects other than tensors and plain data, which loading would run "
            f"as code ({str(e).splitlines()[0]})"
        ) from None


def load_state(checkpoint: Checkpoint) -> dict[str, Any]:
    """A checkpoint's saved state, on the CPU (see :func:`read_state`)."""
    with checkpoint.as_directory() as d:
        return read_state(Path(d) / STATE_FILE)


def checkpoint_meta(checkpoint: Checkpoint) -> dict[str, Any]:
    """A checkpoint's `META_FILE` ({} when it has none or it cannot be read)."""
    path = posixpath.join(checkpoint.path, META_FILE)
    try:
        with checkpoint.filesystem.open_input_stream(path) as f:
            return json.loads(f.read())
    except (FileNotFoundError, OSError):
        return {}


def fingerprint(cfg: Config, labels: list[str], loss_params: dict[str, Any], featurizer: Any) -> str:
    """What a checkpoint must match to be resumed: everything that shapes the weights, not how long or where
    the run goes (epochs, patience, workers and resources may change between attempts), nor the name prior,
    which is added to the exported weights after training."""
    train = cfg.train.identity(set(TRAIN_RESOURCE_KEYS | {"epochs", "patience", "name_prior"}))
    if cfg.model.kind == "encoder":
        # The blob of runs written before model kinds existed, so their checkpoints still resume.
        model, features = cfg.model.model_dump(exclude={"kind", "lexical", "chunks"}), None
        tokenizer = getattr(featurizer, "tokenizer", featurizer)  # a featurizer, or a bare tokenizer
        vocab = sorted(tokenizer.get_vocab().items())
    else:
        model, features, vocab = cfg.model.model_dump(), featurizer.digest(), None
    blob = json.dumps(
        {
            "model": model,
            "loss": [cfg.loss.name, loss_params],
            "train": train,
            "labels": labels,
            "seed": cfg.run.seed,
            "vocab": vocab,
            **({"features": features} if features else {}),
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def newer_checkpoint(*checkpoints: Checkpoint | None) -> Checkpoint | None:
    """The checkpoint of the latest epoch among those given (None ignored; the first wins a tie)."""
    best, best_epoch = None, -2
    for checkpoint in checkpoints:
        if checkpoint is None:
            continue
        epoch = int(checkpoint_meta(checkpoint).get("epoch", -1))
        if epoch > best_epoch:
            best, best_epoch = checkpoint, epoch
    return best


def latest_checkpoint(folder: Location) -> Checkpoint | None:
    """The newest complete checkpoint of an earlier attempt of this run, if any.

    Ray Train restores from its own snapshot file, but that file was missing after a run whose worker was
    killed (checked with Ray 2.60), so a restarted job would start over; the checkpoint folders themselves are
    the reliable record. Names sort by time. A folder whose state file is missing, or is not the size its
    meta file records, is an interrupted upload (seen: a disk that filled while the last checkpoint was
    copied left a truncated state file beside a whole meta file, and every restart failed on it).
    Checkpoints without a recorded size (written before sizes were, or without a meta file) need only their
    state file, as before.
    """
    if not folder.exists():
        return None
    candidates = sorted(
        (
            i.path
            for i in folder.fs.get_file_info(pafs.FileSelector(folder.path))
            if i.type == pafs.FileType.Directory and i.base_name.startswith("checkpoint_")
        ),
        reverse=True,
    )
    for path in candidates:
        info = folder.fs.get_file_info(posixpath.join(path, STATE_FILE))
        if info.type != pafs.FileType.File:
            continue
        checkpoint = Checkpoint(path=path, filesystem=folder.fs)
        meta = checkpoint_meta(checkpoint)
        expected = meta.get(STATE_BYTES)
        if expected is not None and int(expected) != info.size:
            log.warning(
                "skipping checkpoint %s: its upload was interrupted (state file %s bytes, %s expected)",
                path,
                info.size,
                expected,
            )
            continue
        return checkpoint
    return None
