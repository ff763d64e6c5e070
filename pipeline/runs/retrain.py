"""Scheduled retraining: train a challenger on new or changed shards, promote it only if it is not worse.

The config's run (`<run.output>/<run.name>`) is the project; `<project>/current.json` points to the promoted
model (schema_version 1):

    {"schema_version": 1, "run": "<challenger run name>", "run_uri": "...", "model": "<abs path or URI>",
     "thresholds": "<abs path or URI of its thresholds.json>", "metrics": {<the run's test "overall">},
     "inputs_hash": "<hash of the shards it was trained on>", "promoted_at": "<UTC ISO time>",
     "comparison": "<its comparison.json>",
     "previous": {run, model, thresholds, inputs_hash, promoted_at} | null}

One retraining (`run_retrain`):

1. Hash the shards of data.source (the listing of the prepare manifest: path, size, modification time). Equal
   to the pointer's `inputs_hash`: log "no new or changed shards" and stop (a changed config alone does not
   retrain; the schedule reacts to data).
2. The challenger is the run `<run.name>-<12 hex>`, named by the hash of everything that shapes the
   evaluated model (shards, data / model / loss / train / evaluate settings), so a job interrupted half-way
   continues in the same folder (stage manifests skip what is done) and a rejected challenger is not trained
   again on every schedule tick.
3. prepare -> train -> evaluate the challenger (pipeline.runs.orchestrator.run_stages).
4. Score the current model, with its own thresholds, on the challenger's test split with Ray Data and compute
   the same metrics as the challenger's report, over the challenger's label vocabulary (labels the current
   model does not know count as never predicted). When an earlier attempt already compared this challenger
   with this same current model, its scores are reused and the decision is made again with the present
   retrain settings (so a rejected challenger costs nothing on later ticks, and loosening the gate on purpose
   promotes it without retraining).
5. Promote when, for every metric of retrain.metrics, challenger >= current - retrain.tolerance (<= current +
   tolerance for hamming_loss); no current model: promote. `<group>.<metric>` (e.g. `tail.macro_f1`) names a
   frequency group's figure.
6. Write `<challenger>/comparison.md` and then `<challenger>/comparison.json` (both models' metrics, deltas,
   decision, reason) and only then, when promoted, rewrite current.json (one atomic write). Any failure before
   that leaves current.json as it was.

Not guarded: two retrain jobs of one project at the same time (schedule them without overlap, e.g. a
RayCronJob with concurrencyPolicy Forbid); the pointer is re-read just before it is written, which narrows
but does not close that window. Old challenger runs are kept; nothing deletes them.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import math
import time
from typing import Any

import numpy as np
import scipy.sparse as sp

from pipeline.core.config import Config
from pipeline.core.errors import InputError
from pipeline.core.layout import POINTER_FILE, RunLayout, require_evaluated
from pipeline.core.parquet_reader import read_parquet
from pipeline.core.storage import Location, locate, read_json, require_complete, write_bytes, write_json
from pipeline.data.groups import GROUPS
from pipeline.evaluation.document import HEADLINE, LOWER_IS_BETTER
from pipeline.evaluation.metrics import AVERAGES, TOP_K
from pipeline.evaluation.metrics import evaluate as compute_metrics
from pipeline.evaluation.scoring import score_dataset, scored_blocks
from pipeline.evaluation.thresholds import ThresholdResult, decisions
from pipeline.runs.manifest import digest, expected_hash, read_manifest, source_identity
from pipeline.runs.orchestrator import run_stages

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
COMPARISON_FILE = "comparison.json"
COMPARISON_MD = "comparison.md"
#: Scores of the report's "overall" (and of each group) a promotion gate may use.
GATE_METRICS = frozenset(
    [f"{a}_{m}" for a in AVERAGES for m in ("precision", "recall", "f1")]
    + ["hamming_loss", "subset_accuracy", "macro_ap", "micro_auprc", "labels_with_f1_gt_0"]
    + [f"p_at_{k}" for k in TOP_K]
)


def check_gate_metrics(metrics: list[str]) -> None:
    """Fail before any training when retrain.metrics names something the report does not have."""
    if not metrics:
        raise InputError("retrain.metrics is empty: name at least one test metric, e.g. [micro_f1, macro_f1]")
    for name in metrics:
        group, _, key = name.rpartition(".")
        if key not in GATE_METRICS or (group and group not in GROUPS):
            raise InputError(
                f"retrain.metrics: unknown metric {name!r}; expected one of {sorted(GATE_METRICS)}, "
                f"optionally prefixed by a frequency group ({', '.join(GROUPS)}), e.g. 'tail.macro_f1'"
            )


def metric_value(doc: dict[str, Any], name: str) -> float | None:
    """`micro_f1` from doc["overall"], `tail.macro_f1` from doc["groups"]["tail"]."""
    group, _, key = name.rpartition(".")
    section = doc["groups"][group] if group else doc["overall"]
    value = section.get(key)
    return None if value is None or not math.isfinite(float(value)) else float(value)


def decide(
    challenger: dict[str, float | None],
    current: dict[str, float | None] | None,
    metrics: list[str],
    tolerance: float,
) -> tuple[bool, str, list[dict[str, Any]]]:
    """(promote?, reason, one check per metric). Pure: no I/O."""
    if current is None:
        return True, "no current model yet: the first challenger is promoted", []
    checks = []
    for name in metrics:
        new, old = challenger.get(name), current.get(name)
        lower = name.rpartition(".")[2] in LOWER_IS_BETTER
        if new is None or old is None:
            # Both undefined (e.g. a group without labels on this test split): nothing to lose on.
            both = new is None and old is None
            note = "undefined for both models" if both else "undefined for one of the models"
            checks.append(
                {"metric": name, "challenger": new, "current": old, "delta": None, "passed": both,
                 "lower_is_better": lower, "note": note}
            )  # fmt: skip
            continue
        passed = new <= old + tolerance if lower else new >= old - tolerance
        checks.append(
            {"metric": name, "challenger": new, "current": old, "delta": new - old, "passed": passed,
             "lower_is_better": lower}
        )  # fmt: skip
    failed = [c for c in checks if not c["passed"]]
    if failed:
        parts = [
            f"{c['metric']} {_f(c['challenger'])} vs {_f(c['current'])}"
            + (f" ({c['delta']:+.4f})" if c["delta"] is not None else f" ({c['note']})")
            for c in failed
        ]
        return (
            False,
            f"worse than the current model beyond tolerance {tolerance:g} on " + "; ".join(parts),
            checks,
        )
    parts = [f"{c['metric']} " + (f"{c['delta']:+.4f}" if c["delta"] is not None else "n/a") for c in checks]
    return (
        True,
        f"not worse than the current model within tolerance {tolerance:g} ({', '.join(parts)})",
        checks,
    )


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _resolve(value: str, project: Location, cfg: Config) -> Location:
    if "://" in value or value.startswith("/"):
        return locate(value, cfg.storage)
    return project.join(value)


def read_pointer(loc: Location) -> dict[str, Any] | None:
    if not loc.exists():
        return None
    try:
        doc = read_json(loc)
    except ValueError as err:
        raise InputError(
            f"{loc.uri}: not valid JSON ({err}); fix or remove it (it names the promoted model)"
        ) from None
    if not isinstance(doc, dict) or not {"run", "model", "thresholds", "inputs_hash"} <= set(doc):
        raise InputError(f"{loc.uri}: expected keys run, model, thresholds, inputs_hash; got {doc!r:.200}")
    return doc


def challenger_config(cfg: Config, key: str) -> Config:
    data = cfg.model_dump()
    data["run"]["name"] = f"{cfg.run.name}-{key[:12]}"
    return Config.model_validate(data)


def column_map(from_labels: list[str], to_labels: list[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(columns in `from_labels`, their columns in `to_labels`) of the labels both hold, and the labels of
    `to_labels` missing from `from_labels`."""
    index = {lab: j for j, lab in enumerate(from_labels)}
    both = [(index[lab], j) for j, lab in enumerate(to_labels) if lab in index]
    src = np.array([a for a, _ in both], dtype=np.int64)
    dst = np.array([b for _, b in both], dtype=np.int64)
    return src, dst, [lab for lab in to_labels if lab not in index]


def _moved_scores(scores: np.ndarray, src: np.ndarray, dst: np.ndarray, width: int) -> np.ndarray:
    out = np.zeros((len(scores), width), np.float32)
    out[:, dst] = scores[:, src]
    return out


def _moved_decisions(pred: Any, src: np.ndarray, dst: np.ndarray, shape: tuple[int, int]) -> Any:
    """`pred` (dense, or scipy.sparse: then CSR) with column src[i] moved to dst[i], others 0."""
    if sp.issparse(pred):
        select = sp.csr_matrix((np.ones(src.size, np.int8), (src, dst)), shape=shape)  # a 0/1 selection
        return (sp.csr_matrix(pred) @ select).tocsr()
    moved = np.zeros((len(pred), shape[1]), np.int8)
    moved[:, dst] = np.asarray(pred)[:, src]
    return moved


def align(
    scores: np.ndarray, pred: Any, from_labels: list[str], to_labels: list[str]
) -> tuple[np.ndarray, Any, list[str]]:
    """Columns of one label vocabulary re-ordered into another: a label the scoring model does not know gets
    score 0 and is never predicted; labels outside `to_labels` are dropped. `pred` dense or scipy.sparse
    (then returned as CSR).

    Returns (scores, predictions, labels of `to_labels` missing from `from_labels`)."""
    src, dst, unknown = column_map(from_labels, to_labels)
    shape = (len(from_labels), len(to_labels))
    return _moved_scores(scores, src, dst, len(to_labels)), _moved_decisions(pred, src, dst, shape), unknown


def score_current(
    cfg: Config, project: Location, pointer: dict[str, Any], run: RunLayout, stats: dict[str, Any]
) -> dict[str, Any]:
    """The current model's metrics on `run`'s test split, over `run`'s label vocabulary."""
    model = _resolve(pointer["model"], project, cfg)
    thr_loc = _resolve(pointer["thresholds"], project, cfg)
    require_evaluated(thr_loc.parent, f"the current thresholds {thr_loc.uri}")
    for loc, what in ((model.join("model_config.json"), "model"), (thr_loc, "thresholds")):
        if not loc.exists():
            raise InputError(f"{loc.uri} not found: the current {what} named by {project.uri}/{POINTER_FILE}")
    cur_labels = [str(x) for x in read_json(model.join("model_config.json"))["labels"]]
    fitted = ThresholdResult.from_json_dict(read_json(thr_loc))
    if fitted.labels != cur_labels:
        raise InputError(f"{thr_loc.uri}: its labels differ from those of the current model {model.uri}")
    labels: list[str] = stats["labels"]
    require_complete(run.prepared, "prepare")
    ds = read_parquet(run.prepared_split("test").path, filesystem=run.fs)
    scored = score_dataset(
        ds.select_columns(["id", "text", "labels"]),
        model.address,
        cfg.storage,
        settings=cfg.evaluate,
    ).materialize()
    # y over the challenger's labels (zero-shot test labels: no column); scores in the current model's label
    # order, read block by block and moved into the challenger's.
    y, s_cur = scored_blocks(scored, labels, ignore_unknown=True)
    src, dst, unknown = column_map(cur_labels, labels)
    pred_cur = decisions(s_cur, fitted.thresholds, fitted.at_least_one)
    pred = _moved_decisions(pred_cur, src, dst, (len(cur_labels), len(labels)))
    scores = s_cur.map(functools.partial(_moved_scores, src=src, dst=dst, width=len(labels)), len(labels))
    ev = compute_metrics(
        y,
        pred,
        scores,
        labels,
        np.array([stats["label_counts"][lab]["train"] for lab in labels]),
        head_min=stats["groups"]["head_min"],
        tail_max=stats["groups"]["tail_max"],
    )
    return {
        "overall": ev["overall"],
        "groups": ev["groups"],
        "documents_scored": y.shape[0],
        "labels_unknown_to_current": unknown,
    }


def _markdown(doc: dict[str, Any]) -> str:
    cur, new = doc["current"], doc["challenger"]
    lines = [
        f"# Retraining: {new['run']} vs {cur['run'] if cur else '(no current model)'}",
        "",
        f"**Decision: {doc['decision']}.** {doc['reason']}",
        "",
        f"Test split of {new['run']} ({doc['test_documents']} documents); tolerance {doc['tolerance']:g}; "
        f"{doc['created']}.",
        "",
        "| metric | challenger | current | delta | passed |",
        "| --- | --- | --- | --- | --- |",
    ]
    checks = {c["metric"]: c for c in doc["checks"]}
    for name, value in new["metrics"].items():
        c = checks.get(name)
        old = cur["metrics"].get(name) if cur else None
        delta = doc["deltas"].get(name)
        lines.append(
            f"| {name} | {_f(value)} | {_f(old)} | {'n/a' if delta is None else f'{delta:+.4f}'} | "
            f"{('yes' if c['passed'] else 'NO') if c else ''} |"
        )
    if cur and cur.get("labels_unknown_to_current"):
        lines += [
            "",
            f"Labels the current model does not know: {', '.join(cur['labels_unknown_to_current'])}",
        ]
    return "\n".join(lines) + "\n"


def _reusable(prior: dict[str, Any] | None, pointer: dict[str, Any] | None, evaluate_hash: str) -> bool:
    """An earlier comparison of this same challenger (same evaluate manifest) with this same current model."""
    if (
        not prior
        or prior.get("schema_version") != SCHEMA_VERSION
        or prior.get("evaluate_hash") != evaluate_hash
    ):
        return False
    cur = prior.get("current")
    if pointer is None or cur is None:
        return pointer is None and cur is None
    return all(cur.get(k) == pointer.get(k) for k in ("run", "model", "thresholds", "promoted_at"))


def run_retrain(cfg: Config) -> dict[str, Any]:
    """One scheduled retraining; returns {"decision": "noop" | "promoted" | "rejected", "reason", ...}."""
    t0 = time.perf_counter()
    check_gate_metrics(cfg.retrain.metrics)
    project = RunLayout.of(cfg)
    pointer_loc = project.pointer
    identity = source_identity(cfg)
    data_hash = digest(identity)
    pointer = read_pointer(pointer_loc)
    if pointer is not None and pointer.get("inputs_hash") == data_hash:
        log.info(
            "retrain: no new or changed shards in %s since %s was promoted (%s): nothing to do",
            cfg.data.source,
            pointer["run"],
            pointer.get("promoted_at"),
        )
        return {"decision": "noop", "reason": "no new or changed shards", "current": pointer["run"]}

    ccfg = challenger_config(cfg, expected_hash(cfg, identity))
    run = RunLayout.of(ccfg)
    log.info(
        "retrain: %s; challenger run %s (current: %s)",
        "new or changed shards" if pointer else "no promoted model yet",
        run.uri,
        pointer["run"] if pointer else "none",
    )
    stages = run_stages(ccfg)

    stats = read_json(run.label_stats)
    metrics_doc = read_json(run.metrics)
    evaluate_hash = (read_manifest(run, "evaluate") or {}).get("hash")
    trained_on = (read_manifest(run, "prepare") or {}).get("inputs_hash", data_hash)
    names = list(cfg.retrain.metrics)

    # The gate's metrics first, then the rest of the headline scores for the record.
    shown_names = names + [k for k, _ in HEADLINE if k in GATE_METRICS and k not in names]
    new_metrics = {n: metric_value(metrics_doc, n) for n in shown_names}

    prior_loc = run.join(COMPARISON_FILE)
    prior = read_json(prior_loc) if prior_loc.exists() else None
    current_doc: dict[str, Any] | None = None
    if pointer is not None:
        current_doc = {
            k: pointer.get(k) for k in ("run", "model", "thresholds", "promoted_at", "inputs_hash")
        }
        if _reusable(prior, pointer, evaluate_hash) and set(shown_names) <= set(prior["current"]["metrics"]):
            log.info("retrain: %s was already scored on this test split; reusing its scores", pointer["run"])
            scored = prior["current"]
        else:
            scored = score_current(cfg, project, pointer, run, stats)
            scored = {**scored, "metrics": {n: metric_value(scored, n) for n in shown_names}}
        current_doc["metrics"] = {n: scored["metrics"].get(n) for n in shown_names}
        current_doc["documents_scored"] = scored.get("documents_scored")
        current_doc["labels_unknown_to_current"] = scored.get("labels_unknown_to_current", [])
    promote, reason, checks = decide(
        new_metrics, current_doc["metrics"] if current_doc else None, names, cfg.retrain.tolerance
    )
    if promote and pointer_loc.exists() and read_pointer(pointer_loc) != pointer:
        promote, reason = False, "current.json changed while this challenger was trained; run retrain again"
    old_metrics = current_doc["metrics"] if current_doc else {}
    doc = {
        "schema_version": SCHEMA_VERSION,
        "created": _now(),
        "decision": "promoted" if promote else "rejected",
        "reason": reason,
        "metrics_compared": names,
        "tolerance": cfg.retrain.tolerance,
        "checks": checks,
        "deltas": {
            n: (v - old_metrics[n] if v is not None and old_metrics.get(n) is not None else None)
            for n, v in new_metrics.items()
        },
        "inputs_hash": trained_on,
        "evaluate_hash": evaluate_hash,
        "test_documents": stats["documents"]["test"],
        "challenger": {
            "run": ccfg.run.name,
            "run_uri": run.uri,
            "model": run.model.address,
            "thresholds": run.thresholds.address,
            "metrics": new_metrics,
        },
        "current": current_doc,
    }
    write_bytes(run.join(COMPARISON_MD), _markdown(doc).encode())
    write_json(prior_loc, doc)
    if promote:
        previous = (
            {k: pointer.get(k) for k in ("run", "model", "thresholds", "inputs_hash", "promoted_at")}
            if pointer
            else None
        )
        write_json(
            pointer_loc,
            {
                "schema_version": SCHEMA_VERSION,
                "run": ccfg.run.name,
                "run_uri": run.uri,
                "model": doc["challenger"]["model"],
                "thresholds": doc["challenger"]["thresholds"],
                "metrics": metrics_doc["overall"],
                "inputs_hash": trained_on,
                "promoted_at": _now(),
                "comparison": prior_loc.address,
                "previous": previous,
            },
        )
    log.info(
        "retrain: %s %s in %.0fs: %s (comparison: %s)",
        "PROMOTED" if promote else "NOT promoted:",
        ccfg.run.name,
        time.perf_counter() - t0,
        reason,
        prior_loc.uri,
    )
    return {
        "decision": doc["decision"],
        "reason": reason,
        "challenger": ccfg.run.name,
        "comparison": doc,
        "stages": stages,
    }
