"""Tune the lexical kind on a random subset of the labels, trained as the full model trains them.

Every weight of the lexical kind belongs to one label (a column of the term matrix and a bias), AdamW's state
is per weight, the L2 penalty is per label, and a label's loss term depends only on its own logit and the
document's labels (DB's P_k sums over all of them). The full model's loss is a mean over documents x all C
labels. So a model of K labels, its loss taken as the full loss's terms of those K labels (the full B x C loss
with zero logits elsewhere, which give the K labels' weights no gradient) summed over B x C, gets the full
model's gradients for those labels: it trains them as the full run does, at about K/C of the cost (the batch
order aside). Per-label figures on the subset (macro AP, macro- and tail-F1 with per-label thresholds)
estimate the full model's; micro-F1 weighs the subset's labels only. What couples labels is refused
(`train.grad_clip`: a norm over all weights; `train.sampling`), and `train.grad_accum`, not done here.

Rows are training rows of a long-tail benchmark config (`benchmarks/configs/longtail/<dataset>.yaml`), run
on its prepared split (the long-tail driver's `base` run in `--work-dir`, prepared here when absent). With
`--full-run`, a row already measured on the whole label set by `benchmarks.longtail` in the same work folder
is read back on the same labels (its `report/per_label.csv`; a `thresholds-prior` decision: the row's
`-prior` run), to check the estimate (not with `--set`: that run was made without it).

    python -m benchmarks.label_subset --dataset eurlex57k --rows db-sparse-l2-lr4-e9-ra --labels 512 \\
        --work-dir /tmp/lt/work --out /tmp/subset.json
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common.paths import RESULTS
from benchmarks.common.provenance import git_sha, run_header, utc_now
from benchmarks.common.ray_session import benchmark_ray
from benchmarks.common.results import write_json
from benchmarks.corpora import data_root
from benchmarks.longtail import driver

DEFAULT_OUT = RESULTS / "label_subset.json"
VERSIONED = ("torch", "ray", "scikit-learn", "numpy", "scipy")
#: The figures of each decision, as the long-tail rows name them.
FIGURES = ("macro_ap", "macro_f1", "tail_f1", "micro_f1")
log = logging.getLogger("benchmarks.label_subset")
#: The checkout's commit when the run started (the rows are stamped with it, as the long-tail rows).
STARTED_AT_SHA = git_sha()


def check_exact(cfg: Any) -> None:
    """Refuse the settings under which a label subset would not train as in the full model."""
    t = cfg.train
    problems = []
    if cfg.model.kind != "lexical":
        problems.append(f"model.kind={cfg.model.kind} (only the lexical kind's weights are per label)")
    if t.grad_clip is not None:
        problems.append(f"train.grad_clip={t.grad_clip} (clips the norm over every label's weights)")
    if t.sampling != "none":
        problems.append(f"train.sampling={t.sampling} (draws documents by their labels' frequencies)")
    if t.grad_accum != 1:
        problems.append(f"train.grad_accum={t.grad_accum} (not done here)")
    if problems:
        raise ValueError("a label subset does not train as the full model with " + "; ".join(problems))


def pick_labels(num_labels: int, k: int, seed: int) -> np.ndarray:
    """`k` label columns drawn at random without replacement (sorted); all of them when k >= num_labels."""
    if k >= num_labels:
        return np.arange(num_labels)
    return np.sort(np.random.default_rng(seed).choice(num_labels, size=k, replace=False))


def subset_loss(loss_fn: Any, logits: Any, y_full: Any, cols: Any) -> Any:
    """The full model's mean loss, restricted to the terms of the labels `cols` (`logits` [B, K] are theirs;
    `y_full` [B, C] every label of the batch's documents, which the rebalanced losses' P_k sums over).
    `loss_fn` is built on all C labels with reduction "none"."""
    import torch

    b, c = y_full.shape
    full = torch.zeros(b, c, dtype=logits.dtype).index_copy(1, cols, logits)
    return loss_fn(full, y_full).index_select(1, cols).sum() / (b * c)


class Split:
    """A prepared split's lexical features ([N, max_terms] ids and weights) and labels (CSR, all labels)."""

    def __init__(self, ids: np.ndarray, weights: np.ndarray, y: Any) -> None:
        self.ids, self.weights, self.y = ids, weights, y

    @classmethod
    def encode(cls, run: Any, split: str, labels: list[str], featurizer: Any, cache: Path) -> Split:
        """Featurised once per features and split, kept in `cache` (an .npz) for later invocations."""
        from pipeline.training.train import column_batches, label_matrix

        y = label_matrix(run, split, labels)
        if cache.exists():
            with np.load(cache, allow_pickle=False) as z:
                return cls(z["ids"], z["weights"], y)
        parts, t0 = [], time.perf_counter()
        for col in column_batches(run, split, "text", 4096):
            parts.append(featurizer.encode(col.to_pylist()))
            done = sum(len(p["term_ids"]) for p in parts)
            elapsed = time.perf_counter() - t0
            log.info("%s features: %d of %d documents, %.0f s", split, done, y.shape[0], elapsed)
        ids = np.concatenate([p["term_ids"] for p in parts]).astype(np.int32)  # half the memory
        weights = np.concatenate([p["term_weights"] for p in parts])
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.stem + ".tmp.npz")
        np.savez(tmp, ids=ids, weights=weights)
        tmp.replace(cache)
        return cls(ids, weights, y)


def scores_of(model: Any, split: Split, batch: int) -> np.ndarray:
    """Sigmoid scores [N, K] of the subset model."""
    import torch

    with torch.no_grad():
        parts = [
            torch.sigmoid(
                model(
                    torch.from_numpy(split.ids[i : i + batch].astype(np.int64)),
                    torch.from_numpy(split.weights[i : i + batch]),
                )
            ).numpy()
            for i in range(0, len(split.ids), batch)
        ]
    return np.concatenate(parts)


def train_subset(
    cfg: Any, inputs: Any, loss_params: dict[str, Any], cols: np.ndarray, train: Split, validation: Split
) -> tuple[Any, dict[str, Any]]:
    """The lexical model of labels `cols`, trained with `cfg.train`'s settings as the worker does; with the
    seconds it took and the validation macro AP after each epoch."""
    import torch
    from sklearn.metrics import average_precision_score

    from pipeline.modeling.lexical import LexicalClassifier
    from pipeline.modeling.losses import build_loss
    from pipeline.training.worker import adamw, add_head_l2_grad, param_groups, warmup_then_linear

    t = cfg.train
    num_labels, n = len(inputs.labels), inputs.num_docs
    counts = np.asarray(inputs.counts, dtype=np.float64)
    torch.manual_seed(cfg.run.seed)
    model = LexicalClassifier(inputs.featurizer.num_features, len(cols))
    if cfg.model.init_bias_from_priors:
        model.init_head_bias(counts[cols] / max(n, 1))
    loss_fn = build_loss(cfg.loss.name, inputs.counts, n, dict(loss_params), reduction="none")
    optimizer = adamw(param_groups(model, t.lr, t.head_lr, t.weight_decay), lr=t.lr, eps=t.adam_eps)
    rows = len(train.ids)
    total = math.ceil(rows / t.batch_size) * t.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_then_linear(total, int(total * t.warmup_ratio))
    )
    index = torch.from_numpy(cols.astype(np.int64))
    y_val = validation.y[:, cols].toarray()
    has = y_val.sum(0) > 0
    val_ap: list[float] = []
    t0 = time.perf_counter()
    for epoch in range(t.epochs):
        order = np.random.default_rng(cfg.run.seed + epoch).permutation(rows)
        for start in range(0, rows, t.batch_size):
            b = np.sort(order[start : start + t.batch_size])
            logits = model(
                torch.from_numpy(train.ids[b].astype(np.int64)), torch.from_numpy(train.weights[b])
            )
            y = torch.from_numpy(train.y[b].toarray().astype(np.float32))
            loss = subset_loss(loss_fn, logits, y, index)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            add_head_l2_grad(model.head, t.l2, num_labels)
            optimizer.step()
            scheduler.step()
        s_val = scores_of(model, validation, t.eval_batch_size)
        aps = [average_precision_score(y_val[:, j], s_val[:, j]) for j in np.flatnonzero(has)]
        val_ap.append(round(float(np.mean(aps)), 4) if aps else float("nan"))
        log.info(
            "epoch %d/%d: %.0fs, validation macro AP %.4f",
            epoch + 1,
            t.epochs,
            time.perf_counter() - t0,
            val_ap[-1],
        )
    return model, {"train_seconds": round(time.perf_counter() - t0, 3), "val_macro_ap_by_epoch": val_ap}


def decide(
    ecfg: Any,
    stats: dict[str, Any],
    cols: np.ndarray,
    labels: list[str],
    prior: np.ndarray,
    validation: tuple[Any, np.ndarray],
    test: tuple[Any, np.ndarray],
) -> dict[str, Any]:
    """Per-label thresholds fitted on validation with `ecfg`'s settings (as the evaluate stage), applied to
    test; the subset's figures in the report's conventions."""
    import scipy.sparse as sp

    from pipeline.evaluation.thresholds import fit_thresholds_with

    (y_val, s_val), (y_te, s_te) = validation, test
    names = [labels[j] for j in cols]
    thresholds = fit_thresholds_with(ecfg, y_val, s_val, names, prior[cols])
    pred = sp.csr_matrix(thresholds.apply(s_te).astype(np.int8))
    counts = np.array([stats["label_counts"][lab]["train"] for lab in names])
    flat = driver.measured(stats, ecfg, y_te, pred, s_te, names, counts)
    return {k: None if flat.get(k) is None else round(float(flat[k]), 4) for k in FIGURES}


def full_model_figures(per_label_csv: Path, names: list[str]) -> dict[str, Any] | None:
    """A full run's test figures on the labels `names`, from its report's per-label table (same conventions:
    macro-F1 over all of them, tail-F1 over the tail group, macro AP over those with a test positive)."""
    if not per_label_csv.is_file():
        return None
    with per_label_csv.open(newline="") as f:
        table = {r["label"]: r for r in csv.DictReader(f)}
    rows = [table[n] for n in names if n in table]
    f1 = [float(r["f1"]) for r in rows]
    tail = [float(r["f1"]) for r in rows if r["group"] == "tail"]
    ap = [float(r["ap"]) for r in rows if int(r["support"]) > 0 and r["ap"] not in ("", "nan")]
    return {"labels": len(rows), "macro_ap": _mean(ap), "macro_f1": _mean(f1), "tail_f1": _mean(tail)}


def _mean(xs: list[float]) -> float | None:
    return round(float(np.mean(xs)), 4) if xs else None


def run_rows(bench: Any, args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    """Each asked row trained on the label subset, decided by each of the config's peer_thresholds settings
    (the row's own evaluate settings when it has none)."""
    from pipeline.core.layout import RunLayout
    from pipeline.data.prepare import run_prepare
    from pipeline.training.train import build_inputs, resolved_loss_params

    corpora = Path(args.data_root)
    base = driver.row_config(bench, work, corpora, "base", [])
    if not RunLayout.of(base).label_stats.exists():
        with benchmark_ray(args.num_cpus):
            run_prepare(base)
    out = []
    for row in args.rows:
        cfg = driver.row_config(bench, work, corpora, "base", [*bench.rows[row], *args.set])
        check_exact(cfg)
        inputs = build_inputs(cfg, tokenize=False)
        stats = _stats(inputs.run)
        cols = pick_labels(len(inputs.labels), args.labels, args.label_seed)
        names = [inputs.labels[j] for j in cols]
        cache = work / bench.key / "label_subset" / inputs.featurizer.digest()[:16]
        splits = {
            s: Split.encode(inputs.run, s, inputs.labels, inputs.featurizer, cache / f"{s}.npz")
            for s in ("train", "validation", "test")
        }
        log.info(
            "%s %s: %d of %d labels (%d tail)",
            bench.key,
            row,
            len(cols),
            len(inputs.labels),
            sum(stats["label_counts"][n]["train"] <= stats["groups"]["tail_max"] for n in names),
        )
        loss_params = resolved_loss_params(cfg.loss.name, cfg.loss.params, inputs)
        model, trained = train_subset(cfg, inputs, loss_params, cols, splits["train"], splits["validation"])
        batch = cfg.train.eval_batch_size
        s_val, s_te = scores_of(model, splits["validation"], batch), scores_of(model, splits["test"], batch)
        y_val, y_te = splits["validation"].y[:, cols], splits["test"].y[:, cols]
        prior = np.asarray(inputs.counts, dtype=np.float64) / max(inputs.num_docs, 1)
        decisions = bench.peer_thresholds or {"thresholds": []}
        record: dict[str, Any] = {
            "dataset": bench.key,
            "row": row,
            "set": list(args.set),
            "seed": cfg.run.seed,
            "labels": len(cols),
            "label_seed": args.label_seed,
            **trained,
        }
        for name, overrides in decisions.items():
            ecfg = driver.row_config(bench, work, corpora, "base", [*bench.rows[row], *overrides]).evaluate
            record[name] = decide(ecfg, stats, cols, inputs.labels, prior, (y_val, s_val), (y_te, s_te))
            if args.full_run:
                # The configs' convention: `thresholds-prior` is decided as the row's `-prior` run.
                full_row = row + name.removeprefix("thresholds")
                report = work / bench.key / driver.run_name(bench, full_row, cfg.run.seed) / "report"
                record[name]["full_model"] = full_model_figures(report / "per_label.csv", names)
        record.update(git_sha=STARTED_AT_SHA, measured=utc_now())
        log.info("%s", record)
        out.append(record)
    return out


def _stats(run: Any) -> dict[str, Any]:
    from pipeline.core.storage import read_json

    return read_json(run.label_stats)


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keys = ("dataset", "row", "set", "seed", "labels", "label_seed")
    return all(a.get(k) == b.get(k) for k in keys)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.label_subset", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--dataset", default=None, help="a long-tail benchmark config (e.g. eurlex57k)")
    parser.add_argument("--smoke", action="store_true", help="the long-tail smoke config (synthetic)")
    parser.add_argument("--rows", required=True, help="comma-separated training rows of the config")
    parser.add_argument("--labels", type=int, default=512, help="labels in the subset (default 512)")
    parser.add_argument("--label-seed", type=int, default=0, help="seed of the subset's draw (default 0)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a pipeline override of every row"
    )
    parser.add_argument(
        "--full-run", action="store_true", help="also read each row's whole-label run in --work-dir"
    )
    parser.add_argument("--work-dir", required=True, help="the long-tail driver's work folder (kept, reused)")
    parser.add_argument("--out", default=None, help=f"results JSON (default: {DEFAULT_OUT})")
    parser.add_argument("--data-root", default=str(data_root()), help="folder holding the datasets")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the Ray that prepares (default 2)")
    args = parser.parse_args(argv)
    if bool(args.dataset) == bool(args.smoke):
        parser.error("give one of --dataset and --smoke")
    if args.labels < 1:
        parser.error(f"--labels must be >= 1, got {args.labels}")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import json

    args = parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    bench = driver.load_bench(driver.CONFIGS / f"{driver.SMOKE if args.smoke else args.dataset}.yaml")
    args.rows = args.rows.split(",")
    training = [r for r in bench.rows if r not in bench.model_of and r not in bench.tuned]
    unknown = [r for r in args.rows if r not in training]
    if unknown:
        raise SystemExit(f"not training rows of {bench.key}: {unknown}; they are: {', '.join(training)}")
    corpora, work = Path(args.data_root), Path(args.work_dir).resolve()
    for row in args.rows:  # every row's config checked before any work
        check_exact(driver.row_config(bench, work, corpora, "base", [*bench.rows[row], *args.set]))
    if args.full_run and args.set:
        raise SystemExit("--full-run reads the rows' whole-label runs, made without --set: give one of them")
    if bench.dataset is not None and not (corpora / bench.dataset).is_dir():
        raise SystemExit(f"{corpora / bench.dataset} is absent")
    out = Path(args.out) if args.out else DEFAULT_OUT
    doc = {**run_header("benchmarks.label_subset", argv, VERSIONED, sha=STARTED_AT_SHA), "rows": []}
    if out.exists():
        kept = json.loads(out.read_text())
        doc["rows"] = kept["rows"]
        if "note" in kept:  # how earlier rows were made, written by hand: kept with them
            doc["note"] = kept["note"]
    t0 = time.perf_counter()
    new = run_rows(bench, args, work)
    doc["rows"] = [r for r in doc["rows"] if not any(_same(r, n) for n in new)] + new
    doc.update(finished=utc_now(), total_seconds=round(time.perf_counter() - t0, 1))
    write_json(out, doc)
    print(f"wrote {out}", flush=True)
    return doc


if __name__ == "__main__":
    main()
