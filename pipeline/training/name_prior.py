"""The label-name prior of the lexical kind: each label's weights plus a multiple of its name's TF-IDF vector.

A label seen in a handful of training documents gets noisy weights, while its name (EURLEX57K's EUROVOC
concepts have names and alternative names) says which terms point to it. The lexical model is linear in a
document's TF-IDF vector x, so adding ``w_l * x . n_l`` to label l's logit (``n_l``: the L2-normalised TF-IDF
vector of its name, read with the model's own vectorizer) is the same as adding ``w_l * n_l`` to its weight
column: the model keeps its size, its format and its predict path. The prior is folded into the weights
after training, so a finished run is re-exported with another one without training.

``train.name_prior`` given as a number g: ``w_l = g`` for every label. ``auto``: ``w_l = g * k / (k + n_l)``
with ``n_l`` the label's training documents, so the name counts for a rare label and fades as a label's own
documents grow (k = None: the same g for all), and (g, k) is chosen on validation: the best macro AP among
the pairs whose validation P@1 stays within :data:`P_AT_1_TOLERANCE` of the model without the prior. Macro AP
is what the prior is for (the rare labels' ranking of documents); the P@1 guard keeps it from reordering the
labels of documents that the model already ranks well (a uniform g of 5 on EURLEX57K: macro AP 0.590 ->
0.624, P@1 0.927 -> 0.915).

Validation scores are held as row blocks in Ray's object store (as the training worker's are), never as one
documents x labels matrix in this process.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from pipeline.data.labels import csr_from_padded
from pipeline.evaluation.blocks import ScoreBlocks, block_rows
from pipeline.evaluation.label_names import name_vectors
from pipeline.evaluation.metrics import per_label_ap, precision_at_k
from pipeline.training.validation_scores import load_block, store_block

log = logging.getLogger(__name__)

#: Weights g ``auto`` tries (a TF-IDF cosine lies in [0, 1], so a logit moves by at most g).
GRID: tuple[float, ...] = (0.0, 1.0, 2.0, 3.0, 5.0, 8.0, 12.0, 20.0)
#: Pseudo-counts k ``auto`` tries: a label's weight is g * k / (k + its training documents); None: g for all.
SCALES: tuple[float | None, ...] = (10.0, 30.0, 100.0, None)
#: How much validation P@1 a prior may cost (about 1.3 standard errors at 6,000 documents and P@1 0.9).
P_AT_1_TOLERANCE = 0.005


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
    """Validation logits + the per-label weights times the name cosines, one stored block pair at a time."""

    def __init__(self, parts: list[tuple[Any, Any, int]], weights: np.ndarray) -> None:
        self.parts, self.weights = parts, np.asarray(weights, dtype=np.float32)
        self.shape = (sum(n for _, _, n in parts), len(self.weights))

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        a = 0
        for logits, cos, n in self.parts:
            yield a, load_block(logits) + self.weights * load_block(cos)
            a += n


def label_weights(g: float, k: float | None, counts: np.ndarray) -> np.ndarray:
    """Each label's prior weight: g, scaled by k / (k + training documents) when k is given."""
    counts = np.asarray(counts, dtype=np.float64)
    return np.full(counts.shape, float(g)) if k is None else g * k / (k + counts)


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


def candidates() -> list[tuple[float, float | None]]:
    """The (g, k) pairs ``auto`` tries: g = 0 once, then every g of :data:`GRID` with every k of
    :data:`SCALES`."""
    return [(0.0, None)] + [(g, k) for g in GRID if g > 0 for k in SCALES]


def validation_figures(
    parts: list[tuple[Any, Any, int]],
    y: sp.csr_matrix,
    counts: np.ndarray,
    pairs: Iterable[tuple[float, Any]],
) -> list[dict[str, Any]]:
    """Validation macro AP (over labels with a positive) and P@1 of each (g, k) pair's prior."""
    out = []
    for g, k in pairs:
        blocks = _PriorBlocks(parts, label_weights(g, k, counts))
        ap = per_label_ap(y, blocks)
        macro_ap = float(np.nanmean(ap)) if np.isfinite(ap).any() else math.nan
        out.append(
            {"g": float(g), "k": k, "val_macro_ap": macro_ap, "val_p_at_1": precision_at_k(y, blocks, 1)}
        )
    return out


def choose(figures: list[dict[str, Any]], tolerance: float = P_AT_1_TOLERANCE) -> dict[str, Any]:
    """The best validation macro AP among the pairs whose P@1 is within ``tolerance`` of no prior's (the
    first pair, g = 0); the earliest of equal ones (smaller g first), and no prior unless one helps."""
    base = figures[0]
    floor = base["val_p_at_1"] - tolerance
    ok = [f for f in figures if f["val_p_at_1"] >= floor - 1e-12 and math.isfinite(f["val_macro_ap"])]
    best = base
    for f in ok:
        if f["val_macro_ap"] > best["val_macro_ap"]:
            best = f
    return best


@torch.no_grad()
def fold_into(model: torch.nn.Module, names: sp.csr_matrix, weights: float | np.ndarray) -> None:
    """W[:, l] += w_l * n_l in place (the lexical kind's W is [features, labels], as ``names``)."""
    w_l = np.broadcast_to(np.asarray(weights, dtype=np.float64), (names.shape[1],))
    if not w_l.any() or names.nnz == 0:
        return
    w = model.weight_matrix()
    if tuple(w.shape) != names.shape:
        raise ValueError(f"weights {tuple(w.shape)} and name vectors {names.shape} differ in shape")
    coo = names.tocoo()
    rows, cols = torch.from_numpy(coo.row.astype(np.int64)), torch.from_numpy(coo.col.astype(np.int64))
    add = torch.from_numpy(coo.data * w_l[coo.col]).to(w.dtype)
    w.index_put_((rows, cols), add, accumulate=True)


def apply_name_prior(
    setting: float | str,
    model: torch.nn.Module,
    vectorizer: Any,
    labels: list[str],
    names: Mapping[str, str],
    counts: Sequence[int],
    validation: Any = None,
) -> dict[str, Any]:
    """Fold the name prior into ``model``'s weights; what ``model_config.json`` records of it.

    ``setting``: g (the same weight for every label), or ``"auto"`` to choose (g, k) on ``validation`` (the
    featurised validation split, a Ray dataset with ``term_ids``, ``term_weights`` and ``label_idx``).
    ``counts``: each label's training documents.
    """
    mat = name_matrix(vectorizer, labels, names)
    counts_arr = np.asarray(counts, dtype=np.float64)
    named = int((np.diff(mat.tocsc().indptr) > 0).sum())
    info: dict[str, Any] = {"named_labels": named, "labels": len(labels)}
    if setting == "auto":
        if validation is None:
            raise ValueError("train.name_prior=auto needs the featurised validation split")
        batches = validation.iter_batches(batch_size=block_rows(len(labels)), batch_format="numpy")
        parts, y = validation_parts(model, mat, batches)
        figures = validation_figures(parts, y, counts_arr, candidates())
        best = choose(figures)
        g, k = best["g"], best["k"]
        info.update(
            chosen_on=f"validation macro AP, P@1 within {P_AT_1_TOLERANCE} of no prior's",
            tried=figures,
        )
        log.info(
            "name prior: weight %g, pseudo-count %s chosen on validation (macro AP %.4f -> %.4f, P@1 %.4f -> "
            "%.4f); %d of %d labels named",
            g,
            k,
            figures[0]["val_macro_ap"],
            best["val_macro_ap"],
            figures[0]["val_p_at_1"],
            best["val_p_at_1"],
            named,
            len(labels),
        )
    else:
        g, k = float(setting), None
        log.info("name prior: weight %g; %d of %d labels named", g, named, len(labels))
    fold_into(model, mat, label_weights(g, k, counts_arr))
    info.update(weight=g, pseudo_count=k)
    return info
