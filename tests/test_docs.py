"""The documentation: the generated configuration reference is current, the README stays a short guide, and
neither the library nor its docs point outside the repository."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from pipeline.core import reference

ROOT = Path(__file__).resolve().parents[1]


def test_configuration_reference_is_current_and_names_every_key():
    assert reference.main(["--check"]) == 0, "run: python -m pipeline.core.reference"
    page = (ROOT / "docs" / "configuration.md").read_text()
    for key in ("`loss`", "`train`", "`data.split`", "`threshold_strategy`", "`worker_niceness`"):
        assert key in page
    # Every key has a meaning (a `#:` comment in the config), not an empty cell.
    assert not [line for line in page.splitlines() if line.startswith("| `") and line.endswith("|  |")]


def test_reference_reports_a_stale_page(tmp_path, monkeypatch):
    stale = tmp_path / "configuration.md"
    stale.write_text("old\n")
    monkeypatch.setattr(reference, "PAGE", stale)
    assert reference.main(["--check"]) == 1
    assert reference.main([]) == 0 and stale.read_text() == reference.render()


def test_readme_is_a_short_guide_with_at_least_five_reference_pages():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    pages = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    assert len(pages) >= 5, pages
    for link in re.findall(r"\]\(((?:docs|deploy|benchmarks)/[^)]+)\)", readme):
        assert (ROOT / link).exists(), link


def test_library_and_docs_point_nowhere_outside_the_repository():
    files = subprocess.run(
        [
            "git",
            "ls-files",
            "--cached",
            "--others",
            "--exclude-standard",
            "pipeline",
            "jobs",
            "docs",
            "deploy",
            "configs",
            "README.md",
            "Makefile",
            "pyproject.toml",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    bad = [f for f in files if re.search(r"\.\./shared|DESIGN\.md", (ROOT / f).read_text(errors="ignore"))]
    assert not bad, bad
