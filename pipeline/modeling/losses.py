"""Multi-label losses for long-tailed label distributions (pure PyTorch).

One factory, :func:`build_loss`, builds every loss from its name, the training label statistics
(per-label document counts ``n_i`` and the number of training documents ``N``) and its parameters.
The formulas (docs/losses.md has them with their papers):

=================  =====================================================================================
name               loss (per entry ``(k, i)``; ``z`` logit, ``y`` target, ``p = sigmoid(z)``)
=================  =====================================================================================
``bce``            ``-[y log p + (1-y) log(1-p)]``
``weighted-bce``   ``-[w_i y log p + (1-y) log(1-p)]``, ``w_i = ((N-n_i)/n_i)^a`` (optional cap)
``focal``          ``alpha_t (1-p_t)^gamma BCE`` (Lin et al. 2017)
``class-balanced`` ``w_CB BCE``, ``w_i = (1-beta)/(1-beta^n_i)`` (Cui et al. 2019), four modes
``r-fl``           rebalanced weight x focal (Wu et al. 2020)
``ntr-fl``         focal on the negative-tolerant (NTR) BCE
``db-0fl``         rebalanced weight x NTR BCE (DB without focal)
``db``             rebalanced weight x focal x NTR (distribution-balanced loss)
``cb-ntr``         class-balanced weight x focal x NTR (the ablation of Huang et al. 2021)
``asymmetric``     ``-[y (1-p)^gp log p + (1-y) pm^gn log(1-pm)]``, ``pm = max(p-m, 0)`` (Ridnik et al. 2021)
=================  =====================================================================================

Every loss computes in float32 (float64 when the logits are float64, so ``gradcheck`` works), also under
``torch.autocast``; follows the device of its inputs; never modifies the caller's tensors; and stays finite
(loss and gradients) when ``n_i = 0``, ``n_i = N``, a row has no positive label, or logits reach +-100
(everything is written with ``logsigmoid`` / ``softplus``, never ``log(sigmoid)``).

Conventions where the formulas are undefined (all documented again at the parameter they concern):

* inverse frequencies ``1/n_i`` and the weighted-BCE / class-balanced weights use ``max(n_i, 1)``;
* the NTR prior ``q_i = n_i/N`` is clipped to ``[eps, 1-eps]``, ``eps = 0.5/N`` by default;
* rebalanced weight of a row with no positive label: ``alpha + 1`` (the limit ``P_k -> 0``, ``r -> inf``);
* class-balanced row weight (modes ``average_n``, ``average_w``, ``min_n``) of a row with no positive label:
  the mean of the per-label weights ``w_i``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.core.loss_params import LOSS_NAMES, LOSS_PARAMS

__all__ = [
    "LOSS_NAMES",
    "LOSS_PARAMS",
    "AsymmetricLoss",
    "DistributionBalancedLoss",
    "MultiLabelLoss",
    "WeightedBCELoss",
    "build_loss",
    "estimate_mu",
    "estimate_mu_from_counts",
]

REDUCTIONS = ("mean", "sum", "none")
CB_MODES = ("by_class", "average_n", "average_w", "min_n")
WEIGHTINGS = ("none", "rebalance", "cb")

# Fallback for mu when the label statistics hold no positive label at all (then every row is "empty" and the
# rebalanced weight is alpha + 1 whatever mu is): the value Huang et al. (2021) used on Reuters-21578.
DEFAULT_MU = 0.9


# ----------------------------------------------------------------------------------------------------------
# Label statistics
# ----------------------------------------------------------------------------------------------------------
def _as_counts(counts: Sequence[int] | np.ndarray, num_docs: int | None = None) -> np.ndarray:
    arr = np.asarray(counts, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(
            f"counts must be a non-empty 1-D sequence of per-label document counts, got shape {arr.shape}"
        )
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError("counts must be finite and >= 0")
    if num_docs is not None:
        if not (isinstance(num_docs, int | np.integer) or float(num_docs).is_integer()) or num_docs <= 0:
            raise ValueError(f"num_docs must be a positive integer, got {num_docs!r}")
        if np.any(arr > num_docs):
            bad = int(np.argmax(arr > num_docs))
            raise ValueError(f"counts[{bad}] = {arr[bad]:g} exceeds num_docs = {num_docs}")
    return arr


def _positive_pairs(targets: Any, num_labels: int | None = None) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(rows, cols, n_rows, n_cols) of the distinct positive entries of a label matrix or index lists."""
    import scipy.sparse as sp

    if sp.issparse(targets):
        m = sp.csr_matrix(targets)
        m.sum_duplicates()
        m.eliminate_zeros()
        rows, cols = m.nonzero()
        return rows.astype(np.int64), cols.astype(np.int64), m.shape[0], m.shape[1]
    if isinstance(targets, np.ndarray | torch.Tensor) and np.ndim(targets) == 2:
        dense = np.asarray(targets.detach().cpu() if isinstance(targets, torch.Tensor) else targets)
        rows, cols = np.nonzero(dense > 0)
        return rows.astype(np.int64), cols.astype(np.int64), dense.shape[0], dense.shape[1]
    # a sequence of per-row label index arrays
    rows_list = [np.unique(np.asarray(r, dtype=np.int64).reshape(-1)) for r in targets]
    lengths = np.array([len(r) for r in rows_list], dtype=np.int64)
    cols = np.concatenate(rows_list) if rows_list else np.zeros(0, dtype=np.int64)
    rows = np.repeat(np.arange(len(rows_list), dtype=np.int64), lengths)
    if cols.size and cols.min() < 0:
        raise ValueError("label indices must be >= 0")
    n_cols = num_labels if num_labels is not None else (int(cols.max()) + 1 if cols.size else 0)
    if cols.size and cols.max() >= n_cols:
        raise ValueError(f"label index {int(cols.max())} out of range for {n_cols} labels")
    return rows, cols, len(rows_list), n_cols


def estimate_mu(targets: Any, counts: Sequence[int] | np.ndarray | None = None) -> float:
    """Data-driven ``mu`` of the rebalanced weighting (Wu et al. 2020; choice of Huang et al. 2021).

    ``mu = (mean(r) + median(r)) / 2`` over every positive (row ``k``, label ``i``) pair of the training set,
    with ``r_ki = (1/n_i) / P_k`` and ``P_k = sum_{j: y_kj=1} 1/n_j`` (about 0.9 on Reuters-21578).

    targets: the training label matrix, dense ``N x C`` 0/1 (numpy or torch), ``scipy.sparse``, or a list of
        per-row label index arrays.
    counts: per-label document counts ``n_i``; default: the column sums of ``targets``. Uses ``max(n_i, 1)``.
    Raises ValueError when ``targets`` holds no positive label.
    """
    num_labels = None if counts is None else len(np.asarray(counts).reshape(-1))
    rows, cols, n_rows, n_cols = _positive_pairs(targets, num_labels)
    if rows.size == 0:
        raise ValueError("estimate_mu: the training targets hold no positive label")
    if counts is None:
        n = np.bincount(cols, minlength=n_cols).astype(np.float64)
    else:
        n = _as_counts(counts)
        if n.size != n_cols:
            raise ValueError(f"counts has {n.size} labels but the targets have {n_cols}")
    inv = 1.0 / np.maximum(n, 1.0)
    p = np.bincount(rows, weights=inv[cols], minlength=n_rows)
    r = inv[cols] / p[rows]
    return float(0.5 * (r.mean() + np.median(r)))


def estimate_mu_from_counts(
    counts: Sequence[int] | np.ndarray, num_docs: int, num_samples: int = 20_000, seed: int = 0
) -> float:
    """``mu`` as in :func:`estimate_mu`, from the counts alone, assuming labels occur independently.

    Only used when neither ``mu`` nor the training targets are given. Under independence a document carries
    label ``j`` with probability ``q_j = n_j / N``; a positive pair picks label ``i`` with probability
    proportional to ``n_i`` and the row's other labels independently. ``num_samples`` pairs are drawn with a
    fixed ``seed`` (deterministic). Real labels are far from independent: on Reuters-21578 this gives 0.67
    where the label matrix gives 0.905 (independence invents co-occurrences of head labels, so fewer rows
    look single-label). Pass ``train_targets`` (or ``mu``) to :func:`build_loss` whenever you can.
    Returns ``DEFAULT_MU`` (0.9) when every count is 0.
    """
    n = _as_counts(counts, num_docs)
    total = n.sum()
    if total <= 0:
        return DEFAULT_MU
    inv = 1.0 / np.maximum(n, 1.0)
    q = np.clip(n / num_docs, 0.0, 1.0)
    rng = np.random.default_rng(seed)
    picked = rng.choice(n.size, size=num_samples, p=n / total)
    c = n.size
    chunk = max(1, 4_000_000 // c)
    r = np.empty(num_samples, dtype=np.float64)
    for start in range(0, num_samples, chunk):
        sel = picked[start : start + chunk]
        present = rng.random((sel.size, c)) < q
        present[np.arange(sel.size), sel] = False
        others = present @ inv
        r[start : start + chunk] = inv[sel] / (inv[sel] + others)
    return float(0.5 * (r.mean() + np.median(r)))


# ----------------------------------------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------------------------------------
class MultiLabelLoss(nn.Module):
    """Base class: ``forward(logits[B, C], targets[B, C]) -> loss``; shared checks, precision and reduction.

    Subclasses implement ``_elementwise(z, y)`` on tensors already in the compute dtype (float32, or float64
    for float64 logits) with autocast disabled. Targets may be bool, integer or float (0/1, or soft in [0,1]).
    """

    name = "base"

    def __init__(self, counts: Sequence[int] | np.ndarray, num_docs: int, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"unknown reduction {reduction!r}; valid: {', '.join(REDUCTIONS)}")
        n = _as_counts(counts, num_docs)
        self.num_labels = int(n.size)
        self.num_docs = int(num_docs)
        self.reduction = reduction
        # float64 buffers: .to(device) moves them; they are cast to the compute dtype and device on the fly.
        self.register_buffer("counts", torch.tensor(n, dtype=torch.float64), persistent=False)

    def _buf(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return t.to(device=like.device, dtype=like.dtype)

    def _elementwise(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if logits.dim() != 2 or logits.shape[1] != self.num_labels:
            raise ValueError(f"logits must be [batch, {self.num_labels}], got {tuple(logits.shape)}")
        if targets.shape != logits.shape:
            raise ValueError(f"targets shape {tuple(targets.shape)} != logits shape {tuple(logits.shape)}")
        if not logits.is_floating_point():
            raise ValueError(f"logits must be a floating-point tensor, got {logits.dtype}")
        dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
        with torch.autocast(device_type=logits.device.type, enabled=False):
            z = logits.to(dtype)  # a new tensor when the dtype changes; never written to
            y = targets.to(device=logits.device, dtype=dtype)
            loss = self._elementwise(z, y)
            if self.reduction == "mean":
                return loss.mean()
            if self.reduction == "sum":
                return loss.sum()
            return loss

    def describe(self) -> dict[str, Any]:
        """Every resolved parameter (JSON-friendly), for the model config and the report."""
        return {"name": self.name, "reduction": self.reduction}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.describe().items())


class WeightedBCELoss(MultiLabelLoss):
    """BCE with a per-label positive weight ``w_i = ((N - n_i) / n_i)^a`` (PyTorch ``pos_weight`` recipe).

    a: exponent, default 1.0 (PyTorch's documented recipe for ``BCEWithLogitsLoss(pos_weight=...)``);
        0.5 is the square-root variant users report to over-predict less.
    cap: optional upper bound on ``w_i`` (default None: no cap). ``n_i = 0`` uses ``max(n_i, 1)``, so
        ``w_i = (N - 0)^a`` stays finite; ``n_i = N`` gives ``w_i = 0`` (the label is on every document).
    """

    name = "weighted-bce"

    def __init__(
        self,
        counts: Sequence[int] | np.ndarray,
        num_docs: int,
        a: float = 1.0,
        cap: float | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__(counts, num_docs, reduction)
        a = float(a)
        if not math.isfinite(a) or a < 0:
            raise ValueError(f"weighted-bce: a must be finite and >= 0, got {a}")
        if cap is not None and (not math.isfinite(float(cap)) or float(cap) <= 0):
            raise ValueError(f"weighted-bce: cap must be a positive number or None, got {cap}")
        self.a = a
        self.cap = None if cap is None else float(cap)
        n = self.counts.numpy()
        w = ((self.num_docs - n) / np.maximum(n, 1.0)) ** a
        if self.cap is not None:
            w = np.minimum(w, self.cap)
        self.register_buffer("pos_weight", torch.tensor(w, dtype=torch.float64), persistent=False)

    def _elementwise(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        w = self._buf(self.pos_weight, z)
        # -log p = softplus(-z); -log(1-p) = softplus(z)
        return w * y * F.softplus(-z) + (1 - y) * F.softplus(z)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "a": self.a, "cap": self.cap}


class AsymmetricLoss(MultiLabelLoss):
    """Asymmetric loss (Ridnik et al. 2021, ICCV): ``-[y L+ + (1-y) L-]`` with
    ``L+ = (1-p)^gamma_pos log p``, ``L- = pm^gamma_neg log(1-pm)``, ``pm = max(p - m, 0)``.

    gamma_pos: focusing exponent on positives, default 0 (paper's default).
    gamma_neg: focusing exponent on negatives, default 4 (paper's default): easy negatives are down-weighted.
    m: probability margin (the paper's "clip"), default 0.05: negatives with ``p <= m`` are discarded.
    """

    name = "asymmetric"

    def __init__(
        self,
        counts: Sequence[int] | np.ndarray,
        num_docs: int,
        gamma_pos: float = 0.0,
        gamma_neg: float = 4.0,
        m: float = 0.05,
        reduction: str = "mean",
    ) -> None:
        super().__init__(counts, num_docs, reduction)
        gamma_pos, gamma_neg, m = float(gamma_pos), float(gamma_neg), float(m)
        if gamma_pos < 0 or gamma_neg < 0 or not (0 <= m < 1):
            raise ValueError("asymmetric: need gamma_pos >= 0, gamma_neg >= 0, 0 <= m < 1")
        self.gamma_pos, self.gamma_neg, self.m = gamma_pos, gamma_neg, m

    def _elementwise(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # positives: (1-p)^gp * (-log p), with 1-p = sigmoid(-z)
        pos = torch.exp(self.gamma_pos * F.logsigmoid(-z)) * F.softplus(-z)
        if self.m > 0:
            pm = (torch.sigmoid(z) - self.m).clamp(min=0)
            # pm <= 1 - m, so log(1 - pm) >= log(m): finite
            neg = -(pm**self.gamma_neg) * torch.log1p(-pm)
        else:
            neg = torch.exp(self.gamma_neg * F.logsigmoid(z)) * F.softplus(z)
        return y * pos + (1 - y) * neg

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "gamma_pos": self.gamma_pos, "gamma_neg": self.gamma_neg, "m": self.m}


class DistributionBalancedLoss(MultiLabelLoss):
    """The distribution-balanced family with switchable parts; the ablations are this class with parts off.

    ``loss_ki = W_ki * [ y F+ L+ + (1-y) F- L- ]`` where

    * weighting (``W``): ``"none"`` (1), ``"rebalance"`` (Wu et al. 2020) or ``"cb"`` (Cui et al. 2019);
    * NTR on (Wu et al. 2020): ``z' = z + b_i``, ``b_i = kappa log(q_i/(1-q_i))``, ``L+ = -log sigmoid(z')``,
      ``L- = (1/lambda) log(1 + exp(lambda z'))``; NTR off: plain BCE terms on ``z``;
    * focal on (Lin et al. 2017): ``F+ = alpha (1-p_t)^gamma`` with ``p_t = sigmoid(z')``,
      ``F- = (1-alpha) (1-p_t)^gamma`` with ``p_t = sigmoid(-lambda z')`` (from the shifted, scaled logits;
      ``lambda = 1``, ``z' = z`` without NTR); focal off: ``F = 1``.

    Parameters (defaults from Huang et al. 2021, EMNLP, the text-classification study that reuses Wu et al.):

    weighting: ``"none" | "rebalance" | "cb"``, default ``"rebalance"``.
    focal: focal modulation on/off, default True.
    ntr: negative-tolerant regularisation on/off, default True.
    rebalance_alpha: lower bound ``alpha`` of ``rhat = alpha + sigmoid(beta (r - mu))``, default 0.1.
    rebalance_beta: slope ``beta`` of the sigmoid mapping, default 10.
    mu: centre of the mapping. Default None: data-driven, see :func:`build_loss`; the value used: ``self.mu``.
        ``r_ki = (1/n_i)/P_k``, ``P_k = sum_{j: y_kj=1} 1/n_j`` (with ``max(n, 1)``); applied to every entry
        of row ``k``. A row with no positive label gets ``rhat = alpha + 1`` (the limit ``P_k -> 0``, which
        is also what the published code computes, via ``1/0 = inf``).
    gamma: focal exponent, default 2 (Lin et al.).
    focal_alpha: focal ``alpha_t`` is ``focal_alpha`` on positives and ``1 - focal_alpha`` on negatives,
        default 0.5 (0.5 for both, as Huang et al.).
    kappa: NTR shift scale, default 0.05 (Huang et al.'s ``init_bias``).
    lam: NTR negative scale ``lambda``, default 2 (Huang et al.'s ``neg_scale``). The ``1/lambda`` factor is
        kept with every weighting, also ``"none"`` (the published code drops it when no weight is set).
    eps: clip of ``q_i = n_i/N`` to ``[eps, 1-eps]``, default None = ``0.5/N`` (half a document: a label with
        0 documents is treated as slightly rarer than one with 1, a label on every document as slightly
        less common than N).
    cb_beta: class-balanced ``beta`` of ``w_i = (1-beta)/(1-beta^n_i)``, default 0.9 (Huang et al.);
        ``n_i = 0`` uses ``max(n_i, 1)`` (then ``w_i = 1``).
    cb_mode: ``by_class`` (``W_ki = w_i``), ``average_n`` (``n`` = mean count of the row's positive labels),
        ``average_w`` (mean of ``w`` over the row's positive labels), ``min_n`` (count of the rarest positive
        label); the row modes apply one weight to every entry of the row. Default ``by_class``. A row with no
        positive label gets ``mean_i(w_i)`` in the row modes.
    cb_normalize: divide every class-balanced weight by ``mean_i(w_i)`` (Cui et al. normalise the weights to
        sum to C, i.e. average 1), default False (the formula and the published text code do not).
    """

    name = "db"

    def __init__(
        self,
        counts: Sequence[int] | np.ndarray,
        num_docs: int,
        *,
        weighting: str = "rebalance",
        focal: bool = True,
        ntr: bool = True,
        rebalance_alpha: float = 0.1,
        rebalance_beta: float = 10.0,
        mu: float | None = None,
        mu_source: str | None = None,
        gamma: float = 2.0,
        focal_alpha: float = 0.5,
        kappa: float = 0.05,
        lam: float = 2.0,
        eps: float | None = None,
        cb_beta: float = 0.9,
        cb_mode: str = "by_class",
        cb_normalize: bool = False,
        reduction: str = "mean",
        name: str | None = None,
    ) -> None:
        super().__init__(counts, num_docs, reduction)
        if name is not None:
            self.name = name
        if weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {weighting!r}; valid: {', '.join(WEIGHTINGS)}")
        if cb_mode not in CB_MODES:
            raise ValueError(f"unknown cb_mode {cb_mode!r}; valid: {', '.join(CB_MODES)}")
        for key, val in (("focal", focal), ("ntr", ntr), ("cb_normalize", cb_normalize)):
            if not isinstance(val, bool | np.bool_):
                raise ValueError(f"{key} must be a bool, got {val!r}")
        self.weighting, self.focal, self.ntr = weighting, bool(focal), bool(ntr)
        self.rebalance_alpha, self.rebalance_beta = float(rebalance_alpha), float(rebalance_beta)
        self.gamma, self.focal_alpha = float(gamma), float(focal_alpha)
        self.kappa, self.lam = float(kappa), float(lam)
        self.cb_beta, self.cb_mode, self.cb_normalize = float(cb_beta), cb_mode, bool(cb_normalize)
        if self.gamma < 0 or not (0 <= self.focal_alpha <= 1):
            raise ValueError("focal: need gamma >= 0 and 0 <= focal_alpha <= 1")
        if self.lam <= 0 or not math.isfinite(self.kappa):
            raise ValueError("ntr: need lambda > 0 and a finite kappa")
        if not (0 <= self.cb_beta < 1):
            raise ValueError(f"class-balanced: need 0 <= beta < 1, got {self.cb_beta}")
        if self.rebalance_alpha < 0 or not math.isfinite(self.rebalance_beta):
            raise ValueError("rebalance: need alpha >= 0 and a finite beta")

        n = self.counts.numpy()
        n1 = np.maximum(n, 1.0)
        self.register_buffer("freq_inv", torch.tensor(1.0 / n1, dtype=torch.float64), persistent=False)

        # NTR shift: z' = z + b_i, b_i = kappa log(q_i/(1-q_i)). This is the sign of the published
        # code (wutong16/DistributionBalancedLoss, Roche/BalancedLossNLP: logits += init_bias with
        # init_bias = -kappa log(N/n - 1) = kappa log(q/(1-q)); after the fix of wutong16 issue #8 without
        # the extra 1/lambda). A rare label (q < 1/2) gets b_i < 0: its logit is lowered inside the loss, so
        # its many negatives are penalised less. The paper (Wu et al.) is quoted as writing z - nu_i with
        # nu_i = kappa b_hat_i, b_hat_i = log(q_i/(1-q_i)), the opposite sign; we follow DESIGN and the code.
        self.eps = 0.5 / self.num_docs if eps is None else float(eps)
        if not (0 < self.eps <= 0.5):
            raise ValueError(f"ntr: need 0 < eps <= 0.5, got {self.eps}")
        q = np.clip(n / self.num_docs, self.eps, 1 - self.eps)
        self.register_buffer(
            "ntr_bias", torch.tensor(self.kappa * np.log(q / (1 - q)), dtype=torch.float64), persistent=False
        )

        w_cb = (1 - self.cb_beta) / (1 - self.cb_beta**n1)
        self.cb_scale = float(1.0 / w_cb.mean()) if self.cb_normalize else 1.0
        w_cb = w_cb * self.cb_scale
        self.register_buffer("cb_weight", torch.tensor(w_cb, dtype=torch.float64), persistent=False)

        self.mu: float | None = None
        self.mu_source: str | None = None
        if weighting == "rebalance":
            if mu is None:
                mu, mu_source = (
                    estimate_mu_from_counts(n, self.num_docs),
                    "independence approximation from counts",
                )
            if not math.isfinite(float(mu)):
                raise ValueError(f"rebalance: mu must be finite, got {mu}")
            self.mu, self.mu_source = float(mu), mu_source or "given"

    # -- weights ------------------------------------------------------------------------------------------
    def _rebalance_weight(self, y: torch.Tensor) -> torch.Tensor:
        inv = self._buf(self.freq_inv, y)
        p = y @ inv  # P_k = sum_j y_kj / n_j
        empty = (p <= 0).unsqueeze(1)
        r = inv.unsqueeze(0) / torch.where(empty, torch.ones_like(p).unsqueeze(1), p.unsqueeze(1))
        w = self.rebalance_alpha + torch.sigmoid(self.rebalance_beta * (r - self.mu))
        return torch.where(empty, torch.full_like(w, self.rebalance_alpha + 1.0), w)

    def _cb_weight(self, y: torch.Tensor) -> torch.Tensor:
        w = self._buf(self.cb_weight, y)  # already normalised when cb_normalize
        if self.cb_mode == "by_class":
            return w.unsqueeze(0).expand_as(y)
        npos = y.sum(dim=1, keepdim=True)
        empty = npos <= 0
        safe = torch.where(empty, torch.ones_like(npos), npos)
        n1 = self._buf(self.counts, y).clamp(min=1)
        if self.cb_mode == "average_w":
            row = (y * w).sum(dim=1, keepdim=True) / safe
        else:
            if self.cb_mode == "average_n":
                nrow = (y * n1).sum(dim=1, keepdim=True) / safe
            else:  # min_n: count of the rarest positive label
                nrow = torch.where(y > 0, n1.expand_as(y), n1.max()).amin(dim=1, keepdim=True)
            nrow = torch.where(empty, torch.ones_like(nrow), nrow)
            row = self.cb_scale * (1 - self.cb_beta) / (1 - self.cb_beta**nrow)
        row = torch.where(empty, w.mean().expand_as(row), row)
        return row.expand_as(y)

    # -- loss ---------------------------------------------------------------------------------------------
    def _elementwise(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.ntr:
            zs = z + self._buf(self.ntr_bias, z)
            lam = self.lam
        else:
            zs, lam = z, 1.0
        pos = F.softplus(-zs)  # -log sigmoid(z')
        neg = F.softplus(lam * zs) / lam  # (1/lambda) log(1 + exp(lambda z'))
        if self.focal:
            # (1 - p_t)^gamma = exp(gamma * log(1 - p_t)): p_t = sigmoid(z') (pos), sigmoid(-lambda z') (neg)
            pos = self.focal_alpha * torch.exp(self.gamma * F.logsigmoid(-zs)) * pos
            neg = (1 - self.focal_alpha) * torch.exp(self.gamma * F.logsigmoid(lam * zs)) * neg
        loss = y * pos + (1 - y) * neg
        if self.weighting == "rebalance":
            loss = self._rebalance_weight(y) * loss
        elif self.weighting == "cb":
            loss = self._cb_weight(y) * loss
        return loss

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            **super().describe(),
            "weighting": self.weighting,
            "focal": self.focal,
            "ntr": self.ntr,
        }
        if self.weighting == "rebalance":
            d.update(
                rebalance_alpha=self.rebalance_alpha,
                rebalance_beta=self.rebalance_beta,
                mu=self.mu,
                mu_source=self.mu_source,
            )
        if self.weighting == "cb":
            d.update(cb_beta=self.cb_beta, cb_mode=self.cb_mode, cb_normalize=self.cb_normalize)
        if self.focal:
            d.update(gamma=self.gamma, focal_alpha=self.focal_alpha)
        if self.ntr:
            d.update(kappa=self.kappa, **{"lambda": self.lam}, eps=self.eps)
        return d


# ----------------------------------------------------------------------------------------------------------
# Factory
# ----------------------------------------------------------------------------------------------------------

# Switch settings of the DB family (the factory names are DistributionBalancedLoss with parts switched off).
_DB_SWITCHES: dict[str, dict[str, Any]] = {
    "bce": {"weighting": "none", "focal": False, "ntr": False},
    "focal": {"weighting": "none", "focal": True, "ntr": False},
    "class-balanced": {"weighting": "cb", "ntr": False},
    "r-fl": {"weighting": "rebalance", "focal": True, "ntr": False},
    "ntr-fl": {"weighting": "none", "focal": True, "ntr": True},
    "db-0fl": {"weighting": "rebalance", "focal": False, "ntr": True},
    "db": {},
    "cb-ntr": {"weighting": "cb", "focal": True, "ntr": True},
}
# User-facing short names of some losses -> DistributionBalancedLoss keyword.
_ALIASES = {
    "focal": {"alpha": "focal_alpha"},
    "class-balanced": {
        "beta": "cb_beta",
        "mode": "cb_mode",
        "normalize": "cb_normalize",
        "alpha": "focal_alpha",
    },
}


def build_loss(
    name: str,
    counts: Sequence[int] | np.ndarray,
    num_docs: int,
    params: dict[str, Any] | None = None,
    reduction: str = "mean",
    train_targets: Any = None,
) -> MultiLabelLoss:
    """Build a multi-label loss from its name, the training label statistics and its parameters.

    name: one of ``LOSS_NAMES`` (see the module docstring).
    counts: ``n_i``, training documents carrying label ``i`` (length C).
    num_docs: ``N``, training documents.
    params: overrides of ``LOSS_PARAMS[name]``; an unknown key raises ValueError listing the valid ones.
    reduction: ``"mean"`` (over all B x C entries), ``"sum"`` or ``"none"`` (B x C).
    train_targets: optional training label matrix (dense/sparse 0/1 ``N x C``, or per-row label index
        lists). Used only by the rebalanced losses when ``params`` has no ``mu``: ``mu = estimate_mu(...)``.
        Without it ``mu`` comes from :func:`estimate_mu_from_counts` (labels assumed independent).
        The value used is ``loss.mu`` and ``loss.describe()["mu"]`` (with ``mu_source``).
    """
    if name not in LOSS_PARAMS:
        raise ValueError(f"unknown loss {name!r}; valid: {', '.join(LOSS_NAMES)}")
    valid = LOSS_PARAMS[name]
    params = dict(params or {})
    unknown = sorted(set(params) - set(valid))
    if unknown:
        listed = ", ".join(valid) if valid else "(none)"
        raise ValueError(f"unknown parameter(s) {unknown} for loss {name!r}; valid: {listed}")
    resolved = {**valid, **params}

    if name == "weighted-bce":
        return WeightedBCELoss(counts, num_docs, a=resolved["a"], cap=resolved["cap"], reduction=reduction)
    if name == "asymmetric":
        return AsymmetricLoss(
            counts,
            num_docs,
            gamma_pos=resolved["gamma_pos"],
            gamma_neg=resolved["gamma_neg"],
            m=resolved["m"],
            reduction=reduction,
        )

    aliases = _ALIASES.get(name, {})
    kwargs = {aliases.get(k, k): v for k, v in resolved.items()}
    kwargs.update(_DB_SWITCHES[name])
    if "lambda" in kwargs:
        kwargs["lam"] = kwargs.pop("lambda")
    mu_source = "given" if kwargs.get("mu") is not None else None
    if kwargs.get("weighting") == "rebalance" and kwargs.get("mu") is None and train_targets is not None:
        kwargs["mu"] = estimate_mu(train_targets, counts)
        mu_source = "estimated from train_targets"
    return DistributionBalancedLoss(
        counts, num_docs, **kwargs, mu_source=mu_source, reduction=reduction, name=name
    )
