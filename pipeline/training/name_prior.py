"""The label-name prior of the lexical kind: each label's weights plus g times its name's TF-IDF vector.

A label seen in a handful of training documents gets noisy weights, while its name (EURLEX57K's EUROVOC
concepts have names and alternative names) says which terms point to it. The lexical model is linear in a
document's TF-IDF vector x, so adding ``g * x . n_l`` to label l's logit (``n_l``: the L2-normalised TF-IDF
vector of its name, read with the model's own vectorizer) is the same as adding ``g * n_l`` to its weight
column: the model keeps its size, its format and its predict path. ``train.name_prior`` sets g, or ``auto``
chooses it on validation by macro AP among :data:`GRID` (0 included, so validation can turn it off); it is
folded into the weights after training, so a finished run is re-exported with another g without training.

Validation scores are held as row blocks in Ray's object store (as the training worker's are), never as one
documents x labels matrix in this process.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from pipeline.data.labels import csr_from_padded
from pipeline.evaluation.blocks import ScoreBlocks, block_rows
from pipeline.evaluation.label_names import name_vectors
from pipeline.evaluation.metrics import per_label_ap
from pipeline.training.validation_scores import load_block, store_block

log = logging.getLogger(__name__)

#: Weights ``auto`` tries (a TF-IDF cosine lies in [0, 1]; a logit moves by at most g). On EURLEX57K the
#: validation optimum was 5 (docs/training.md, "Label names as a prior").
GRID: tuple[float, ...] = (0.0, 1.0, 2.0, 3.0, 5.0, 8.0, 12.0, 20.0)


def name_matrix(vectorizer: Any, labels: list[str], names: Mapping[str, str]) -> sp.csr_matrix:
    """[features, labels]: column l is label l's name as an L2-normalised TF-IDF vector, zero without a
    name (or when none of its words is in the vocabulary)."""
    return name_vectors(vectorizer, [names.get(label, "") for label in labels])


def rows_matrix(term_ids: np.ndarray, term_weights: np.ndarray, num_features: int) -> sp.csr_matrix:
    """The lexical kind's fixed-width (term ids, term weights) rows as a CSR matrix (padding has weight 0)."""
    ids, w = np.asarray(term_ids), np.asarray(term_weights, dtype=np.float32)
    rows = np.repeat(np.arange(ids.shape[0]), ids.shape[1])
    x = sp.csr_matrix((w.ravel(), (rows, ids.ravel())), shape=(ids.shape[0], num_features))
    x.eliminate_zeros()
    return x


class _PriorBlocks(ScoreBlocks):
    """Validation logits + g * name cosines, one stored block pair at a time."""

    def __init__(self, parts: list[tuple[Any, Any, int]], num_labels: int, g: float) -> None:
        self.parts, self.g = parts, g
        self.shape = (sum(n for _, _, n in parts), num_labels)

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        a = 0
        for logits, cos, n in self.parts:
            yield a, load_block(logits) + np.float32(self.g) * load_block(cos)
            a += n


def validation_parts(
    model: torch.nn.Module, names: sp.csr_matrix, batches: Iterable[Mapping[str, np.ndarray]]
) -> tuple[list[tuple[Any, Any, int]], sp.csr_matrix]:
    """Stored (logits, name cosines, rows) blocks of the featurised validation batches, and their labels."""
    num_features, num_labels = names.shape
    parts, ys = [], []
    model.eval()
    for batch in batches:
        ids, w = batch["term_ids"], batch["term_weights"]
        with torch.no_grad():
            logits = model(torch.as_tensor(ids), torch.as_tensor(w)).float().numpy()
        cos = np.asarray((rows_matrix(ids, w, num_features) @ names).toarray(), dtype=np.float32)
        parts.append((store_block(logits), store_block(cos), len(ids)))
        ys.append(csr_from_padded(batch["label_idx"], num_labels))
    y = sp.vstack(ys, format="csr") if ys else sp.csr_matrix((0, num_labels), dtype=np.int8)
    return parts, y


def macro_ap_by_weight(
    parts: list[tuple[Any, Any, int]], y: sp.csr_matrix, grid: Iterable[float] = GRID
) -> dict[float, float]:
    """Validation macro AP (over labels with a positive) of logits + g * cosines for each g."""
    out = {}
    for g in grid:
        ap = per_label_ap(y, _PriorBlocks(parts, y.shape[1], float(g)))
        out[float(g)] = float(np.nanmean(ap)) if np.isfinite(ap).any() else math.nan
    return out


def best_weight(aps: Mapping[float, float]) -> float:
    """The weight of the highest macro AP; the smallest among equal ones (0 unless a prior helps)."""
    finite = {g: ap for g, ap in aps.items() if math.isfinite(ap)}
    if not finite:
        return 0.0
    top = max(finite.values())
    return min(g for g, ap in finite.items() if ap == top)


@torch.no_grad()
def fold_into(model: torch.nn.Module, names: sp.csr_matrix, g: float) -> None:
    """W[:, l] += g * n_l in place (the lexical kind's W is [features, labels], as ``names``)."""
    if g == 0 or names.nnz == 0:
        return
    w = model.weight_matrix()
    if tuple(w.shape) != names.shape:
        raise ValueError(f"weights {tuple(w.shape)} and name vectors {names.shape} differ in shape")
    coo = names.tocoo()
    rows, cols = torch.from_numpy(coo.row.astype(np.int64)), torch.from_numpy(coo.col.astype(np.int64))
    w.index_put_((rows, cols), torch.from_numpy(coo.data).to(w.dtype) * g, accumulate=True)


def apply_name_prior(
    setting: float | str,
    model: torch.nn.Module,
    vectorizer: Any,
    labels: list[str],
    names: Mapping[str, str],
    validation: Any = None,
) -> dict[str, Any]:
    """Fold the name prior into ``model``'s weights; what ``model_config.json`` records of it.

    ``setting``: a weight, or ``"auto"`` to choose it on ``validation`` (the featurised validation split, a
    Ray dataset with ``term_ids``, ``term_weights`` and ``label_idx``) by macro AP among :data:`GRID`.
    """
    mat = name_matrix(vectorizer, labels, names)
    named = int((np.diff(mat.tocsc().indptr) > 0).sum())
    info: dict[str, Any] = {"named_labels": named, "labels": len(labels)}
    if setting == "auto":
        if validation is None:
            raise ValueError("train.name_prior=auto needs the featurised validation split")
        batches = validation.iter_batches(batch_size=block_rows(len(labels)), batch_format="numpy")
        parts, y = validation_parts(model, mat, batches)
        aps = macro_ap_by_weight(parts, y)
        g = best_weight(aps)
        info.update(chosen_on="validation macro AP", val_macro_ap={str(k): v for k, v in aps.items()})
        log.info(
            "name prior: weight %g chosen on validation (macro AP %.4f without, %.4f with); %d of %d labels "
            "named",
            g,
            aps[0.0],
            aps[g],
            named,
            len(labels),
        )
    else:
        g = float(setting)
        log.info("name prior: weight %g; %d of %d labels named", g, named, len(labels))
    fold_into(model, mat, g)
    info["weight"] = g
    return info
