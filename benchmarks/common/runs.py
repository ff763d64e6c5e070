"""Runs that share one prepared corpus."""

from __future__ import annotations

import shutil
from pathlib import Path

#: What a run folder holds before training: the synthetic corpus, the prepared splits and tiny-bert's
#: WordPiece vocabulary, the fitted featurizers and featurised splits (train.make_featurizer and
#: train.featurised_splits reuse them while the training data and settings are the same).
PREPARED = ("data", "prepared", "tokenizer", "features")


def share_features(run_dir: Path, base: Path) -> None:
    """Copy the fitted featurizers and featurised splits of `run_dir` (`features/<key>/`,
    `features/splits/<key>/`) that `base` lacks, so the dataset's later rows (copies of `base`) reuse them."""
    src = run_dir / "features"
    for folder in [*src.glob("*"), *src.glob("splits/*")]:
        if folder.is_dir() and folder.name != "splits":
            target = base / "features" / folder.relative_to(src)
            if not target.exists():
                shutil.copytree(folder, target)


def copy_prepared(src: Path, dst: Path) -> None:
    """Give run `dst` the prepared splits and label statistics of run `src`, so a second loss or search mode
    trains on the same data without preparing (and splitting) it again."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in PREPARED:
        if (src / name).exists():
            shutil.copytree(src / name, dst / name)
    shutil.copy2(src / "label_stats.json", dst / "label_stats.json")
