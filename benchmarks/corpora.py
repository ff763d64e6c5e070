"""Where the real evaluation corpora (Reuters-21578, GoEmotions, EURLEX57K) are read from.

`$BML_DATA_DIR` names a folder holding one sub-folder per corpus; without it, the `shared/data` folder beside
this checkout. The corpora are read in place and never copied into the project; tests and benchmarks that
need one skip with the reason when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    """The folder of corpora: `$BML_DATA_DIR`, else `shared/data` beside the checkout."""
    env = os.environ.get("BML_DATA_DIR")
    return Path(env) if env else ROOT.parent / "shared" / "data"
