"""Writing a benchmark's result document."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _json_default(obj: Any) -> Any:
    """numpy scalars and arrays as plain JSON; anything else as its string."""
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def write_json(path: Path, doc: Any) -> Path:
    """Indented JSON with a final newline, written beside and then moved over `path`: a reader (or a crash
    half-way) never sees half a document."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=_json_default) + "\n")
    tmp.replace(path)
    return path
