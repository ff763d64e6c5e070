"""Head-only training on cached embeddings (the fast tune mode): dropout + linear layer, the configured loss,
AdamW with the same warm-up/decay schedule as the full loop. Runs in the calling process, no Ray needed;
the same seed, data and parameters give the same metrics, which is how best_params.yaml is checked."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from pipeline.core.config import Config
from pipeline.modeling.losses import build_loss
from pipeline.training.embeddings import HeadData
from pipeline.training.validation_scores import RankBlocks, ScoreBuffer

#: report(epoch, metrics, state) is called after every epoch; `state` is what a resumed run needs.
Reporter = Callable[[int, dict[str, float], dict[str, Any]], None]


def build_head(hidden: int, num_labels: int, dropout: float, priors: np.ndarray) -> nn.Sequential:
    head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, num_labels))
    nn.init.normal_(head[1].weight, std=0.02)
    with torch.no_grad():  # start at the label base rates, as the full model does (init_bias_from_priors)
        q = torch.as_tensor(np.clip(priors, 1e-4, 1 - 1e-4))
        head[1].bias.copy_(torch.log(q / (1 - q)).float())
    return head


def _dense(y: sp.csr_matrix, rows: np.ndarray) -> torch.Tensor:
    """Multi-hot targets of one batch: the only dense label matrix head training builds."""
    return torch.from_numpy(y[rows].toarray().astype(np.float32))


def _score(
    head: nn.Module, loss_fn: nn.Module, x: torch.Tensor, y: sp.csr_matrix, batch_size: int
) -> tuple[RankBlocks, float]:
    """Validation scores (blocks in the object store: no documents x labels matrix here) and mean loss,
    batch by batch."""
    scores, loss_sum = ScoreBuffer(y.shape[1]), 0.0
    for start in range(0, len(x), batch_size):
        rows = np.arange(start, min(start + batch_size, len(x)))
        logits = head(x[rows])
        loss_sum += float(loss_fn(logits, _dense(y, rows))) * len(rows)
        scores.add([torch.sigmoid(logits).numpy()])
    return scores.finish(), loss_sum / max(len(x), 1)


def train_head(
    cfg: Config,
    train: HeadData,
    val: HeadData,
    counts: list[int],
    num_docs: int,
    loss_params: dict[str, Any],
    report: Reporter | None = None,
    resume: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train for cfg.train.epochs (patience applies); returns {"history", "best"} of checkpoint_metric."""
    from pipeline.training.worker import adamw, add_head_l2_grad, epoch_metrics, warmup_then_linear

    tcfg = cfg.train
    torch.manual_seed(cfg.run.seed)
    priors = np.asarray(counts, dtype=np.float64) / max(num_docs, 1)
    num_labels = train.y.shape[1]
    head = build_head(train.x.shape[1], num_labels, cfg.model.dropout, priors)
    loss_fn = build_loss(cfg.loss.name, counts, num_docs, dict(loss_params))
    optimizer = adamw(head.parameters(), lr=tcfg.lr, eps=tcfg.adam_eps, weight_decay=tcfg.weight_decay)
    steps_per_epoch = max(math.ceil(len(train.x) / tcfg.batch_size), 1)
    total = steps_per_epoch * tcfg.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_then_linear(total, int(total * tcfg.warmup_ratio))
    )
    state: dict[str, Any] = {"epoch": -1, "best": None, "bad_epochs": 0, "history": []}
    if resume:
        head.load_state_dict(resume["head"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        torch.set_rng_state(resume["rng"])
        state = resume["state"]
    x_tr, y_tr = torch.from_numpy(train.x), sp.csr_matrix(train.y)
    x_va, y_va = torch.from_numpy(val.x), sp.csr_matrix(val.y)
    metric, mode = tcfg.checkpoint_metric, tcfg.checkpoint_mode
    for epoch in range(state["epoch"] + 1, tcfg.epochs):
        if tcfg.patience and state["bad_epochs"] >= tcfg.patience:
            break
        head.train()
        order = torch.from_numpy(np.random.default_rng(cfg.run.seed + epoch).permutation(len(x_tr)))
        loss_sum = 0.0
        for start in range(0, len(order), tcfg.batch_size):
            idx = order[start : start + tcfg.batch_size]
            loss = loss_fn(head(x_tr[idx]), _dense(y_tr, idx.numpy()))
            loss.backward()
            add_head_l2_grad(head, tcfg.l2, num_labels)
            if tcfg.grad_clip:
                nn.utils.clip_grad_norm_(head.parameters(), tcfg.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            loss_sum += float(loss.detach()) * len(idx)
        head.eval()
        with torch.no_grad():
            scores, val_loss = _score(head, loss_fn, x_va, y_va, tcfg.eval_batch_size)
        metrics = {"epoch": epoch, "train_loss": loss_sum / len(x_tr), "val_loss": val_loss}
        metrics.update(epoch_metrics(val.y, scores))
        value = metrics[metric]
        if state["best"] is None or (value > state["best"] if mode == "max" else value < state["best"]):
            state["best"], state["bad_epochs"] = value, 0
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch
        metrics["best_" + metric] = state["best"]
        state["history"].append(metrics)
        if report is not None:
            report(
                epoch,
                metrics,
                {
                    "head": head.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": torch.get_rng_state(),
                    "state": state,
                },
            )
    return {"history": state["history"], "best": state["best"]}
