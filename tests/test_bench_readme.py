"""benchmarks/README.md is generated from benchmarks/results/*.json (`python -m benchmarks.readme`): the
committed page is current, and its figures are the JSON's. No Ray."""

from __future__ import annotations

import json
import re
from pathlib import Path

from benchmarks import readme

ROOT = Path(__file__).resolve().parents[1]


def _section(page: str, heading: str) -> str:
    """The text under a Markdown heading, up to the next heading of the same or a higher level."""
    level = len(heading.split(" ", 1)[0])
    rest = page[page.index(f"\n{heading}\n") + len(heading) + 2 :]
    end = re.search(rf"\n#{{1,{level}}} ", rest)
    return rest[: end.start() if end else len(rest)]


def _row(text: str, first_cell: str) -> dict[str, str]:
    """The cells of the first table row starting with `first_cell`, keyed by their column's header."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_cell:
            header = next(lines[j] for j in range(i, -1, -1) if lines[j + 1].startswith("| ---"))
            return dict(zip([c.strip() for c in header.strip().strip("|").split("|")], cells, strict=True))
    raise AssertionError(f"no row {first_cell!r}")


def test_committed_page_is_current(tmp_path, monkeypatch):
    assert readme.main(["--check"]) == 0, "run: python -m benchmarks.readme"
    stale = tmp_path / "README.md"
    stale.write_text("old\n")
    monkeypatch.setattr(readme, "PAGE", stale)
    assert readme.main(["--check"]) == 1
    assert readme.main([]) == 0 and stale.read_text() == readme.render()


def test_quality_table_rows_are_the_json_figures():
    page = (ROOT / "benchmarks" / "README.md").read_text()
    result = json.loads((ROOT / "benchmarks" / "results" / "quality.json").read_text())
    reuters = _section(_section(page, "## quality.json"), "### reuters21578")
    db = result["datasets"]["reuters21578"]["rows"]["db"]
    row = _row(reuters, "db")
    assert float(row["macro-F1"]) == round(db["macro_f1"], 3)
    assert float(row["tail F1 (30 labels)"]) == round(db["tail_f1"], 3)
    assert float(row["test-oracle macro-F1"]) == round(db["oracle_macro_f1"], 3)
