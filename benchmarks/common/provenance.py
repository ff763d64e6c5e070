"""What made a result: the command to re-run it, the checkout it ran from and the package versions."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import subprocess
import sys
from collections.abc import Sequence

from benchmarks.common.paths import ROOT


def command_line(module: str, argv: Sequence[str] | None = None) -> str:
    """'python -m benchmarks.quality --smoke': the command that re-makes a result (`argv`, else this
    process's own arguments)."""
    args = list(sys.argv[1:] if argv is None else argv)
    return " ".join(["python -m " + module, *map(str, args)])


def git_sha() -> str | None:
    """The checkout's commit, with '-dirty' when tracked files differ from it; None outside a git checkout.
    BENCH_GIT_SHA, when set, names it instead (a copy of the tree on a GPU machine; its .git may lag)."""
    if os.environ.get("BENCH_GIT_SHA"):
        return os.environ["BENCH_GIT_SHA"]

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30, check=False
        )

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return None
        dirty = git("diff", "--quiet", "HEAD", "--").returncode == 1
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("-dirty" if dirty else "")


def package_versions(*dists: str) -> dict[str, str | None]:
    """Python's version and each distribution's (None when it is not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in dists:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def utc_now() -> str:
    """The time now in UTC, ISO 8601 to the second: when a run started or finished."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def run_header(
    module: str, argv: Sequence[str] | None, versions: Sequence[str], sha: str | None = None
) -> dict:
    """The fields every results document starts with: command, git SHA (`sha`, or HEAD now), machine,
    platform, start time, load average and the versions of `versions`."""
    from benchmarks.common.machine import load_average, machine_summary

    return {
        "command": command_line(module, argv),
        "git_sha": sha if sha is not None else git_sha(),
        "machine": machine_summary(),
        "platform": platform.platform(),
        "started": utc_now(),
        "load_average_before": load_average(),
        "versions": package_versions(*versions),
    }
