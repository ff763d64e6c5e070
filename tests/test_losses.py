"""losses: values against independent numpy float64 formulas (docs/losses.md), gradcheck, properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.modeling.losses import (
    DEFAULT_MU,
    LOSS_NAMES,
    LOSS_PARAMS,
    DistributionBalancedLoss,
    build_loss,
    estimate_mu,
    estimate_mu_from_counts,
)

# ---- the fixed example: 3 rows x 4 labels ---------------------------------------------------------------
N = 10
COUNTS = np.array([10, 4, 1, 0])  # label 0 on every document, label 3 on none
Y = np.array([[1, 0, 1, 0], [0, 1, 0, 1], [0, 0, 0, 0]], dtype=np.float64)  # row 2 has no positive label
Z = np.array([[2.0, -1.0, 0.5, -3.0], [-0.5, 1.5, -2.0, 0.3], [1.0, -0.2, -1.5, 2.5]])
MU = 0.9  # given explicitly so the reference does not depend on the estimator


# ---- numpy float64 references, straight from docs/losses.md ------------------------------------------
def sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_bce(z, y):
    p = sig(z)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def np_weighted_bce(z, y, a=1.0, cap=None):
    w = ((N - COUNTS) / np.maximum(COUNTS, 1)) ** a
    if cap is not None:
        w = np.minimum(w, cap)
    p = sig(z)
    return -(w * y * np.log(p) + (1 - y) * np.log(1 - p))


def np_focal_factor(pt, y, gamma=2.0, alpha=0.5):
    alpha_t = np.where(y == 1, alpha, 1 - alpha)
    return alpha_t * (1 - pt) ** gamma


def np_focal(z, y, gamma=2.0, alpha=0.5):
    p = sig(z)
    pt = np.where(y == 1, p, 1 - p)
    return np_focal_factor(pt, y, gamma, alpha) * np_bce(z, y)


def cb_w(n, beta=0.9):
    return (1 - beta) / (1 - beta ** np.maximum(n, 1))


def np_cb_weight(y, mode, beta=0.9, normalize=False):
    w = cb_w(COUNTS.astype(float), beta)
    scale = 1 / w.mean() if normalize else 1.0
    out = np.zeros_like(y)
    for k in range(y.shape[0]):
        pos = np.flatnonzero(y[k])
        n_pos = np.maximum(COUNTS[pos], 1).astype(float)
        if mode == "by_class":
            out[k] = w * scale
        elif pos.size == 0:
            out[k] = (w * scale).mean()
        elif mode == "average_n":
            out[k] = cb_w(n_pos.mean(), beta) * scale
        elif mode == "average_w":
            out[k] = (w[pos] * scale).mean()
        elif mode == "min_n":
            out[k] = cb_w(n_pos.min(), beta) * scale
    return out


def np_rebalance_weight(y, mu=MU, alpha=0.1, beta=10.0):
    out = np.zeros_like(y)
    for k in range(y.shape[0]):
        pk = sum(1 / max(COUNTS[j], 1) for j in range(y.shape[1]) if y[k, j] == 1)
        for i in range(y.shape[1]):
            if pk == 0:
                out[k, i] = alpha + 1.0  # documented: limit P_k -> 0
            else:
                r = (1 / max(COUNTS[i], 1)) / pk
                out[k, i] = alpha + sig(beta * (r - mu))
    return out


def np_ntr(z, y, focal, kappa=0.05, lam=2.0, gamma=2.0, alpha=0.5):
    eps = 0.5 / N
    q = np.clip(COUNTS / N, eps, 1 - eps)
    b = kappa * np.log(q / (1 - q))
    zp = z + b  # DESIGN: z' = z + b_i
    pos = -np.log(sig(zp))
    neg = (1 / lam) * np.log(1 + np.exp(lam * zp))
    if focal:
        pt_pos = sig(zp)
        pt_neg = 1 - sig(lam * zp)  # p_t of a negative, from the shifted, scaled logit
        pos = alpha * (1 - pt_pos) ** gamma * pos
        neg = (1 - alpha) * (1 - pt_neg) ** gamma * neg
    return y * pos + (1 - y) * neg


def np_asymmetric(z, y, gp=0.0, gn=4.0, m=0.05):
    p = sig(z)
    pm = np.maximum(p - m, 0)
    lp = (1 - p) ** gp * np.log(p)
    lm = pm**gn * np.log(1 - pm)
    return -(y * lp + (1 - y) * lm)


REFERENCE = {
    "bce": ({}, lambda z, y: np_bce(z, y)),
    "weighted-bce": ({}, lambda z, y: np_weighted_bce(z, y)),
    "weighted-bce a=0.5 cap=2": (
        {"name": "weighted-bce", "a": 0.5, "cap": 2.0},
        lambda z, y: np_weighted_bce(z, y, 0.5, 2.0),
    ),
    "focal": ({}, lambda z, y: np_focal(z, y)),
    "focal gamma=1 alpha=0.25": (
        {"name": "focal", "gamma": 1.0, "alpha": 0.25},
        lambda z, y: np_focal(z, y, 1.0, 0.25),
    ),
    **{
        f"class-balanced {mode}": (
            {"name": "class-balanced", "mode": mode},
            lambda z, y, mode=mode: np_cb_weight(y, mode) * np_bce(z, y),
        )
        for mode in ("by_class", "average_n", "average_w", "min_n")
    },
    "class-balanced normalize average_n": (
        {"name": "class-balanced", "mode": "average_n", "normalize": True},
        lambda z, y: np_cb_weight(y, "average_n", normalize=True) * np_bce(z, y),
    ),
    "class-balanced focal": (
        {"name": "class-balanced", "focal": True},
        lambda z, y: np_cb_weight(y, "by_class") * np_focal(z, y),
    ),
    "r-fl": ({"mu": MU}, lambda z, y: np_rebalance_weight(y) * np_focal(z, y)),
    "ntr-fl": ({}, lambda z, y: np_ntr(z, y, focal=True)),
    "db-0fl": ({"mu": MU}, lambda z, y: np_rebalance_weight(y) * np_ntr(z, y, focal=False)),
    "db": ({"mu": MU}, lambda z, y: np_rebalance_weight(y) * np_ntr(z, y, focal=True)),
    "db custom": (
        {"name": "db", "mu": 0.5, "rebalance_alpha": 0.2, "rebalance_beta": 5.0, "kappa": 0.3, "lambda": 3.0},
        lambda z, y: np_rebalance_weight(y, 0.5, 0.2, 5.0) * np_ntr(z, y, True, kappa=0.3, lam=3.0),
    ),
    "cb-ntr": ({}, lambda z, y: np_cb_weight(y, "by_class") * np_ntr(z, y, focal=True)),
    "asymmetric": ({}, lambda z, y: np_asymmetric(z, y)),
    "asymmetric gp=1 gn=2 m=0.2": (
        {"name": "asymmetric", "gamma_pos": 1.0, "gamma_neg": 2.0, "m": 0.2},
        lambda z, y: np_asymmetric(z, y, 1.0, 2.0, 0.2),
    ),
}


def _build(case: str, reduction: str = "mean", counts=COUNTS, num_docs=N):
    params, _ = REFERENCE[case]
    params = dict(params)
    name = params.pop("name", case)
    return build_loss(name, counts, num_docs, params, reduction=reduction)


def test_reference_covers_every_loss_name():
    covered = {REFERENCE[c][0].get("name", c) for c in REFERENCE}
    assert covered == set(LOSS_NAMES)


@pytest.mark.parametrize("case", list(REFERENCE))
def test_matches_numpy_reference(case):
    _, ref = REFERENCE[case]
    expected = ref(Z, Y)
    assert np.all(np.isfinite(expected))
    for dtype in (torch.float64, torch.float32):
        loss = _build(case, reduction="none")
        got = loss(torch.tensor(Z, dtype=dtype), torch.tensor(Y, dtype=dtype))
        assert got.shape == Z.shape
        np.testing.assert_allclose(got.detach().double().numpy(), expected, rtol=1e-6, atol=1e-6)
    mean = _build(case)(torch.tensor(Z), torch.tensor(Y))
    assert abs(mean.item() - expected.mean()) < 1e-6


def test_edge_cases_of_the_example_are_exercised():
    # the reference values are not trivially 0/1 at the edges: n_i = 0, n_i = N, empty row
    w = np_rebalance_weight(Y)
    assert np.allclose(w[2], 1.1) and not np.allclose(w[0], w[0, 0])
    assert np_weighted_bce(Z, Y)[1, 3] > np_bce(Z, Y)[1, 3]  # n=0 -> weight N
    assert np.isclose(np_weighted_bce(Z, Y)[0, 0], 0.0)  # n=N -> weight 0 on the positive


@pytest.mark.parametrize("case", list(REFERENCE))
def test_gradcheck_float64(case):
    loss = _build(case, reduction="sum")
    z = torch.tensor(Z, dtype=torch.float64, requires_grad=True)
    y = torch.tensor(Y, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: loss(t, y), (z,), eps=1e-6, atol=1e-5)


# ---- ablations: DB with parts switched off is the named ablation -------------------------------------
def _db(**switches):
    return build_loss("db", COUNTS, N, {"mu": MU, **switches}, reduction="none")


ABLATIONS = [
    ({"ntr": False}, "r-fl", {"mu": MU}),
    ({"focal": False}, "db-0fl", {"mu": MU}),
    ({"weighting": "none"}, "ntr-fl", {}),
    ({"weighting": "cb"}, "cb-ntr", {}),
    ({"weighting": "none", "ntr": False}, "focal", {}),
    ({"weighting": "none", "focal": False, "ntr": False}, "bce", {}),
    ({"weighting": "cb", "focal": False, "ntr": False}, "class-balanced", {}),
]


@pytest.mark.parametrize(("switches", "name", "params"), ABLATIONS)
def test_db_reduces_to_ablations(switches, name, params):
    z, y = torch.tensor(Z), torch.tensor(Y)
    full = _db()(z, y)
    reduced = _db(**switches)(z, y)
    named = build_loss(name, COUNTS, N, params, reduction="none")(z, y)
    torch.testing.assert_close(reduced, named, rtol=0, atol=1e-12)
    assert not torch.allclose(reduced, full)  # the switch does something


# ---- properties -------------------------------------------------------------------------------------------
PROPERTY_CASES = list(LOSS_NAMES) + [
    "class-balanced average_n",
    "class-balanced average_w",
    "class-balanced min_n",
    "weighted-bce a=0.5 cap=2",
]


@st.composite
def problems(draw):
    b = draw(st.integers(1, 5))
    c = draw(st.integers(1, 6))
    n_docs = draw(st.integers(1, 50))
    counts = draw(st.lists(st.sampled_from([0, n_docs]) | st.integers(0, n_docs), min_size=c, max_size=c))
    targets = draw(st.lists(st.lists(st.booleans(), min_size=c, max_size=c), min_size=b, max_size=b))
    if draw(st.booleans()):
        targets[0] = [False] * c  # an empty row
    big = st.sampled_from([-100.0, 100.0])
    logits = draw(
        st.lists(
            st.lists(big | st.floats(-100, 100, allow_nan=False), min_size=c, max_size=c),
            min_size=b,
            max_size=b,
        )
    )
    return np.array(counts), n_docs, np.array(targets, dtype=np.float32), np.array(logits, dtype=np.float32)


@pytest.mark.parametrize("case", PROPERTY_CASES)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=problems())
def test_finite_nonnegative_and_inputs_unchanged(case, problem):
    counts, n_docs, y_np, z_np = problem
    params, _ = REFERENCE.get(case, ({}, None))
    params = dict(params)
    name = params.pop("name", case)
    params.pop("mu", None)
    loss = build_loss(name, counts, n_docs, params, reduction="none")
    z = torch.tensor(z_np, requires_grad=True)
    y = torch.tensor(y_np)
    z_before, y_before = z.detach().clone(), y.clone()
    out = loss(z, y)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert (out >= 0).all()
    out.sum().backward()
    assert torch.isfinite(z.grad).all()
    assert torch.equal(z.detach(), z_before) and torch.equal(y, y_before)


# ---- precision, devices, reductions ---------------------------------------------------------------------
@pytest.mark.parametrize("name", LOSS_NAMES)
def test_autocast_bf16_computes_in_float32(name):
    loss = build_loss(name, COUNTS, N)
    y = torch.tensor(Y, dtype=torch.float32)
    lin = torch.nn.Linear(4, 4)
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z16 = lin(x) * 10
        assert z16.dtype == torch.bfloat16
        out = loss(z16, y)
    assert out.dtype == torch.float32
    ref = loss(z16.detach().float(), y)
    torch.testing.assert_close(out.detach(), ref, rtol=1e-6, atol=1e-7)
    out.backward()
    assert torch.isfinite(lin.weight.grad).all()


def test_half_inputs_are_upcast():
    loss = build_loss("db", COUNTS, N)
    out = loss(torch.tensor(Z, dtype=torch.float16), torch.tensor(Y, dtype=torch.float16))
    assert out.dtype == torch.float32


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_reductions_are_consistent(name):
    z, y = torch.tensor(Z), torch.tensor(Y)
    none = build_loss(name, COUNTS, N, reduction="none")(z, y)
    assert none.shape == (3, 4)
    torch.testing.assert_close(build_loss(name, COUNTS, N, reduction="sum")(z, y), none.sum())
    torch.testing.assert_close(build_loss(name, COUNTS, N, reduction="mean")(z, y), none.mean())


def test_targets_of_any_dtype_give_the_same_loss():
    loss = build_loss("db", COUNTS, N, {"mu": MU})
    z = torch.tensor(Z)
    ref = loss(z, torch.tensor(Y))
    for t in (torch.tensor(Y).bool(), torch.tensor(Y).long(), torch.tensor(Y).float()):
        torch.testing.assert_close(loss(z, t), ref)


def test_buffers_follow_module_to_and_are_not_in_state_dict():
    loss = build_loss("db", COUNTS, N).to("cpu")
    assert {name for name, _ in loss.named_buffers()} >= {"counts", "freq_inv", "ntr_bias", "cb_weight"}
    assert loss.state_dict() == {}  # non-persistent: never pollutes a model checkpoint


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", LOSS_NAMES)
def test_cuda_follows_input_device(name):
    loss = build_loss(name, COUNTS, N)  # buffers left on the CPU: cast on the fly
    out = loss(torch.tensor(Z, device="cuda"), torch.tensor(Y, device="cuda"))
    assert out.device.type == "cuda"
    ref = build_loss(name, COUNTS, N).to("cuda")(
        torch.tensor(Z, device="cuda"), torch.tensor(Y, device="cuda")
    )
    torch.testing.assert_close(out, ref)


# ---- mu -------------------------------------------------------------------------------------------------
# 4 documents x 3 labels, counts [3, 2, 1]; inverse frequencies [1/3, 1/2, 1].
# r over positive pairs: row0 P=5/6 -> 0.4, 0.6; row1 -> 1; row2 P=3/2 -> 1/3, 2/3; row3 -> 1
# mean = 4/6, median = (0.6 + 2/3)/2, mu = (mean + median)/2 = 0.65
MU_Y = np.array([[1, 1, 0], [1, 0, 0], [0, 1, 1], [1, 0, 0]])
MU_HAND = 0.65


def test_estimate_mu_hand_computed():
    assert estimate_mu(MU_Y) == pytest.approx(MU_HAND, abs=1e-12)
    assert estimate_mu(sp.csr_matrix(MU_Y)) == pytest.approx(MU_HAND, abs=1e-12)
    assert estimate_mu([[0, 1], [0], [1, 2], [0]], counts=[3, 2, 1]) == pytest.approx(MU_HAND, abs=1e-12)
    assert estimate_mu(torch.tensor(MU_Y)) == pytest.approx(MU_HAND, abs=1e-12)
    with pytest.raises(ValueError, match="no positive"):
        estimate_mu(np.zeros((2, 3)))


def test_mu_used_is_recorded():
    from_targets = build_loss("db", [3, 2, 1], 4, train_targets=MU_Y)
    assert from_targets.mu == pytest.approx(MU_HAND)
    assert from_targets.describe()["mu"] == pytest.approx(MU_HAND)
    assert from_targets.describe()["mu_source"] == "estimated from train_targets"

    given_mu = build_loss("r-fl", [3, 2, 1], 4, {"mu": 0.3}, train_targets=MU_Y)
    assert given_mu.mu == 0.3 and given_mu.describe()["mu_source"] == "given"

    from_counts = build_loss("db-0fl", [3, 2, 1], 4)
    assert from_counts.mu == estimate_mu_from_counts([3, 2, 1], 4)
    assert from_counts.describe()["mu_source"] == "independence approximation from counts"
    assert 0 < from_counts.mu <= 1

    # the mu actually changes the loss
    z, y = torch.tensor(Z[:, :3]), torch.tensor(Y[:, :3])
    a = build_loss("db", [3, 2, 1], 4, {"mu": 0.3})(z, y)
    b = build_loss("db", [3, 2, 1], 4, {"mu": 0.9})(z, y)
    assert not torch.allclose(a, b)
    assert build_loss("ntr-fl", [3, 2, 1], 4).mu is None


def test_estimate_mu_from_counts_limits():
    # one label on every document: every positive row is single-label, r = 1
    assert estimate_mu_from_counts([5], 5) == 1.0
    # labels that can never co-occur under independence (q_j = 0 for the others)
    assert estimate_mu_from_counts([7, 0, 0], 7) == 1.0
    assert estimate_mu_from_counts([0, 0], 3) == DEFAULT_MU
    assert estimate_mu_from_counts([3, 2, 1], 4) == estimate_mu_from_counts([3, 2, 1], 4)  # deterministic


def test_describe_lists_resolved_parameters():
    d = build_loss("db", COUNTS, N, {"kappa": 0.1}).describe()
    assert d["name"] == "db" and d["kappa"] == 0.1 and d["lambda"] == 2.0 and d["gamma"] == 2.0
    assert d["eps"] == pytest.approx(0.05) and d["rebalance_alpha"] == 0.1 and math.isfinite(d["mu"])
    assert build_loss("asymmetric", COUNTS, N).describe() == {
        "name": "asymmetric",
        "reduction": "mean",
        "gamma_pos": 0.0,
        "gamma_neg": 4.0,
        "m": 0.05,
    }


# ---- errors ---------------------------------------------------------------------------------------------
def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="valid: bce, weighted-bce, focal"):
        build_loss("dbl", COUNTS, N)


def test_unknown_parameter_lists_valid_ones():
    with pytest.raises(ValueError, match=r"\['beta'\].*valid: gamma, alpha"):
        build_loss("focal", COUNTS, N, {"beta": 1.0})
    with pytest.raises(ValueError, match=r"valid: \(none\)"):
        build_loss("bce", COUNTS, N, {"a": 1.0})
    assert set(LOSS_PARAMS["db"]) >= {"weighting", "focal", "ntr", "mu", "kappa", "lambda"}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"reduction": "avg"}, "reduction"),
        ({"counts": [1, 2, 11, 0]}, "exceeds num_docs"),
        ({"counts": [1, -2, 1, 0]}, ">= 0"),
        ({"params": {"mode": "by_row"}, "name": "class-balanced"}, "cb_mode"),
        ({"params": {"weighting": "inv"}}, "weighting"),
    ],
)
def test_bad_configuration_raises(kwargs, match):
    args = {"name": "db", "counts": COUNTS, "num_docs": N, **kwargs}
    with pytest.raises(ValueError, match=match):
        build_loss(**args)


def test_bad_shapes_raise():
    loss = build_loss("bce", COUNTS, N)
    with pytest.raises(ValueError, match="logits must be"):
        loss(torch.zeros(3, 5), torch.zeros(3, 5))
    with pytest.raises(ValueError, match="targets shape"):
        loss(torch.zeros(3, 4), torch.zeros(2, 4))


def test_class_is_the_factory_product():
    assert isinstance(build_loss("cb-ntr", COUNTS, N), DistributionBalancedLoss)
