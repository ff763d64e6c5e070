"""The loss-family search space for Tune: one declarative table, turned into Optuna's define-by-run space or
Tune's random-search space, so each family's parameters are only sampled for that family."""

from __future__ import annotations

from typing import Any

from ray import tune

#: family -> parameter -> ("float", low, high, log) | ("choice", [values]). Ranges follow the papers' sweeps.
DEFAULT_SPACE: dict[str, dict[str, tuple]] = {
    "bce": {},
    "weighted-bce": {"a": ("float", 0.25, 1.0, False)},
    "focal": {"gamma": ("float", 0.5, 3.0, False)},
    "class-balanced": {
        "beta": ("choice", [0.9, 0.99, 0.999, 0.9999]),
        "mode": ("choice", ["by_class", "average_w"]),
    },
    "db": {
        "rebalance_alpha": ("float", 0.0, 0.5, False),
        "rebalance_beta": ("float", 2.0, 20.0, False),
        "kappa": ("float", 0.01, 0.3, True),
        "lambda": ("float", 1.0, 5.0, False),
        "gamma": ("float", 0.5, 3.0, False),
    },
    "asymmetric": {
        "gamma_neg": ("float", 1.0, 6.0, False),
        "gamma_pos": ("float", 0.0, 1.0, False),
        "m": ("float", 0.0, 0.2, False),
    },
}

SEP = "."


def resolve_space(
    families: list[str], overrides: dict[str, dict[str, list]] | None = None
) -> dict[str, dict]:
    """The table for the chosen families, with per-parameter overrides ([low, high] or a list of choices)."""
    unknown = sorted(set(families) - set(DEFAULT_SPACE))
    if unknown:
        raise ValueError(f"tune.families: unknown {unknown}; known: {sorted(DEFAULT_SPACE)}")
    space = {fam: dict(DEFAULT_SPACE[fam]) for fam in families}
    for fam, params in (overrides or {}).items():
        if fam not in space:
            raise ValueError(f"tune.space: family {fam!r} is not in tune.families {families}")
        for name, value in params.items():
            if name not in DEFAULT_SPACE[fam]:
                raise ValueError(
                    f"tune.space.{fam}: unknown parameter {name!r}; known: {sorted(DEFAULT_SPACE[fam])}"
                )
            kind = DEFAULT_SPACE[fam][name][0]
            if kind == "float":
                low, high = value
                space[fam][name] = ("float", float(low), float(high), DEFAULT_SPACE[fam][name][3])
            else:
                space[fam][name] = ("choice", list(value))
    return space


def _domain(spec: tuple) -> Any:
    if spec[0] == "choice":
        return tune.choice(spec[1])
    _, low, high, log = spec
    if low == high:
        return low
    return tune.loguniform(low, high) if log else tune.uniform(low, high)


def random_space(
    space: dict[str, dict], lr: tuple[float, float], l2: tuple[float, float] | None = None
) -> dict[str, Any]:
    """Tune param_space: `loss` first, then each family's parameters through sample_from (None elsewhere);
    `l2` (train.l2) when its range is given."""
    out: dict[str, Any] = {
        "loss": tune.choice(list(space)),
        "lr": tune.loguniform(*lr) if lr[0] != lr[1] else lr[0],
    }
    if l2 is not None:
        out["l2"] = tune.loguniform(*l2) if l2[0] != l2[1] else l2[0]
    for fam, params in space.items():
        for name, spec in params.items():
            dom = _domain(spec)

            def sample(s, fam=fam, dom=dom):
                if s.config["loss"] != fam:
                    return None
                return dom.sample() if hasattr(dom, "sample") else dom

            out[fam + SEP + name] = tune.sample_from(sample)
    return out


class OptunaSpace:
    """Optuna define-by-run space: conditional parameters are only suggested for their family.

    A class, not a closure: OptunaSearch pickles it into every experiment checkpoint (a closure failed there).
    """

    def __init__(
        self, space: dict[str, dict], lr: tuple[float, float], l2: tuple[float, float] | None = None
    ) -> None:
        self.space = space
        self.lr = lr
        self.l2 = l2

    def __call__(self, trial) -> None:
        fam = trial.suggest_categorical("loss", list(self.space))
        if self.lr[0] != self.lr[1]:
            trial.suggest_float("lr", self.lr[0], self.lr[1], log=True)
        if self.l2 is not None and self.l2[0] != self.l2[1]:
            trial.suggest_float("l2", self.l2[0], self.l2[1], log=True)
        for name, spec in self.space[fam].items():
            key = fam + SEP + name
            if spec[0] == "choice":
                trial.suggest_categorical(key, spec[1])
            elif spec[1] != spec[2]:
                trial.suggest_float(key, spec[1], spec[2], log=spec[3])


def optuna_space(
    space: dict[str, dict], lr: tuple[float, float], l2: tuple[float, float] | None = None
) -> OptunaSpace:
    return OptunaSpace(space, lr, l2)


def loss_from_trial(config: dict[str, Any], space: dict[str, dict]) -> tuple[str, dict[str, Any]]:
    """(loss name, its parameters) from a flat trial config; a constant range fills in an unsampled value."""
    fam = config["loss"]
    params: dict[str, Any] = {}
    for name, spec in space[fam].items():
        value = config.get(fam + SEP + name)
        if value is None and spec[0] == "float" and spec[1] == spec[2]:
            value = spec[1]
        if value is not None:
            params[name] = value
    return fam, params
