"""Time and peak memory of every stage at the label-space shapes users bring (issue #9).

    .venv/bin/python -m benchmarks.scale                      # all three shapes, results/scale.json
    .venv/bin/python -m benchmarks.scale --shape 7900 --set data.synthetic.num_docs=20000
    .venv/bin/python -m benchmarks.scale --smoke              # reduced shapes, a few minutes

Each shape (configs/scale-<shape>.yaml: a synthetic corpus of that shape) runs in a child process of its own
with its own local Ray: prepare, then train and evaluate once per loss. Per stage: wall time, the driver's
peak RSS and the peak RSS summed over the driver's process tree (Ray's workers and raylet are its
descendants; shared pages are counted once per process, so the tree figure is an upper bound). For the
seed-000 shape (7,900 labels) two losses, as the user compared them: pos_weight BCE (weighted-bce) and DB,
both with per-label thresholds, with macro AP (AUPRC per label, averaged), micro AUPRC (all cells pooled),
the predicted-to-true label count ratio on test, and macro-F1.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common.machine import load_average, machine_summary
from benchmarks.common.measure import MIB, PeakRSS, StepPeaks
from benchmarks.common.paths import RESULTS, ROOT
from benchmarks.common.provenance import command_line, git_sha, package_versions, utc_now
from benchmarks.common.ray_session import benchmark_ray
from benchmarks.common.results import write_json
from benchmarks.common.runs import copy_prepared

SHAPES = {"7900": ["weighted-bce", "db"], "1500": ["db"], "124": ["db"]}
#: Reduced shapes (the CI test and --smoke): the label space of each shape at a fraction of the documents.
REDUCED = {
    "7900": ["data.synthetic.num_docs=2000"],
    "1500": ["data.synthetic.num_docs=1500"],
    "124": ["data.synthetic.num_docs=600"],
}
#: A model small enough that the reduced shapes train one epoch in seconds on 2 CPUs.
SMALL_MODEL = [
    "train.epochs=1",
    "model.max_length=32",
    "model.hidden_size=32",
    "model.num_layers=1",
    "model.intermediate_size=64",
    "model.vocab_size=2000",
]


#: This process's exact peak RSS per stage and over all of them (`peak_rss_self_mb`).
_PEAKS = StepPeaks()


def _stage(name: str, fn: Callable[[], Any], out: list[dict[str, Any]], **tags: Any) -> Any:
    print(f"[scale] {name} {tags or ''} ...", flush=True)
    t0 = time.perf_counter()
    _PEAKS.start()
    with PeakRSS(interval=0.2) as peak:
        result = fn()
    exact = _PEAKS.stop()
    row = {
        "stage": name,
        **tags,
        "seconds": round(time.perf_counter() - t0, 2),
        "peak_rss_driver_mb": round(peak.driver / MIB, 1),
        "peak_rss_tree_mb": round(peak.tree / MIB, 1),
    }
    if _PEAKS.resettable:
        # The kernel's high-water mark over this stage alone: a spike shorter than the sampler's period shows.
        row["peak_rss_driver_exact_mb"] = round(exact, 1)
    out.append(row)
    print(f"[scale] {row}", flush=True)
    return result


def _quality(run_dir: Path) -> dict[str, Any]:
    """Test-set figures of an evaluated run: AUPRC (macro and micro AP), predicted:true ratio, F1."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    doc = json.loads((run_dir / "report" / "metrics.json").read_text())
    overall = doc["test"]["overall"] if "test" in doc else doc["overall"]
    table = pq.read_table(run_dir / "predictions" / "test", columns=["labels", "predicted"])
    true = int(pc.sum(pc.list_value_length(table.column("labels"))).as_py() or 0)
    predicted = int(pc.sum(pc.list_value_length(table.column("predicted"))).as_py() or 0)
    return {
        "macro_ap": overall.get("macro_ap"),
        "micro_auprc": overall.get("micro_auprc"),
        "micro_f1": overall.get("micro_f1"),
        "macro_f1": overall.get("macro_f1"),
        "true_labels": true,
        "predicted_labels": predicted,
        "predicted_to_true": round(predicted / true, 4) if true else None,
    }


def run_shape(
    shape: str,
    overrides: list[str],
    workdir: Path,
    losses: list[str] | None = None,
) -> dict:
    """Prepare once, then train + evaluate per loss, in this process (Ray must be up). Returns the rows.

    `label_index_width` is the width of the trainer's label column as its first run built it: the evidence
    that no dense labels matrix is built per split.
    """
    from pipeline.core.config import load_config
    from pipeline.data.prepare import run_prepare
    from pipeline.evaluation.evaluate import run_evaluate
    from pipeline.training.train import run_train

    losses = losses or SHAPES[shape]
    config = ROOT / "configs" / f"scale-{shape}.yaml"
    stages: list[dict[str, Any]] = []
    quality: dict[str, Any] = {}
    first_run: Path | None = None
    width = None
    for loss in losses:
        cfg = load_config(
            config, [*overrides, f"run.output={workdir}", f"run.name={shape}-{loss}", f"loss.name={loss}"]
        )
        run_dir = workdir / cfg.run.name
        if first_run is None:
            stats = _stage("prepare", lambda cfg=cfg: run_prepare(cfg), stages, shape=shape)
            first_run = run_dir
        else:
            copy_prepared(first_run, run_dir)
        trained = _stage("train", lambda cfg=cfg: run_train(cfg), stages, shape=shape, loss=loss)
        width = trained["label_index_width"] if width is None else width
        _stage("evaluate", lambda cfg=cfg: run_evaluate(cfg), stages, shape=shape, loss=loss)
        quality[loss] = _quality(run_dir)
    return {
        "shape": shape,
        "config": str(config.relative_to(ROOT)),
        "overrides": overrides,
        "documents": stats["documents"],
        "num_labels": stats["num_labels"],
        "cardinality_train": round(stats["cardinality"]["train"], 2),
        "label_index_width": width,
        "stages": stages,
        "quality": quality,
        "peak_rss_self_mb": round(_PEAKS.peak(), 1),
    }


def _child(args: argparse.Namespace) -> None:
    """One shape in this process: its own local Ray unless --address joins a running one."""
    results = []
    with benchmark_ray(args.num_cpus, address=args.address, include_dashboard=True):
        for shape in args.child.split(","):
            overrides = ([*REDUCED[shape], *SMALL_MODEL] if args.smoke else []) + args.overrides
            with tempfile.TemporaryDirectory(prefix="bml-scale-") as d:
                results.append(run_shape(shape, overrides, Path(d), args.loss or None))
    Path(args.result).write_text(json.dumps(results, indent=2))


def child_command(
    shapes: list[str],
    overrides: list[str],
    result: Path,
    smoke: bool = False,
    address: str | None = None,
    losses: list[str] | None = None,
) -> list[str]:
    """The command of a child process running `shapes` one after the other; its result file is a list."""
    cmd = [sys.executable, "-m", "benchmarks.scale", "--child", ",".join(shapes), "--result", str(result)]
    if smoke:
        cmd.append("--smoke")
    for o in overrides:
        cmd += ["--set", o]
    if address:
        cmd += ["--address", address]
    for loss in losses or []:
        cmd += ["--loss", loss]
    return cmd


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.scale",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--shape", action="append", choices=sorted(SHAPES), help="default: all three")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override a.b=c")
    parser.add_argument("--smoke", action="store_true", help="reduced shapes and a small model")
    parser.add_argument("--out", default=None, help="default: benchmarks/results/scale.json (smoke: stdout)")
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--address", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--loss", action="append", default=[], help="losses to run (default: per shape)")
    args = parser.parse_args(argv)
    if args.child:
        _child(args)
        return 0

    shapes = args.shape or list(SHAPES)
    command, sha = command_line("benchmarks.scale", argv), git_sha()
    results = []
    t0 = time.perf_counter()
    for shape in shapes:  # a fresh process (and Ray) per shape: its own peak memory
        load_before, started = load_average(2), utc_now()
        with tempfile.TemporaryDirectory() as d:
            result = Path(d) / "result.json"
            cmd = child_command([shape], args.overrides, result, args.smoke, losses=args.loss)
            proc = subprocess.run(cmd, cwd=ROOT)
            if proc.returncode != 0 or not result.exists():  # keep the other shapes' figures
                print(f"[scale] shape {shape} failed (exit {proc.returncode})", file=sys.stderr)
                results.append({"shape": shape, "failed": f"exit {proc.returncode}"})
                continue
            for row in json.loads(result.read_text()):
                row.update(
                    command=command,
                    git_sha=sha,
                    started=started,
                    load_average_before=load_before,
                    load_average_after=load_average(2),
                )
                results.append(row)
    out = args.out or (None if args.smoke else str(RESULTS / "scale.json"))
    doc = _merge(Path(out) if out else None, results, command, round(time.perf_counter() - t0, 1))
    if out:
        write_json(Path(out), doc)
        print(f"[scale] wrote {out}")
    else:
        print(json.dumps(doc, indent=2))
    return 0 if not any("failed" in r for r in results) else 1


def _merge(out: Path | None, results: list[dict], command: str, seconds: float) -> dict[str, Any]:
    """The result document: this run's shapes replace the same shapes of an earlier run in `out`, the other
    shapes (and any other keys) are kept, each shape with the command that measured it."""
    doc: dict[str, Any] = json.loads(out.read_text()) if out is not None and out.exists() else {}
    done = {r["shape"] for r in results}
    shapes = [r for r in doc.get("shapes", []) if r.get("shape") not in done] + results
    shapes.sort(key=lambda r: list(SHAPES).index(r["shape"]) if r.get("shape") in SHAPES else len(SHAPES))
    doc.update(
        command=command,
        git_sha=git_sha(),
        seconds=seconds,
        machine=machine_summary(),
        versions=package_versions("ray", "torch", "numpy"),
        shapes=shapes,
    )
    measured = {r["shape"] for r in shapes if "failed" not in r and "stages" in r}
    doc["complete"] = measured >= set(SHAPES) and all(
        set(r.get("quality", {})) >= set(SHAPES[r["shape"]]) for r in shapes if r.get("shape") in SHAPES
    )
    doc.pop("status", None)
    return doc


if __name__ == "__main__":
    sys.exit(main())
