"""The throughput benchmark's driver: every phase runs in a child process of its own (with --smoke, all in
one), started from `main`, which assembles their results into one JSON document."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import throughput as package
from benchmarks.common.machine import load_average, machine_record
from benchmarks.common.paths import RESULTS, ROOT
from benchmarks.common.provenance import command_line, git_sha, package_versions
from benchmarks.common.results import write_json
from benchmarks.throughput import scale, score, stats, train
from benchmarks.throughput.assemble import assemble
from benchmarks.throughput.context import Phase, PhaseSampler, RayContext
from benchmarks.throughput.schedule import FULL, PHASES, REPEAT_SEP, SECTIONS, SMOKE

DEFAULT_OUT = RESULTS / "throughput.json"
#: The versions recorded beside Python's.
VERSIONED = ("ray", "torch", "polars", "pyarrow", "numpy", "transformers")

PHASE_FUNCS: dict[str, Phase] = {
    "stats_gen": stats.phase_stats_gen,
    "stats_polars": stats.phase_stats_polars,
    "stats_profile": stats.phase_stats_profile,
    "stats_ray": stats.phase_stats_ray,
    "train_ray": train.phase_train_ray,
    "train_bare": train.phase_train_bare,
    "score_setup": score.phase_score_setup,
    "score_ray": score.phase_score_ray,
    "score_bare": score.phase_score_bare,
    "scale": scale.phase_scale,
}


def run_phases(names: list[str], work: Path) -> None:
    """Child process: run the phases in order, one JSON result file each. Ray starts when a phase first
    needs it and stops before a phase that does not (the bare baselines run with no Ray up)."""
    params = json.loads((work / "params.json").read_text())
    kinds = {name: kind for name, _, kind in PHASES}
    sampler = PhaseSampler()
    ctx = RayContext(smoke=bool(params.get("smoke")))
    done: list[str] = []
    try:
        for name in names:
            base = name.split(REPEAT_SEP)[0]
            if kinds[base] is None:
                ctx.stop()
            sampler.reset(quiet=kinds[base] is None)
            t0 = time.perf_counter()
            print(f"[throughput] phase {name} ...", file=sys.stderr, flush=True)
            result = PHASE_FUNCS[base](work, params, sampler, ctx)
            result["phase_wall_s"] = round(time.perf_counter() - t0, 2)
            if "peak_memory" in result:
                result["peak_memory"]["shared_process_with"] = list(done)
            write_json(work / "results" / f"{name}.json", result)
            print(f"[throughput] phase {name} done in {result['phase_wall_s']}s", file=sys.stderr, flush=True)
            done.append(name)
    finally:
        ctx.stop()
        sampler.stop()


#: Sections whose Ray and bare sides run as interleaved pairs of child processes, `repeats` times.
PAIRED = ("train", "score")


def _groups(phases: list[tuple[str, str, str | None]], smoke: bool, repeats: int) -> list[list[str]]:
    """One child process per phase (its ru_maxrss is that phase's peak); with --smoke, one child for all.

    The Ray and bare sides of train and score alternate (ray@0, bare@0, ray@1, bare@1, ...): this machine's
    speed drifts by 10-20% over minutes (the same scoring work took 15.9 to 20.8 s in one run), and sides
    measured minutes apart would carry that drift into their ratio."""
    names = [name for name, _, _ in phases]
    if smoke:
        return [names] if names else []
    groups: list[list[str]] = []
    for name, section, _ in phases:
        if section not in PAIRED:
            groups.append([name])
        elif name.endswith("_ray"):
            bare = name.removesuffix("_ray") + "_bare"
            for i in range(repeats):
                groups += [[f"{name}{REPEAT_SEP}{i}"], [f"{bare}{REPEAT_SEP}{i}"]]
        elif not name.endswith("_bare"):  # set-up phases (score_setup)
            groups.append([name])
    return groups


def _die_with_parent() -> None:
    """preexec_fn (Linux): SIGKILL this child when the benchmark's process dies, e.g. killed by a timeout."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _run_child(names: list[str], work: Path, threads: int, timeout: float) -> None:
    env = dict(os.environ)
    env.update(
        {
            "OMP_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads),
            # Hugging Face's Rust tokenizer would otherwise use every core in both sides' tokenisation.
            "TOKENIZERS_PARALLELISM": "false",
            "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        }
    )
    cmd = [sys.executable, "-m", "benchmarks.throughput", "--phase", ",".join(names), "--work", str(work)]
    # A session of its own: on a timeout or an interrupt the whole group (Ray's daemons included) is ours to
    # kill; and the child dies with this process (Ray's daemons die with the child).
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True, preexec_fn=_die_with_parent)
    try:
        rc = proc.wait(timeout=timeout)
    except BaseException as err:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if isinstance(err, subprocess.TimeoutExpired):
            raise RuntimeError(f"phases {names} did not finish within {timeout:.0f}s") from None
        raise
    if rc != 0:
        raise RuntimeError(f"phases {names} failed (exit {rc}); see the output above")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.throughput", description=package.__doc__.split("\n\n")[0]
    )
    parser.add_argument("--rows", type=int, default=None, help="rows of the label-statistics corpus")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated: " + ",".join(SECTIONS))
    parser.add_argument(
        "--out", default=None, help=f"default {DEFAULT_OUT.relative_to(ROOT)} (--smoke: temp)"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, about a minute")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on both sides (default 1)")
    parser.add_argument("--train-docs", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--score-docs", type=int, default=None)
    parser.add_argument(
        "--repeats", type=int, default=None, help="interleaved runs of each side of train and score"
    )
    parser.add_argument("--phase-timeout", type=float, default=1800)
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        run_phases(args.phase.split(","), Path(args.work))
        return

    selected = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(selected) - set(SECTIONS))
    if unknown or not selected:
        parser.error(f"--only: unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")
    if args.smoke and args.repeats is not None:
        parser.error("--repeats applies to full runs; --smoke runs every phase once, in one process")
    if args.repeats is not None and args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    params: dict[str, Any] = dict(SMOKE if args.smoke else FULL)
    for key in ("rows", "train_docs", "epochs", "score_docs", "repeats"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    if args.epochs is not None:
        params["scale_epochs"] = args.epochs
    params["smoke"] = args.smoke
    if args.out:
        out_path = Path(args.out)
    elif args.smoke:
        out_path = Path(tempfile.gettempdir()) / f"throughput-smoke-{os.getpid()}.json"
    else:
        out_path = DEFAULT_OUT
    phases = [p for p in PHASES if p[1] in selected]
    command = command_line("benchmarks.throughput", argv)
    load_before = load_average(2)
    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="bml-throughput-"))
    try:
        (work / "params.json").write_text(json.dumps(params))
        for names in _groups(phases, args.smoke, params["repeats"]):
            _run_child(names, work, args.threads, args.phase_timeout)
        sections = assemble(work, selected, params)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    doc = {
        "command": command,
        "git_sha": git_sha(),
        "mode": "smoke" if args.smoke else "full",
        "machine": machine_record(),
        "versions": package_versions(*VERSIONED),
        "sizes": params,
        "environment": {
            "torch_threads_both_sides": args.threads,
            "OMP_NUM_THREADS": str(args.threads),
            "TOKENIZERS_PARALLELISM": "false",
            "ray_cluster": "--smoke: one two-node Cluster (2 x 1 CPU) for every Ray phase"
            if args.smoke
            else "a fresh local Ray (2 CPUs, dashboard on) per Ray phase of stats, train and score; a "
            "two-node Cluster (2 x 1 CPU) for scale",
        },
        "load_average_before": load_before,
        "load_average_after": load_average(2),
        "seconds_total": round(time.perf_counter() - t0, 1),
        "memory_note": "driver_peak_mib is the measuring process's own peak in the phase (the kernel's "
        "VmHWM, reset at the phase's start where driver_peak_exact; each side runs in a child process of "
        "its own unless shared_process_with lists earlier phases; a bare phase is not sampled, its tree is "
        "that process alone); Ray's workers are separate processes: process_tree_rss_peak_sum_mib adds "
        "every process the child started (raylet, GCS, dashboard, workers; shared object-store pages count "
        "once per process mapping them) and ray_worker_rss_peak_max_mib is the largest single Ray worker",
        **sections,
    }
    write_json(out_path, doc)
    print(json.dumps(_headline(doc), indent=2))
    print(f"wrote {out_path}")


def _headline(doc: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"seconds_total": doc["seconds_total"]}
    if "stats" in doc:
        s = doc["stats"]
        out["stats_rows_per_s"] = {"ray": s["ray_data"]["rows_per_s"], "polars": s["polars"]["rows_per_s"]}
        out["stats_ratio"] = s["ratio_ray_over_polars"]
        out["stats_identical"] = s["counts"]["identical"]
    for key, rate in (("train", "steady_samples_per_s"), ("score", "steady_docs_per_s")):
        if key in doc:
            sides = [v for k, v in doc[key].items() if isinstance(v, dict) and rate in v]
            out[f"{key}_{rate}"] = [side[rate] for side in sides]
            out[f"{key}_ratio"] = doc[key]["ratio_ray_over_bare"]
    if "scale" in doc:
        out["scale_samples_per_s"] = [doc["scale"][f"workers_{w}"]["steady_samples_per_s"] for w in (1, 2)]
    return out
