"""Runs that share one prepared corpus."""

from __future__ import annotations

import shutil
from pathlib import Path

#: What a run folder holds before training: the synthetic corpus, the prepared splits and tiny-bert's
#: WordPiece vocabulary or the lexical TF-IDF features (train.make_featurizer reuses them while the training
#: data and settings are the same).
PREPARED = ("data", "prepared", "tokenizer", "features")


def copy_prepared(src: Path, dst: Path) -> None:
    """Give run `dst` the prepared splits and label statistics of run `src`, so a second loss or search mode
    trains on the same data without preparing (and splitting) it again."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in PREPARED:
        if (src / name).exists():
            shutil.copytree(src / name, dst / name)
    shutil.copy2(src / "label_stats.json", dst / "label_stats.json")
