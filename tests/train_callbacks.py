"""Training callbacks the tests run inside Ray Train workers (``run_train(cfg, callbacks=[...])``).

Pickled by value, so a worker needs no import path to this folder.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import ray.cloudpickle
import torch

from pipeline.training.worker import TrainCallback

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


class FailOnce(TrainCallback):
    """Die like a killed worker at the start of `epoch`, once (a marker file says it happened, so the
    restarted attempt goes on)."""

    def __init__(self, epoch: int, marker: str) -> None:
        self.epoch, self.marker = epoch, Path(marker)

    def on_epoch_start(self, *, epoch: int, rank: int) -> None:
        if epoch != self.epoch or self.marker.exists():
            return
        self.marker.write_text("failed once")
        os._exit(1)


class EpochLog(TrainCallback):
    """Rank 0 appends each epoch it starts to `path`: the order shows where a restarted worker resumed."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_epoch_start(self, *, epoch: int, rank: int) -> None:
        if rank == 0:
            with self.path.open("a") as f:
                f.write(f"{epoch}\n")


class WeightDigest(TrainCallback):
    """Each rank writes a hash of its final weights to `folder`: DDP replicas must end identical."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def on_train_end(self, *, model: torch.nn.Module, rank: int) -> None:
        h = hashlib.sha256()
        for name, tensor in sorted(model.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().numpy().tobytes())
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"rank-{rank}.txt").write_text(h.hexdigest())


class TorchThreads(TrainCallback):
    """Rank 0 writes, as training starts, the worker's torch thread count and how many denormal results a
    product spread over all its threads left (0 when every thread flushes them)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_epoch_start(self, *, epoch: int, rank: int) -> None:
        if rank == 0 and epoch == 0:
            denormal = int((torch.full((1 << 22,), 1e-30) * 1e-10).count_nonzero())  # 1e-40 unless flushed
            self.path.write_text(f"{torch.get_num_threads()} {denormal}")
