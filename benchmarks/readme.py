"""`benchmarks/README.md`, generated from the committed results (`benchmarks/results/*.json`).

Every figure in the page's tables is read from a results file; the fixed sentences saying what a benchmark
measures are written here, and what a file's rows show, where someone wrote it, beside the file
(`benchmarks/results/<name>.md`, figures quoted from it). `python -m benchmarks.readme` writes the page,
`--check` exits 1 when the committed page differs from what would be generated (a test runs it).
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PAGE = ROOT / "benchmarks" / "README.md"
J = dict[str, Any]
GROUPS, SPLITS = ("head", "medium", "tail"), ("train", "validation", "test")

#: benchmark module -> (section title, what it measures and how to read it), in page order.
WHAT: dict[str, tuple[str, str]] = {
    "longtail": (
        "Wide, long-tailed label spaces against the peers",
        "Our models through the train and evaluate stages (thresholds fitted on validation, measured on "
        "test) beside LibMultiLabel's linear one-vs-rest (at its default decision, and with the per-label "
        "offsets its `thresholding` method learns by cross-validation), napkinXC's label tree and PECOS's "
        "XR-Linear on TF-IDF of the same prepared split, all measured with the same metrics (training-label "
        "vocabulary, zero_division=0, tail: at most 8 training documents). Each peer decides by its own "
        "rule; PECOS, a ranker, returns its top k labels per document (k = 100, or the row's `top_k`) from "
        "a beam search of width 10 over its label tree (or the row's `beam_size`), decided at score >= 0.5 "
        "as napkinXC's. A `<peer>+thresholds` row decides the same peer's test "
        "scores as our rows decide: by per-label thresholds fitted on its validation scores (`-prior`, "
        "`-best`, `-blend`: with that fallback); its training figures are the peer's. Issue #23's targets "
        "compare with the peers' own rules; a second table, with these rows too. predicted : true = "
        "predicted positives / true positives; peak RSS sums this process and the Ray processes it started.",
    ),
    "label_subset": (
        "Tuning the lexical kind on a label subset",
        "A long-tail row's lexical model trained on a random subset of the labels with the full model's "
        "per-label loss terms, penalty and optimizer (`benchmarks/label_subset.py`: each of that kind's "
        "weights belongs to one label, so the subset trains as in the full model at a fraction of the "
        "cost); test figures over the subset's labels, thresholds fitted on validation as the evaluate "
        "stage (`thresholds-prior`: the prior fallback). Full model: the same row trained on every label "
        "by `benchmarks.longtail`, read on the same labels from its per-label report, where that run was "
        "kept: how well the subset estimates it.",
    ),
    "demo_quality": (
        "Quality of a shipped config",
        "A config of `configs/` (the demo's, `make run`, unless the file names another) trained once per "
        "loss through prepare, train and evaluate, measured on its test set with per-label thresholds fitted "
        "on validation ('at 0.5': one global cut-off instead).",
    ),
    "scale": (
        "Wide label spaces",
        "Synthetic wide label spaces through prepare, train and evaluate, one process per shape: seconds, "
        "the driver's peak RSS and its whole process tree's (Ray's workers included) per stage, then test "
        "quality.",
    ),
    "split_scaling": (
        "Splitting",
        "The iterative stratifier (`pipeline.data.split`) against scikit-multilearn: seconds, peak RSS and "
        "split quality (`proportion_error`: per-label proportion error, share of (label, split) pairs left "
        "empty, largest split-size error; lower is better).",
    ),
    "quality": (
        "Real corpora, frozen encoder",
        "Reuters-21578 and GoEmotions embedded once by the frozen all-MiniLM-L6-v2, a head trained per loss, "
        "per-label thresholds fitted on validation, measured on test; `tuned` is a Tune search's best trial; "
        "LibMultiLabel's linear one-vs-rest on TF-IDF is the peer on the same splits. Test-oracle macro-F1: "
        "each label's best F1 over every threshold on the test scores (no threshold rule does better).",
    ),
    "finetune": (
        "Real corpora, fine-tuned encoder",
        "The whole pipeline with all-MiniLM-L6-v2 fine-tuned end to end, on the frozen-encoder benchmark's "
        "splits. Best validation epoch: the highest validation macro-F1 after thresholds (the one "
        "evaluated).",
    ),
    "throughput": (
        "What Ray costs",
        "The same work through Ray and in a single process, each side in a process of its own; ratio = Ray / "
        "single process (1.0: no cost). Training and scoring ran several times per side, alternating; a "
        "side's figure is its median run, a pair ratio divides a Ray run by the baseline run after it.",
    ),
    "gpu_efficiency": (
        "Training on a GPU",
        "An all-MiniLM-L6-v2-shaped encoder (randomly initialised) trained in bf16: a bare Hugging Face loop "
        "(random token ids already on the GPU) swept over sequence length and batch size, then the train "
        "stage's Ray Train loop (Ray Data ingest, per-epoch validation and checkpoints not counted in its "
        "samples/s) at the bare loop's saturating batch, between two bare runs; ratio = Ray / the mean of "
        "the two. Share of peak = 6 x parameters x tokens/s over the chip's dense bf16 datasheet figure.",
    ),
    "eval_memory": (
        "The evaluate stage's driver memory",
        "A longtail row's model evaluated again in a fresh process: the driver's peak resident memory from "
        "/proc, whole (RSS) and split into its own (anonymous), the object store's pages it read (the "
        "scored splits: shared memory owned by the store) and mapped libraries; baseline: the same process "
        "with Ray started, before the stage. Code: the commit of the `pipeline` package measured. The "
        "figures must not differ between code versions (the evaluation is exact).",
    ),
    "label_stats": (
        "Label statistics at scale",
        "Two Ray Data passes over the same generated Parquet shards: the profile stage's (read text and "
        "labels, clean labels, check rows, per-block label counts, documents per label count and text "
        "lengths merged once; files grouped into about 1M rows per task) and the prepare stage's "
        "statistics pass (the same row work, one task per file, plus each row's id read and its row and "
        "duplicate-group keys hashed), against one polars query in one process (same row "
        "semantics and counts, no keys), and on a local ray.cluster_utils.Cluster of one 1-CPU node "
        "against two. Each side: one untimed pass, then the median of the timed passes; ratio = polars "
        "seconds / Ray seconds (Ray against polars) and one node's seconds / two nodes' (scaling). polars "
        "with keys: the same query also hashing each row's id and normalised text, the row work of the "
        "prepare pass.",
    ),
    "tune_throughput": (
        "Tune trials per hour",
        "Ray Tune trials per hour on the demo config: full fine-tuning trials against embeddings-mode trials "
        "(embeddings cached once, a head trained per trial).",
    ),
}
F1 = "micro-F1@micro_f1 | macro-F1@macro_f1 | macro AP@macro_ap"
F1G = "head F1@head_f1 | medium F1@medium_f1 | tail F1@tail_f1"
SQ = (
    "mean abs error@quality/mean_abs_error~5 | empty (desired > 0)@quality/zero_desired_gt0~5"
    " | empty (desired >= 1)@quality/zero_desired_ge1~5 | size abs error@quality/size_abs_error~5"
)
RSS = "driver peak RSS (MB)@peak_rss_driver_mb~0 | process tree peak RSS (MB)@peak_rss_tree_mb~0"
FT = "best validation epoch@_best | samples/s: first epoch / later@_rate | training s@train_seconds~0"
#: Table layouts: 'header@path~digits | ...' (path: keys joined by '/'; digits: 3 unless given).
SPECS = {
    "demo": "loss@loss | " + F1.replace("@", "@test_tuned_thresholds/") + " | macro-F1 at 0.5@test_at_0.5/"
    "macro_f1 | head / medium / tail macro-F1@_groups | labels with F1 > 0 (head / medium / tail)@_labels"
    " | epochs@epochs_run | train s@seconds/train~0 | wall s@seconds/total~0",
    "shapes": "shape@_name | config@config | documents (train / validation / test)@_docs | labels per "
    "document (train)@cardinality_train~2 | mean label rate@_rate~4 | command@_cmd",
    "stages": f"shape@_name | stage@stage | loss@loss | seconds@seconds~1 | {RSS}",
    "scale_quality": "shape@_name | loss@_loss | macro AP@macro_ap~4 | micro AUPRC@micro_auprc~4 | predicted "
    ": true labels@predicted_to_true~2 | macro-F1@macro_f1 | micro-F1@micro_f1",
    "small": "shape@_name | labels per document@_c | label index width@_w | stage@stage | loss@loss | "
    f"seconds@seconds~1 | {RSS}",
    "split": f"rows@rows | labels@labels | labels per document@labels_per_doc | seconds@seconds | peak RSS "
    f"(MB)@peak_rss_mb~1 | split alloc peak (MB)@split_alloc_peak_mb~1 | {SQ} | scikit-multilearn seconds@"
    "_sk/seconds | scikit-multilearn peak RSS (MB)@_sk/peak_rss_mb~1",
    "split_sides": f"labels@_name | rows x labels@_size | method@_m | {SQ} | seconds@seconds | peak RSS "
    "(MB)@peak_rss_mb~1",
    "setup": "documents (train / validation / test)@_docs | labels@data/num_labels | max_length@config/"
    "max_length | head epochs@config/head/epochs | head batch@config/head/batch_size | head lr@config/head/lr"
    " | Tune trials@config/tune/num_samples | groups: head >= / tail <= training documents@_groups",
    "rows": "test-oracle macro-F1@oracle_macro_f1 | macro-F1 at 0.5@test_at_0.5/macro_f1 | labels with F1 >"
    " 0@labels_with_f1_gt_0/overall",
    "targets": "dataset@dataset | target@target | value@_value | row@row | met@met",
    "longtail": "row@row | seed@seed | device@device | micro-F1@micro_f1 | macro-F1@macro_f1 | tail F1@"
    "tail_f1 | macro AP@macro_ap | P at 1@p_at_1 | P at 5@p_at_5 | nDCG at 5@ndcg_at_5 | PSP at 5@psp_at_5 | "
    "predicted : true@predicted_to_true~2 | train s@train_seconds~0 | peak RSS (MB)@peak_rss_mb~0 | "
    "evaluate driver peak (MB)@evaluate_peak_rss_driver_mb~0",
    "finetune": f"loss@loss | {F1} | {F1G} | macro-F1 at 0.5@test_at_0.5/macro_f1 | labels with F1 > 0@"
    f"labels_with_f1_gt_0 | {FT} | evaluate s@evaluate_seconds~0",
    "combined": f"row@_row | {F1} | {F1G} | {FT}",
    "ops": "operator@operator | scheduling s@task_scheduling_time_s | function body s@function_body_time_s |"
    " task completion s@task_completion_time_s",
    "one_core": "read_parquet@rows_per_s_one_core/read_parquet~0 | normalise@rows_per_s_one_core/normalise~0"
    " | block_partial@rows_per_s_one_core/block_partial~0 | all three@all_three_rows_per_s_one_core~0 | "
    "bound on two cores@ideal_ray_rows_per_s_two_cores~0",
    "train": "side@_side | steady samples/s@steady_samples_per_s~1 | samples/s per epoch@_epochs | input "
    "wait per epoch@_wait | start-up s@startup_s~2 | end-to-end samples/s@end_to_end_samples_per_s~1 | "
    "worker niceness@_nice",
    "score": "side@_side | steady docs/s@steady_docs_per_s~1 | two-point docs/s@two_point_docs_per_s~1 | "
    "start-up s@startup_s~2 | end-to-end docs/s@end_to_end_docs_per_s~1 | model's share of actor time@_udf",
    "workers": "workers@_n | steady samples/s@steady_samples_per_s~1 | samples/s per epoch@_epochs | start-up"
    " s@startup_s~2 | process tree peak RSS (MiB)@peak_memory/process_tree_rss_peak_sum_mib~1",
    "predicted": "nodes@_n | ring all-reduce model samples/s@ring_allreduce_model_samples_per_s~1 | "
    "constant efficiency samples/s@constant_efficiency_samples_per_s~1",
    "memory": "phase@_side | driver peak RSS@peak_memory/driver_peak_mib~1 | process tree peak RSS@"
    "peak_memory/process_tree_rss_peak_sum_mib~1 | largest Ray worker@peak_memory/"
    "ray_worker_rss_peak_max_mib~1",
    "gpu_sweep": "tokens@seq | batch@batch | samples/s@samples_per_s~0 | tokens/s@tokens_per_s~0 | TFLOP/s@"
    "tflops~1 | share of peak@share_of_peak | share of peak, embeddings left out@"
    "share_of_peak_without_embeddings",
    "gpu_pairs": "tokens@seq | batch@batch | documents@docs | bare before@bare_before~0 | Ray@ray/"
    "samples_per_s~0 | bare after@bare_after~0 | ratio@ratio | ratio range@_range | Ray samples/s per "
    "epoch@_epochs | input wait per epoch@_wait | Ray share of peak@ray_point/share_of_peak",
    "label_subset": "dataset@dataset | row@row | --set@_set | labels@_labels | decision@_decision | train "
    "s@train_seconds~0 | macro AP@_fig/macro_ap | micro-F1@_fig/micro_f1 | macro-F1@_fig/macro_f1 | "
    "tail-F1@_fig/tail_f1 | full model: macro AP@_full/macro_ap | full: macro-F1@_full/macro_f1 | full: "
    "tail-F1@_full/tail_f1",
    "eval_memory": "dataset@dataset | row@row | code@_code | validation / test documents@_docs | "
    "labels@labels | evaluate s@evaluate_seconds~1 | driver RSS peak (MB)@peak_vmrss_mb | own (MB)@"
    "peak_rssanon_mb | object store pages (MB)@peak_rssshmem_mb | libraries (MB)@peak_rssfile_mb | "
    "baseline RSS (MB)@baseline_vmrss_mb | micro-F1@micro_f1 | macro AP@macro_ap | P at 1@p_at_1",
    "tune": "mode@_mode | trials@trials | epochs per trial@epochs_per_trial | seconds@seconds~1 | trials per"
    " hour@trials_per_hour~1 | trials per hour after the cache@trials_per_hour_after_cache~1 | best "
    "validation macro-F1@best_objective/val_tuned_macro_f1",
}
#: throughput part -> "Ray side, baseline side, rate, what it is".
PARTS = {
    "stats": "ray_data polars rows_per_s statistics, {rows:,} rows x {labels:,} labels in {shards} shards, "
    "rows/s",
    "train": "ray_train bare_pytorch steady_samples_per_s training, {train_rows:,} rows, batch {batch_size}, "
    "samples/s",
    "score": "ray_data bare_loop steady_docs_per_s batch scoring, {docs:,} documents, docs/s",
}
SIDE = {"ray_data": "Ray Data", "polars": "polars", "ray_train": "Ray Train"}


def fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    return f"{x:,.{digits}f}" if isinstance(x, float) else str(x)


def span(xs: Iterable[float], digits: int = 0) -> str:
    xs = list(xs)
    low, high = (fmt(min(xs), digits), fmt(max(xs), digits)) if xs else ("n/a", "n/a")
    return low if low == high else f"{low}-{high}"


def listed(xs: Iterable[Any], digits: int = 3) -> str:
    return ", ".join(fmt(x, digits) for x in xs) or "n/a"


def get(d: Any, path: str) -> Any:
    """The value at `path` (keys joined by '/'); '' where a key is absent (a null stays None: 'n/a')."""
    for key in path.split("/"):
        d = d.get(key, "") if isinstance(d, dict) else ""
    return d


def table(head: list[str], rows: Iterable[list[Any]]) -> list[str]:
    """A Markdown table; columns of figures are right-aligned."""
    cells = [[fmt(c) for c in row] for row in rows]
    right = [all(re.match(r"^\**[-\d.,%/ ]*\**$|^n/a$", r[i]) for r in cells) for i in range(len(head))]
    out = ["| " + " | ".join(head) + " |", "|" + "|".join(" ---: " if r else " --- " for r in right) + "|"]
    return [*out, *("| " + " | ".join(row) + " |" for row in cells), ""]


def grid(spec: str, items: Iterable[J]) -> list[str]:
    """A table laid out by `spec` (see SPECS), one row per item."""
    cols = [
        (h.strip(), *p.strip().partition("~")[::2]) for h, _, p in (c.partition("@") for c in spec.split("|"))
    ]
    rows = [[fmt(get(it, p), int(n or 3)) for _, p, n in cols] for it in items]
    return table([h for h, _, _ in cols], rows)


def command(cmd: str) -> str:
    """The recorded command, with paths local to the machine that ran it shown as `<path>`."""
    return " ".join("<path>" if w.startswith(("/", ".")) else w for w in cmd.split())


def module(d: J) -> str:
    words = [w for w in str(d.get("command", "")).split() if w.startswith("benchmarks.")]
    return words[0].split(".", 1)[1] if words else ""


def provenance(d: J) -> str:
    runs = [d, *d.get("runs", []), *d.get("shapes", [])]
    src = next((r for r in runs if "machine" in r), d)
    sha = next((str(r[k]) for r in runs for k in ("git_sha", "git", "commit") if r.get(k)), "not recorded")
    dates = sorted({str(r["started"]) for r in runs if "started" in r})
    m = src["machine"] if isinstance(src.get("machine"), dict) else {}
    machine = (m.get("summary") or f"{m.get('cpus')} CPUs") if m else src.get("machine", "not recorded")
    platform = src.get("platform") or m.get("platform")
    vers = ", ".join(f"{k} {v}" for k, v in (src.get("versions") or {"python": m.get("python")}).items() if v)
    when = " to ".join(dict.fromkeys([dates[0], dates[-1]])) if dates else "not recorded"
    line = f"Recorded in the file: git SHA {sha}; started {when}; machine {machine}"
    return line + (f" ({platform})" if platform else "") + f"; versions: {vers or 'not recorded'}."


def overrides(d: J) -> str:
    """The effective `--set` values (later ones win, as in the run)."""
    return ", ".join(f"`{k}={v}`" for k, v in dict(o.split("=", 1) for o in d.get("overrides", [])).items())


def demo_quality(d: J) -> list[str]:
    for r in d["results"]:
        n, t = r["labels_with_f1_gt_0"], r["test_tuned_thresholds"]
        r["_groups"] = " / ".join(fmt(r["test_groups_macro_f1"][k]) for k in GROUPS)
        r["_labels"] = f"{n['overall']} / {t['n_labels']} ({' / '.join(str(n[k]) for k in GROUPS)})"
    docs = d["results"][0]["test_tuned_thresholds"]["n_docs"]
    return [f"Config `{d['config']}`; {docs:,} test documents.", "", *grid(SPECS["demo"], d["results"])]


def scale(d: J) -> list[str]:
    stages, quality, small = [], [], []
    for s in d["shapes"]:
        docs = s["documents"]
        s["_name"] = f"{sum(docs.values()):,} x {s['num_labels']:,}"
        s["_docs"] = " / ".join(f"{docs[k]:,}" for k in SPLITS)
        s["_rate"], s["_cmd"] = s["cardinality_train"] / s["num_labels"], f"`{command(s['command'])}`"
        stages += [{**st, "_name": "" if i else s["_name"]} for i, st in enumerate(s["stages"])]
        quality += [{**q, "_name": s["_name"], "_loss": loss} for loss, q in s["quality"].items()]
    for s in d.get("reduced_shapes_smoke", {}).get("shapes", []):
        first = {"_name": f"{s['shape']} ({s['num_labels']:,} labels)", "_w": s["label_index_width"]}
        first["_c"] = fmt(s["cardinality_train"], 2)
        small += [{**st, **(dict.fromkeys(first, "") if i else first)} for i, st in enumerate(s["stages"])]
    out = grid(SPECS["shapes"], d["shapes"]) + grid(SPECS["stages"], stages)
    out += ["Test quality (a model that learned nothing has a macro AP near the mean label rate):", ""]
    out += grid(SPECS["scale_quality"], quality)
    if small:
        out += ["Reduced shapes (the test run recorded in `reduced_shapes_smoke`; its `note` says how):", ""]
        out += grid(SPECS["small"], small)
    return out


def split_scaling(d: J) -> list[str]:
    dense = [{**d["dense"], "rows": f"{d['dense']['rows']:,} (dense)"}] if "dense" in d else []
    rows = [*d["results"], *dense]
    for r in rows:
        sk = r.get("skmultilearn") or {"skipped": "not run"}
        r["_sk"] = {"seconds": sk.get("seconds", sk.get("skipped")), **sk}
    sides = [
        {
            **x,
            "quality": x.get("quality", x),
            "_name": n,
            "_size": f"{q['rows']:,} x {q['labels']:,}",
            "_m": m,
        }
        for n, q in d.get("quality", {}).items()
        for m, x in ((m, q[m]) for m in ("ours", "skmultilearn"))
    ]
    ratios = " / ".join(f"{k} {v}" for k, v in d["ratios"].items())
    out = [f"Ratios {ratios}.", "", *grid(SPECS["split"], rows), "Split quality, side by side:", ""]
    return out + grid(SPECS["split_sides"], sides)


def quality(d: J) -> list[str]:
    out = []
    for name, ds in d["datasets"].items():
        g, docs = ds["config"]["groups"], ds["data"]["documents"]
        ds["_docs"] = " / ".join(f"{docs[k]:,}" for k in SPLITS)
        ds["_groups"] = f"{g['head_min']:,} / {g['tail_max']:,}"
        groups = " | ".join(f"{k} F1 ({g['sizes'][k]} labels)@{k}_f1" for k in GROUPS)
        rows = [{**r, "_row": row} for row, r in ds["rows"].items()]
        out += [f"### {name}", "", *grid(SPECS["setup"], [ds])]
        out += grid(f"row@_row | {F1} | {groups} | {SPECS['rows']}", rows)
        if "tuned" in ds["rows"]:
            t = ds["rows"]["tuned"]
            obj, lr = fmt(t["tune"]["objective"]["val_tuned_macro_f1"]), fmt(t["tune"]["head_lr"], 4)
            out += [f"`tuned` is {t['loss']} (head_lr {lr}), validation objective {obj}.", ""]
    for t in d.get("targets", []):
        v = t["value"]
        t["_value"] = " vs ".join(f"{k} {fmt(x)}" for k, x in v.items()) if isinstance(v, dict) else fmt(v)
    return [*out, "Targets:", "", *grid(SPECS["targets"], d.get("targets", []))]


PEER_PREFIXES = ("libmultilabel-", "napkinxc-", "pecos-")
#: Issue #23's CPU targets per dataset: (figure, rule, reference). Rules: lml / peer: at or above the best
#: LibMultiLabel / peer row, plus the reference; gt_lml: above it; at_least: >= the reference; within:
#: inside the reference range; budget: training + preparation + evaluation seconds <= the reference.
LONGTAIL_TARGETS: dict[str, list[tuple[str, str, Any]]] = {
    "eurlex57k": [
        ("micro_f1", "lml", 0.0),
        ("macro_f1", "lml", 0.03),
        ("tail_f1", "gt_lml", None),
        ("p_at_1", "peer", 0.0),
        ("psp_at_5", "peer", 0.0),
        ("seconds", "budget", 3600),
    ],
    "reuters21578": [("macro_f1", "lml", 0.03), ("tail_f1", "gt_lml", None)],
    "goemotions": [("macro_f1", "lml", 0.03), ("tail_f1", "gt_lml", None)],
    "synthetic-7900": [("macro_ap", "at_least", 0.5), ("predicted_to_true", "within", (0.8, 1.25))],
}
#: Issue #23's GPU targets: fixed figures, for files whose own rows all ran on a GPU.
GPU_LONGTAIL_TARGETS: dict[str, list[tuple[str, str, Any]]] = {
    "eurlex57k": [
        ("micro_f1", "at_least", 0.76),
        ("macro_f1", "at_least", 0.30),
        ("p_at_1", "at_least", 0.93),
    ],
    "reuters21578": [("micro_f1", "at_least", 0.91), ("macro_f1", "at_least", 0.68)],
    "goemotions": [("macro_f1", "at_least", 0.55)],
}


def longtail_targets(name: str, rows: list[J], prepare_seconds: float | None) -> list[str]:
    """The own row (its mean over seeds) meeting most of the dataset's targets, target by target, against
    the peers decided by their own rules (issue #23's targets); where there are `<peer>+thresholds` rows,
    again against every peer row, those included."""
    own_rule = [r for r in rows if "+" not in r["row"] or not r["row"].startswith(PEER_PREFIXES)]
    out = _longtail_targets(name, own_rule, prepare_seconds, "")
    relative = any(rule in ("lml", "gt_lml", "peer") for _, rule, _ in LONGTAIL_TARGETS.get(name, []))
    if len(own_rule) < len(rows) and out and relative:
        out += _longtail_targets(name, rows, prepare_seconds, " against the peers with our thresholds too")
    return out


def _longtail_targets(name: str, rows: list[J], prepare_seconds: float | None, against: str) -> list[str]:
    peers = [r for r in rows if r["row"].startswith(PEER_PREFIXES)]
    own: dict[str, list[J]] = {}
    for r in rows:
        if not r["row"].startswith(PEER_PREFIXES):
            own.setdefault(r["row"], []).append(r)
    gpu = bool(own) and all(r.get("device") == "gpu" for rs in own.values() for r in rs)
    rules = (GPU_LONGTAIL_TARGETS if gpu else LONGTAIL_TARGETS).get(name)
    if not rules or not own or not (gpu or peers):  # CPU targets are relative to the peers' rows
        return []

    def best(key: str, prefix: tuple[str, ...]) -> float | None:
        vals = [r[key] for r in peers if r["row"].startswith(prefix) and r.get(key) is not None]
        return max(vals) if vals else None

    def check(rs: list[J], key: str, rule: str, ref: Any) -> tuple[float | None, str, bool | None]:
        if rule == "budget":
            parts = [[r.get("train_seconds"), prepare_seconds, r.get("evaluate_seconds")] for r in rs]
            if any(x is None for p in parts for x in p):
                return None, f"<= {ref:,} s", None
            value = max(sum(p) for p in parts)
            return value, f"<= {ref:,} s", value <= ref
        vals = [r.get(key) for r in rs]
        if any(v is None for v in vals):
            return None, "", None
        value = sum(vals) / len(vals)
        if rule in ("lml", "gt_lml", "peer"):
            base = best(key, ("libmultilabel-",) if rule != "peer" else PEER_PREFIXES)
            if base is None:
                return value, "no peer row", None
            if rule == "gt_lml":
                return value, f"> {base:.3f}", value > base
            return value, f">= {base + ref:.3f}", value >= base + ref - 1e-12
        if rule == "at_least":
            return value, f">= {ref}", value >= ref
        return value, f"{ref[0]} - {ref[1]}", ref[0] <= value <= ref[1]

    scored = []
    for row, rs in own.items():
        checks = [(key, *check(rs, key, rule, ref)) for key, rule, ref in rules]
        scored.append((sum(bool(c[3]) for c in checks), row, len(rs), checks))
    met, row, seeds, checks = max(scored, key=lambda x: x[0])  # ties: the first row of the file
    if all(c[3] is None for c in checks):  # no peer rows in this file (e.g. the GPU rows)
        return []
    cells = [
        [key, target, fmt(value, 0 if key == "seconds" else 3), {True: "yes", False: "no"}.get(ok, "n/a")]
        for key, value, target, ok in checks
    ]
    return [
        f"{'GPU targets' if gpu else 'Targets'} (issue #23){against}: {row} meets {met} of {len(checks)} "
        f"(mean of {seeds} seed(s); seconds: its slowest seed's training + preparation + evaluation):",
        "",
        *table(["figure", "target", row, "met"], cells),
    ]


def longtail(d: J) -> list[str]:
    out = []
    for name, ds in d["datasets"].items():
        docs, g = ds["documents"], ds["groups"]
        sizes = ", ".join(f"{k} {g['sizes'][k]:,}" for k in GROUPS if k in g.get("sizes", {}))
        out += [
            f"### {name}",
            "",
            f"Documents (train / validation / test) {' / '.join(f'{docs[k]:,}' for k in SPLITS)}; "
            f"{ds['num_labels']:,} labels; groups by training documents (head >= {g['head_min']}, tail <= "
            f"{g['tail_max']}): {sizes}; prepare {fmt(ds['prepare_seconds'], 0)} s.",
            "",
        ]
        rows = [r for r in d["rows"] if r["dataset"] == name]
        out += grid(SPECS["longtail"], rows)
        again = {
            r["row"]: f"{r['row']}: {r['model_of']}'s model, {added(r, rows)}"
            for r in rows
            if r.get("model_of")
        }
        if again:  # rows that re-evaluate another row's model with other evaluate settings
            same = "; ".join(again.values())
            out += [f"Same model, other evaluate settings (train s: the model's): {same}.", ""]
        tuned = [
            f"{r['row']} seed {r['seed']}: {searched(r['best_params'])}" for r in rows if r.get("best_params")
        ]
        if tuned:
            out += [f"Tuned rows (train s include the search), best trial: {'; '.join(tuned)}.", ""]
        out += zero_shot_table(rows)
        out += db_against_bce(rows)
        out += longtail_targets(name, rows, ds.get("prepare_seconds"))
        out += other_commits(rows, d.get("git_sha"))
    skipped = d.get("skipped") or {}
    return out + ([f"Skipped: {'; '.join(f'{k}: {v}' for k, v in skipped.items())}.", ""] if skipped else [])


def other_commits(rows: list[J], file_sha: str | None) -> list[str]:
    """Rows kept from earlier invocations (--rows) carry their own commit: one entry per row and commit."""
    seeds: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        if r.get("git_sha") not in (None, file_sha):
            seeds.setdefault((r["row"], str(r["git_sha"])[:7]), []).append(str(r.get("seed")))
    if not seeds:
        return []
    each = [f"{row} (seed{'s' * (len(s) > 1)} {', '.join(s)}) {sha}" for (row, sha), s in seeds.items()]
    return [f"Rows measured at other commits than the file's: {'; '.join(each)}.", ""]


def added(row: J, rows: list[J]) -> str:
    """The evaluate settings a model_of row adds to its source row's overrides."""
    source = next((r for r in rows if r["row"] == row["model_of"] and r.get("seed") == row.get("seed")), None)
    mine = row["settings"]["overrides"]
    extra = mine[len(source["settings"]["overrides"]) :] if source else mine[-1:]
    return " ".join(extra)


#: Commit time of 237df45: before it the names' logistic map stopped far from its optimum (a near-flat map).
NAMES_MAP_FIXED = "2026-12-05T13:53"


def zero_shot_table(rows: list[J]) -> list[str]:
    """The zero-shot group (test labels never seen in training) of the own rows, scored from names or not."""
    zs = [r for r in rows if r.get("zero_shot_labels")]
    if not zs:
        return []

    def loose(r: J) -> bool:
        measured = r.get("measured")
        return bool(r.get("zero_shot_scored")) and measured is not None and str(measured) < NAMES_MAP_FIXED

    cells = [
        [
            r["row"],
            r.get("seed"),
            "yes" if r.get("zero_shot_scored") else "no",
            fmt(r.get("zero_shot_recall"), 3),
            fmt(r.get("zero_shot_p_at_5"), 3),
            fmt(r.get("zero_shot_recall_at_5"), 3) + (" *" if loose(r) else ""),
            fmt(r.get("micro_f1_with_zero_shot"), 3),
            fmt(r.get("zero_shot_predicted_pairs"), 0),
            r.get("zero_shot_threshold_from") or ("seen" if r.get("zero_shot_scored") else ""),
        ]
        for r in zs
    ]
    head = [
        "row",
        "seed",
        "scored from names",
        "recall",
        "P at 5 (unseen)",
        "recall at 5 (all)",
        "micro-F1 +zs",
        "predicted pairs",
        "threshold chosen on",
    ]
    return [
        f"Zero-shot group: {zs[0]['zero_shot_labels']:,} test labels never seen in training. Recall: their "
        "test positives predicted; P at 5: positives among the 5 top-scored unseen labels / 5 and recall at "
        "5: their share among the 5 top-scored labels of all, over the documents holding one; micro-F1 +zs: "
        "micro-F1 with their pairs counted; threshold chosen on: validation's unseen or seen named labels "
        "(rows before that choice existed: seen). Rows not scored from names never predict or rank them.",
        "",
        *table(head, cells),
        *(
            [
                "",
                "\\* measured before 237df45, whose logistic map of the names' similarity stopped far from "
                "its optimum (slope 0.13 where the optimum is about 54 on EURLEX57K): every unseen label's "
                "probability sat near the base rate, so none reached a document's top 5 of all labels.",
            ]
            if any(loose(r) for r in zs)
            else []
        ),
    ]


def searched(best: J) -> str:
    """A tuned row's best_params in one phrase: loss, its parameters, then the train settings."""
    loss = best["loss"]
    params = ", ".join(f"{k} {fmt(v)}" for k, v in (loss.get("params") or {}).items())
    train = ", ".join(f"{k} {v:.3g}" for k, v in (best.get("train") or {}).items() if v is not None)
    return f"{loss['name']}" + (f" ({params})" if params else "") + (f", {train}" if train else "")


def db_against_bce(rows: list[J]) -> list[str]:
    """Each db-<x> row beside bce-<x> over their shared seeds: mean (min - max) of macro- and tail-F1, and
    whether DB's worst seed beats BCE's best."""
    table_rows = []
    for name in dict.fromkeys(r["row"] for r in rows):
        if not name.startswith("db-") or not any(r["row"] == "bce-" + name[3:] for r in rows):
            continue
        pair = {k: {r["seed"]: r for r in rows if r["row"] == k} for k in (name, "bce-" + name[3:])}
        seeds = sorted(set(pair[name]) & set(pair["bce-" + name[3:]]))
        cells: list[Any] = [f"{name} / bce-{name[3:]}", len(seeds)]
        for key in ("macro_f1", "tail_f1"):
            db, bce = ([pair[k][x][key] for x in seeds] for k in pair)
            if None in db or None in bce:
                cells += ["n/a", "n/a", "n/a"]
                continue
            spread = [f"{sum(v) / len(v):.3f} ({min(v):.3f} - {max(v):.3f})" for v in (db, bce)]
            verdict = "yes" if min(db) > max(bce) else "no" if max(db) < min(bce) else "overlap"
            cells += [*spread, verdict]
        table_rows.append(cells)
    if not table_rows:
        return []
    head = ["DB / BCE rows", "seeds", "DB macro-F1", "BCE macro-F1", "macro: DB above", "DB tail F1"]
    return [
        "DB against BCE (mean, min - max over the shared seeds; 'yes': DB's worst seed above BCE's best, "
        "'no': below its worst):",
        "",
        *table([*head, "BCE tail F1", "tail: DB above"], table_rows),
    ]


def history(r: J) -> J:
    h = r.get("history", [])
    best = max(h, key=lambda e: e["val_tuned_macro_f1"])["epoch"] + 1 if h else "n/a"
    rate = f"{fmt(h[0]['samples_per_s'], 0)} / {span(e['samples_per_s'] for e in h[1:])}" if h else "n/a"
    return {**r, "_best": f"{best} / {r['epochs_run']}", "_rate": rate}


def finetune(d: J) -> list[str]:
    if "summary" not in d:
        out = [f"Config `{d['config']}`; overrides {overrides(d)}.", ""]
        return out + grid(SPECS["finetune"], [history(r) for r in d["rows"].values()])
    out: list[str] = []
    keys = [c.split("@")[1].strip() for c in f"{F1} | {F1G}".split("|")]
    for config, losses in d["summary"].items():
        runs = [r for r in d["runs"] if r["config"] == config]
        out += [f"### `{config}`", "", f"Overrides of the first run: {overrides(runs[0])}.", ""]
        rows = []
        for loss, s in losses.items():
            for r in runs:
                seed = dict(o.split("=", 1) for o in r["overrides"]).get("run.seed", "0 (default)")
                rows.append({**history(r["rows"][loss]), "_row": f"{loss}, seed {seed}"})
            mean = {k: f"**{fmt(s[k]['mean'])}**" for k in keys}
            rows.append({**mean, "_row": f"**{loss}, mean of {s['runs']}**"})
            rows.append(
                {**{k: f"{fmt(s[k]['min'])}-{fmt(s[k]['max'])}" for k in keys}, "_row": f"{loss}, min-max"}
            )
        out += grid(SPECS["combined"], rows)
    return out


def throughput(d: J) -> list[str]:
    z, summary, sides = d["sizes"], [], []
    for key, (r, b, rate, what) in ((k, v.split(" ", 3)) for k, v in PARTS.items() if k in d):
        p = d[key]
        t = p.get("target")
        met = "none" if t is None else f">= {t}: " + ("met" if p["target_met"] else "not met")
        ratio = p.get("ratio_ray_over_bare", p.get("ratio_ray_over_polars"))
        runs = [span(p[k]["runs"], 1) if "runs" in p[k] else "" for k in (r, b)]
        rates, pairs = [fmt(p[r][rate], 1), fmt(p[b][rate], 1)], listed(p.get("pair_ratios", []))
        summary.append([what.format_map({**z, **p[r]}), *rates, ratio, met, pairs, *runs])
        for k in (r, b):
            x = p[k]
            x["_side"] = f"{key}, {SIDE.get(k, 'bare loop')}"
            x["_epochs"] = listed(x.get("samples_per_s_per_epoch", []), 1)
            x["_wait"] = ", ".join(f"{w:.1%}" for w in x.get("input_wait_fraction_per_epoch", [])) or "n/a"
            x["_nice"] = x.get("niceness", get(x, "worker_threads/niceness") or "not recorded")
            x["_udf"] = f"{x['udf_share_of_actor_time']:.1%}" if "udf_share_of_actor_time" in x else ""
            sides.append(x)
    env = d["environment"]
    out = [
        f"Runs per side: {z['repeats']}; torch threads "
        f"{env['torch_threads_both_sides']} on both sides; {fmt(d['seconds_total'], 0)} s in all; load "
        f"average before {listed(d['load_average_before'], 2)}, after {listed(d['load_average_after'], 2)}.",
        "",
    ]
    head = ["what", "Ray (rate)", "single process (rate)", "ratio", "target", "pair ratios", "Ray runs"]
    out += table([*head, "baseline runs"], summary)
    if "stats" in d:
        s = d["stats"]
        out += ["Statistics: Ray Data's operators, then the map functions' own one-core rates (rows/s):", ""]
        out += grid(SPECS["ops"], s["ray_data"]["ray_data_operators"])
        out += grid(SPECS["one_core"], [s["attribution"]])
        out += [f"Both sides counted identical figures: {fmt(s['counts']['identical'])}.", ""]
    if "train" in d:
        out += ["Training, each side's median run (steady: the epochs after the first):", ""]
        out += grid(SPECS["train"], [d["train"]["ray_train"], d["train"]["bare_pytorch"]])
    if "score" in d:
        out += [
            "Scoring: Ray's steady rate is rows / the Scorer actor's task time; two-point is (N - b) / "
            "(T_N - T_b) from the wall times of N documents and of one batch b.",
            "",
        ]
        out += grid(SPECS["score"], [d["score"]["ray_data"], d["score"]["bare_loop"]])
        out += [f"Both sides' scores agree: {fmt(d['score']['scores_agree'])}.", ""]
    if "scale" in d:
        s, m = d["scale"], d["scale"]["model"]
        out += [
            f"Scaling on `{s['ray']}`: speedup {fmt(m['speedup_2_workers'], 2)} with 2 workers, efficiency "
            f"{fmt(m['efficiency_2_workers'], 2)}. Beyond 2 nodes the figures are a model fitted on these "
            "two points (both nodes on one machine): an upper bound to check on a real cluster.",
            "",
        ]
        w = [
            {**w, "_n": k[8:], "_epochs": listed(w["samples_per_s_per_epoch"], 1)}
            for k, w in s.items()
            if k[:8] == "workers_"
        ]
        out += grid(SPECS["workers"], w)
        out += grid(SPECS["predicted"], [{**p, "_n": n} for n, p in m["predicted"].items()])
    out += ["Peak memory (MiB; the process tree counts shared pages once per process):", ""]
    return out + grid(SPECS["memory"], sides)


def gpu_efficiency(d: J) -> list[str]:
    shape = ", ".join(f"{k} {v}" for k, v in d["shape"].items())
    out = [
        f"{d['gpu'] or d['device']}, {d['precision']}; model {shape}, {d['params']['params']:,} parameters "
        f"({d['params']['params_without_embeddings']:,} without embeddings), {d['num_labels']} labels; "
        f"{d['steps']} timed steps after {d['warmup']} per bare point; peak {d['peak_tflops']} TFLOP/s; "
        f"saturating: the smallest batch within {d['saturation']:.0%} of the best at its length.",
        "",
    ]
    if d["sweep"]:
        out += grid(SPECS["gpu_sweep"], [r for r in d["sweep"] if not r.get("oom")])
    for r in d["pairs"]:
        r["_range"] = " - ".join(fmt(x) for x in r["ratio_range"])
        r["_epochs"] = listed(r["ray"]["epochs"], 0)
        r["_wait"] = ", ".join(f"{w:.1%}" for w in r["ray"]["input_wait_fraction"])
    out += grid(SPECS["gpu_pairs"], d["pairs"])
    for r in d["pairs"]:
        met = "met" if r["ratio"] >= GPU_RAY_TARGET else "not met"
        out += [
            f"Target (issue #25): the Ray loop at least {GPU_RAY_TARGET} of the bare loop at its saturating "
            f"batch; {r['seq']} tokens, batch {fmt(r['batch'])}: {fmt(r['ratio'])}: {met}.",
            "",
        ]
    return out


def tune_throughput(d: J) -> list[str]:
    cache = fmt(get(d, "results/embeddings/embedding_cache_seconds"), 2)
    out = [f"Config: {d['config']}; prepare {d['prepare_seconds']} s; embedding cache {cache} s.", ""]
    return out + grid(SPECS["tune"], [{**r, "_mode": mode} for mode, r in d["results"].items()])


def label_subset(d: J) -> list[str]:
    items = []
    for r in d["rows"]:
        for name in [k for k in r if k.startswith("thresholds")]:
            full = r[name].get("full_model") or {}
            items.append(
                {
                    **r,
                    "_set": ", ".join(f"`{o}`" for o in r["set"]) or "none",
                    "_labels": f"{r['labels']} (draw {r['label_seed']})",
                    "_decision": name,
                    "_fig": r[name],
                    "_full": {k: full.get(k) for k in ("macro_ap", "macro_f1", "tail_f1")},
                }
            )
    return grid(SPECS["label_subset"], items)


def eval_memory(d: J) -> list[str]:
    rows = [
        {
            **r,
            "_code": str(r.get("code_sha"))[:7],
            "_docs": " / ".join(fmt(v) for v in r["documents"].values()),
        }
        for r in d["rows"]
    ]
    out = grid(SPECS["eval_memory"], rows)
    if rows:
        last = max(rows, key=lambda r: str(r.get("measured")))
        met = "met" if last["peak_vmrss_mb"] <= EVAL_MEMORY_TARGET_MB else "not met"
        out += [
            f"Target (issue #25): driver RSS peak at most {fmt(EVAL_MEMORY_TARGET_MB)} MB; the newest code "
            f"({last['_code']}) peaks at {fmt(last['peak_vmrss_mb'])} MB: {met}.",
            "",
        ]
    return out


def _rate(side: J) -> str:
    return f"{fmt(side['seconds'], 2)} ({fmt(side['rows_per_s'] / 1e6, 2)} M/s)"


def label_stats(d: J) -> list[str]:
    rows = []
    for r in d["runs"]:
        for name in ("profile", "prepare"):
            p = r[name]
            one, two = p["cluster"]["nodes_1"], p["cluster"]["nodes_2"]
            rows.append(
                [
                    fmt(r["rows"]),
                    name,
                    _rate(r["polars"]),
                    _rate(p["ray_local"]),
                    fmt(p["ratio"]),
                    fmt(one["seconds"], 2),
                    fmt(two["seconds"], 2),
                    fmt(p["cluster"]["ratio"]),
                    "yes" if p["counts_identical"] else "no",
                ]
            )
    head = [
        "rows",
        "Ray pass",
        "polars s (rows/s)",
        "Ray Data, 2 CPUs, s (rows/s)",
        "ratio Ray / polars",
        "1 node x 1 CPU s",
        "2 nodes x 1 CPU s",
        "ratio 2 nodes / 1",
        "counts equal",
    ]
    out = table(head, rows)
    largest = max(d["runs"], key=lambda r: r["rows"])
    prep = largest["prepare"]
    same = prep["polars_same_row_work"]
    out += [
        f"At {fmt(largest['rows'])} rows the prepare pass also does prepare's row work (a hash of each "
        "row's id and of its normalised text, for splits and duplicates), which the plain polars query "
        f"does not: polars doing it too takes {fmt(same['seconds'], 2)} s against Ray's "
        f"{fmt(prep['ray_local']['seconds'], 2)} s (ratio {fmt(same['ratio'])}). Both cluster nodes "
        "are processes on one 2-core machine, which they share with the driver and both nodes' Ray "
        "daemons.",
        "",
    ]
    prof = largest["profile"]
    one, local = prof["cluster"]["nodes_1"]["seconds"], prof["ray_local"]["seconds"]
    out += [
        f"The same two cores as one node of 2 CPUs (local Ray) take {fmt(local, 2)} s for the profile "
        f"pass, {fmt(one / local, 2)}x faster than one 1-CPU node (two nodes: "
        f"{fmt(prof['cluster']['ratio'], 2)}x): "
        "the difference is what a second node costs on this machine.",
        "",
    ]
    cpu = {n: prof["cluster"][f"nodes_{n}"].get("cpu_s_per_pass") for n in (1, 2)}
    if cpu[1] and cpu[2]:
        roles = sorted(set(cpu[1]) | set(cpu[2]), key=lambda r: -cpu[2].get(r, 0.0))
        cells = ", ".join(f"{r} {fmt(cpu[1].get(r, 0.0), 2)} / {fmt(cpu[2].get(r, 0.0), 2)}" for r in roles)
        rest = [sum(c for r, c in cpu[n].items() if r != "workers") for n in (1, 2)]
        out += [
            "CPU seconds of one profile pass by process, one node / two nodes (this process and every "
            f"process it started): {cells}. Besides the workers, {fmt(rest[0], 2)} / {fmt(rest[1], 2)} "
            "CPU seconds: with one 1-CPU node they can run on the core it leaves free, with two nodes "
            "there is none, so they take time from the workers.",
            "",
        ]
    for name, t in d["targets"].items():
        out.append(
            f"Target (issue #25) {name.replace('_', ' ')} at {fmt(t['rows'])} rows ({t['pass']} pass): at "
            f"least {fmt(t['target'])}; measured {fmt(t['ratio'])}: {'met' if t['met'] else 'not met'}."
        )
        out.append("")
    return out


#: Issue #25's GPU target: the Ray Train loop's samples/s over the bare loop's, at the saturating batch.
GPU_RAY_TARGET = 0.9

#: Issue #25's evaluate driver memory target at 80,000 documents x 7,900 labels.
EVAL_MEMORY_TARGET_MB = 1500


def generic(d: J) -> list[str]:
    return table(["key", "value"], [[f"`{k}`", v] for k, v in d.items() if isinstance(v, int | float | bool)])


RENDER: dict[str, Callable[[J], list[str]]] = {
    "longtail": longtail,
    "label_subset": label_subset,
    "demo_quality": demo_quality,
    "scale": scale,
    "split_scaling": split_scaling,
    "quality": quality,
    "finetune": finetune,
    "throughput": throughput,
    "tune_throughput": tune_throughput,
    "gpu_efficiency": gpu_efficiency,
    "eval_memory": eval_memory,
    "label_stats": label_stats,
}


def render(results: Path = RESULTS) -> str:
    files = {p.name: json.loads(p.read_text()) for p in sorted(results.glob("*.json"))}
    rank = {m: i for i, m in enumerate(WHAT)}
    order = sorted(files, key=lambda n: (rank.get(module(files[n]), len(rank)), n))
    cmd = {n: f"`{command(files[n].get('command', 'not recorded'))}`" for n in order}
    index = [
        [f"[`{n}`](#{n.replace('.', '')})", WHAT.get(module(files[n]), ("other",))[0], cmd[n]] for n in order
    ]
    out = [
        "# Benchmarks",
        "",
        "Generated from `benchmarks/results/*.json` by `python -m benchmarks.readme`; do not edit by hand. "
        "Every figure comes from the results file named in its section; each file records the command that "
        "made it (shown as recorded, paths local to the machine that ran it as `<path>`), its machine and "
        "versions. Re-run a benchmark with its command, commit the JSON, then regenerate this page.",
        "",
        *table(["results file", "measures", "command"], index),
    ]
    for name in order:
        d = files[name]
        title, what = WHAT.get(module(d), ("Other results", "Scalar figures of a file with no layout here."))
        out += [f"## {name}", "", f"**{title}.** {what}", "", f"Re-run: {cmd[name]}", ""]
        out += RENDER.get(module(d), generic)(d)
        note = " The file's `note` says how the run was made; read it there." if "note" in d else ""
        out += [provenance(d) + note, ""]
        findings = results / f"{Path(name).stem}.md"  # what its rows show, written by hand beside the file
        if findings.is_file():
            out += ["### What these rows show", "", findings.read_text().strip(), ""]
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write (or check) benchmarks/README.md from the results.")
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed page is out of date")
    page, check = render(), parser.parse_args(argv).check
    old, shown = (
        PAGE.read_text() if PAGE.exists() else "",
        PAGE.relative_to(ROOT) if PAGE.is_relative_to(ROOT) else PAGE,
    )
    if check and old != page:
        diff = list(
            difflib.unified_diff(old.splitlines(), page.splitlines(), "committed", "generated", lineterm="")
        )
        print(
            *diff[:30],
            f"{shown} is out of date: run python -m benchmarks.readme",
            sep="\n",
            file=sys.stderr,
        )
        return 1
    if not check:
        PAGE.write_text(page)
        print(f"wrote {shown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
