"""Each loss name's valid parameters and their defaults, without torch: the config checks `loss.params`
against it when it loads (config.py), the factory in pipeline/modeling/losses.py builds from it."""

from __future__ import annotations

from typing import Any

_REB = {"rebalance_alpha": 0.1, "rebalance_beta": 10.0, "mu": None}
_FOC = {"gamma": 2.0, "focal_alpha": 0.5}
_NTR = {"kappa": 0.05, "lambda": 2.0, "eps": None}
_CB = {"cb_beta": 0.9, "cb_mode": "by_class", "cb_normalize": False}

#: Valid parameters of each loss name and their defaults (the keys of ``params``).
LOSS_PARAMS: dict[str, dict[str, Any]] = {
    "bce": {},
    "weighted-bce": {"a": 1.0, "cap": None},
    "focal": {"gamma": 2.0, "alpha": 0.5},
    "class-balanced": {"beta": 0.9, "mode": "by_class", "normalize": False, "focal": False, **_FOC},
    "r-fl": {**_REB, **_FOC},
    "ntr-fl": {**_FOC, **_NTR},
    "db-0fl": {**_REB, **_NTR},
    "db": {"weighting": "rebalance", "focal": True, "ntr": True, **_REB, **_FOC, **_NTR, **_CB},
    "cb-ntr": {**_CB, **_FOC, **_NTR},
    "asymmetric": {"gamma_pos": 0.0, "gamma_neg": 4.0, "m": 0.05},
}
LOSS_NAMES = tuple(LOSS_PARAMS)
