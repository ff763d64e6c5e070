"""A job stopped during training by SIGTERM (as `kill`, a scheduler or `ray job stop` send it) or by Ctrl-C
(SIGINT to the terminal's whole process group, Ray's daemons included): exit code 143 / 130, one line on
stderr saying how to resume, no stack; the same command again resumes from the last checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ROOT

SMALL = [
    "data.synthetic.num_docs=1200",
    "data.synthetic.num_labels=10",
    "model.max_length=32",
    "model.hidden_size=64",
    "model.intermediate_size=128",
    "model.vocab_size=800",
    "train.patience=0",
    "train.cpus_per_worker=0.5",
    "evaluate.cpus_per_actor=0.5",
]
#: What a stop must never print: a Python stack, the C++ stack of an abort, Train's per-report line.
NEVER = ("Traceback", "*** SIGTERM", "*** SIGABRT", "core dumped", "Reporting training result")


def _args(base: list[str], epochs: int) -> list[str]:
    return [a for o in [*base, f"train.epochs={epochs}"] for a in ("--set", o)]


def _start(args: list[str], out: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_JOB_CONFIG_JSON_ENV_VAR")}
    # A session of its own, so this test can end everything the job started; output to files (Ray's
    # daemons inherit the descriptors, and would keep pipes open).
    return subprocess.Popen(
        [sys.executable, "-m", "jobs.run_all", "--config", "configs/demo.yaml", *args],
        cwd=ROOT,
        env=env,
        stdout=out.with_suffix(".out").open("w"),
        stderr=out.with_suffix(".err").open("w"),
        start_new_session=True,
    )


def _end_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # whatever this job left (its local Ray's daemons), nothing else
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)


def _checkpoints(folder: Path) -> set[str]:
    return {p.parent.name for p in folder.glob("checkpoint_*/state.pt")}


def _stop_after_new_checkpoint(args: list[str], out: Path, folder: Path, send: Callable[[int], None]) -> int:
    """Run the job until a checkpoint not in `folder` before appears, `send` the signal; the exit code."""
    before = _checkpoints(folder)
    proc = _start(args, out)
    try:
        deadline = time.monotonic() + 300
        while not _checkpoints(folder) - before:
            assert proc.poll() is None, _text(out)[-3000:]
            assert time.monotonic() < deadline, "no checkpoint in time"
            time.sleep(0.2)
        send(proc.pid)
        return proc.wait(timeout=120)
    finally:
        _end_group(proc)


def _text(out: Path) -> str:
    return out.with_suffix(".out").read_text() + out.with_suffix(".err").read_text()


def _check_stopped(out: Path, name: str, rc: int, expected: int) -> None:
    text, err = _text(out), out.with_suffix(".err").read_text()
    assert rc == expected, text[-3000:]
    line = f"stopped by {name}: outputs and checkpoints written so far are kept; run the same command again"
    assert sum(line in ln for ln in err.splitlines()) == 1, err[-3000:]
    assert not [bad for bad in NEVER if bad in text], text[-3000:]


def _last_epoch(folder: Path) -> int:
    """1-based epoch of the checkpoint a new attempt resumes from (the newest complete one)."""
    newest = sorted(_checkpoints(folder))[-1]
    return json.loads((folder / newest / "meta.json").read_text())["epoch"] + 1


@pytest.mark.timeout(600)
def test_sigterm_and_ctrl_c_during_training_stop_cleanly_and_resume(tmp_path):
    base = [f"run.output={tmp_path}", "run.name=sig", *SMALL]
    run = tmp_path / "sig"
    folder = run / "checkpoints"

    # 1. SIGTERM to the driver alone, as `kill PID` sends it; many epochs, so it lands mid-training.
    rc = _stop_after_new_checkpoint(
        _args(base, 30), tmp_path / "first", folder, lambda pid: os.kill(pid, signal.SIGTERM)
    )
    _check_stopped(tmp_path / "first", "SIGTERM", rc, 143)
    assert _checkpoints(folder), "the checkpoint was not kept"
    assert not (run / "model" / "model_config.json").exists(), "training had already finished"
    first = _last_epoch(folder)

    # 2. Ctrl-C: SIGINT to the whole process group, after the resumed run wrote a checkpoint of its own.
    rc = _stop_after_new_checkpoint(
        _args(base, 30), tmp_path / "second", folder, lambda pid: os.killpg(pid, signal.SIGINT)
    )
    _check_stopped(tmp_path / "second", "SIGINT", rc, 130)
    assert f"[train] resumed from checkpoint after epoch {first}" in _text(tmp_path / "second")
    second = _last_epoch(folder)
    assert second > first, (first, second)

    # 3. The same command, one epoch more than the checkpoint holds (epochs are not in its fingerprint).
    proc = _start(_args(base, second + 1), tmp_path / "third")
    try:
        rc = proc.wait(timeout=400)
    finally:
        _end_group(proc)
    text = _text(tmp_path / "third")
    assert rc == 0, text[-3000:]
    assert f"[train] resumed from checkpoint after epoch {second}" in text, text[-3000:]
    assert (run / "report" / "metrics.json").is_file()
    history = json.loads((run / "model" / "model_config.json").read_text())["training"]["history"]
    assert [h["epoch"] for h in history] == list(range(second + 1)), history  # continued, not from scratch
    # Each line once (Train V2's print patch used to double every worker line), and no stack.
    lines = [ln.split(")", 1)[-1] for ln in text.splitlines() if "[train] epoch" in ln]
    assert len(lines) == 1 and len(lines) == len(set(lines)), lines
    assert not [bad for bad in NEVER if bad in text], text[-3000:]
