"""Where the benchmarks read their configs and write their results."""

from __future__ import annotations

from pathlib import Path

#: The checkout (benchmarks run from it: `python -m benchmarks.<name>`).
ROOT = Path(__file__).resolve().parents[2]
#: The committed results, one JSON per benchmark (benchmarks/readme.py renders them).
RESULTS = ROOT / "benchmarks" / "results"
#: The embedded default (`make run`): the synthetic corpus and tiny-bert.
DEMO_CONFIG = ROOT / "configs" / "demo.yaml"
