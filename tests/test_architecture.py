"""The package's shape: every module sits in a wing, and imports run one way between wings.

Wings from the bottom up (docs/architecture.md): core < data < modeling < evaluation < training, serving <
runs. A module may import its own wing and the wings below it; training and serving do not import each
other; modeling (pure PyTorch) imports no Ray. A test rather than a convention, so a wrong-way import fails
CI.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PIPELINE = Path(__file__).resolve().parents[1] / "pipeline"
RANK = {"core": 0, "data": 1, "modeling": 2, "evaluation": 3, "training": 4, "serving": 4, "runs": 5}


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module a file imports, at any depth (function-level imports included), with its line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            if node.module == "pipeline":  # `from pipeline import data` names a wing
                found += [(node.lineno, f"pipeline.{alias.name}") for alias in node.names]
    return found


def _modules() -> list[Path]:
    return sorted(p for p in PIPELINE.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_module_lives_in_a_known_wing():
    loose = [p.name for p in PIPELINE.glob("*.py") if p.name != "__init__.py"]
    assert not loose, f"modules outside a wing: {loose}"
    wings = {p.name for p in PIPELINE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert wings == set(RANK), wings


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PIPELINE)))
def test_imports_run_down_the_wings(path: Path):
    rel = path.relative_to(PIPELINE)
    if len(rel.parts) < 2:
        return
    wing = rel.parts[0]
    wrong = []
    for line, name in _imports(path):
        parts = name.split(".")
        if parts[0] in {"jobs", "benchmarks", "tests"}:
            wrong.append(f"line {line}: {name} (the library never imports its callers)")
        if parts[0] != "pipeline" or len(parts) < 2:
            continue
        other = parts[1]
        if other not in RANK:
            wrong.append(f"line {line}: {name} (not a wing)")
        elif other != wing and RANK[other] >= RANK[wing]:
            wrong.append(f"line {line}: {name} ({wing} may not import {other})")
    if wing == "modeling":
        wrong += [
            f"line {line}: {name} (modeling is pure PyTorch)"
            for line, name in _imports(path)
            if name.split(".")[0] == "ray"
        ]
    assert not wrong, f"{rel}: " + "; ".join(wrong)


def test_the_check_catches_a_wrong_way_import(tmp_path):
    """The rule itself: an import from data up to training is seen (so the test above can fail)."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from pipeline.training.train import run_train\n")
    assert (2, "pipeline.training.train") in _imports(bad)
    assert RANK["training"] >= RANK["data"]


def test_the_stages_import_transformers_only_when_they_build_an_encoder():
    """Every training worker, scoring actor and job imports these modules; transformers (seconds of a
    process's start) is imported where an encoder or tokenizer is built or loaded, which the lexical kind
    never does."""
    import subprocess
    import sys

    code = (
        "import sys; import pipeline.training.train, pipeline.evaluation.evaluate, pipeline.serving.predict; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'transformers'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=PIPELINE.parent, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout[-2000:]


def _parquet_reads(path: Path) -> list[int]:
    """Lines where a file calls Ray Data's `read_parquet` itself (as `ray.data.read_parquet` or imported)."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module == "ray.data":
            lines += [node.lineno for alias in node.names if alias.name == "read_parquet"]
        elif isinstance(node, ast.Attribute) and node.attr == "read_parquet":
            if isinstance(node.value, ast.Attribute) and ast.unparse(node.value) == "ray.data":
                lines.append(node.lineno)
    return lines


def test_every_parquet_read_goes_through_the_v1_reader(tmp_path):
    """pipeline.core.parquet_reader says why (a Ray 2.60 stack in users' logs; one task for many files)."""
    own = PIPELINE / "core" / "parquet_reader.py"
    direct = {str(p.relative_to(PIPELINE)): _parquet_reads(p) for p in _modules() if p != own}
    assert not {k: v for k, v in direct.items() if v}
    assert _parquet_reads(own)
    bad = tmp_path / "bad.py"  # the check sees both spellings
    bad.write_text("import ray.data\nfrom ray.data import read_parquet\nray.data.read_parquet('x')\n")
    assert _parquet_reads(bad) == [2, 3]
