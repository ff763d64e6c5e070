"""A job stopped by SIGTERM (as `kill`, a scheduler or `ray job stop` send it) during training: exit code 143,
one line saying how to resume, no stack; the same command again resumes from the last checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
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


def _start(args: list[str], log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_JOB_CONFIG_JSON_ENV_VAR")}
    # A session of its own, so this test can end everything the job started; output to a file (Ray's
    # daemons inherit pipes).
    return subprocess.Popen(
        [sys.executable, "-m", "jobs.run_all", "--config", "configs/demo.yaml", *args],
        cwd=ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _end_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # whatever the job left (its local Ray's daemons)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)


@pytest.mark.timeout(600)
def test_sigterm_during_training_stops_cleanly_and_resumes(tmp_path):
    base = [f"run.output={tmp_path}", "run.name=sig", *SMALL]
    # Many epochs the first time, so the stop lands mid-training; three the second time, so the resumed run
    # (epochs do not enter the checkpoint's fingerprint) ends soon after the checkpoint's epoch.
    args = [a for o in [*base, "train.epochs=30"] for a in ("--set", o)]
    checkpoints = tmp_path / "sig" / "checkpoints"
    first = _start(args, tmp_path / "first.log")
    try:
        deadline = time.monotonic() + 300
        while not list(checkpoints.glob("checkpoint_*/state.pt")):
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint in time"
            time.sleep(0.2)
        os.kill(first.pid, signal.SIGTERM)  # the driver alone, as `kill PID` does
        rc = first.wait(timeout=120)
    finally:
        _end_group(first)
    log = (tmp_path / "first.log").read_text()
    assert rc == 143, log[-3000:]
    assert "stopped by SIGTERM" in log and "run the same command again (run.name=sig) to resume" in log, log[
        -3000:
    ]
    assert "Traceback" not in log and "*** SIGTERM" not in log and "core dumped" not in log, log[-3000:]
    assert list(checkpoints.glob("checkpoint_*/state.pt")), "the checkpoint was not kept"
    assert not (tmp_path / "sig" / "model" / "model_config.json").exists(), "training had already finished"

    again = [a for o in [*base, "train.epochs=3"] for a in ("--set", o)]
    second = _start(again, tmp_path / "second.log")
    try:
        rc = second.wait(timeout=400)
    finally:
        _end_group(second)
    log = (tmp_path / "second.log").read_text()
    assert rc == 0, log[-3000:]
    assert "[train] resumed from checkpoint after epoch" in log, log[-3000:]
    assert (tmp_path / "sig" / "report" / "metrics.json").is_file()
    # Each progress line once (Train V2's print patch used to double every worker line).
    lines = [ln.split(")", 1)[-1] for ln in log.splitlines() if "[train] epoch" in ln]
    assert lines and len(lines) == len(set(lines)), lines
