"""The report's plots, rendered to PNG bytes (``report/plots/<name>.png``, inlined in ``report.html``).

Every plot aggregates or thins out so it stays readable at thousands of labels: binned by training
frequency, or per-label scatters with small translucent markers above :data:`DENSE_PLOT_LABELS` labels.
"""

from __future__ import annotations

import io
from collections import Counter
from typing import Any

import numpy as np

from pipeline.data.groups import DEFAULT_HEAD_MIN, DEFAULT_TAIL_MAX, GROUPS

#: Above this many labels the per-label scatter plots switch to small translucent markers.
DENSE_PLOT_LABELS = 500
#: Training-frequency bins of the binned plots (fewer when training counts tie across bin edges).
FREQUENCY_BINS = 10

#: Plot keys returned by :func:`render_plots` (also the PNG file stems), with their HTML captions.
PLOTS: dict[str, str] = {
    "label_frequency": "Training documents per label, most frequent first (log scale); dashed lines are the "
    "head / tail cut-offs.",
    "f1_vs_frequency": "Test F1 per label against its training frequency; crosses are labels without test "
    "positives (F1 0 by convention).",
    "group_metrics": "Micro F1, macro F1 and macro AP per frequency group.",
    "predicted_vs_true": "Predicted against true test count per label (log-log); points above the diagonal "
    "are over-predicted, at y = 0 never predicted.",
    "threshold_distribution": "Decision thresholds per label, by source (own F1-optimal threshold, shrunk, "
    "or a fallback: global, prior-matched or blend).",
    "f1_by_frequency_bin": "Test F1 of the labels with test positives, by training-frequency bin (labels "
    "ordered by training documents, cut into bins of about equal size): macro F1 (bars), median and "
    "interquartile range, and the share of labels with F1 > 0.",
    "counts_by_frequency_bin": "Test label assignments per training-frequency bin: true against predicted, "
    "summed over the bin's labels; the figure above each pair is predicted / true (over-prediction when "
    "above 1).",
}
GROUP_COLOURS = {"head": "#1f77b4", "medium": "#ff7f0e", "tail": "#2ca02c"}
SOURCE_COLOURS = {
    "per_label": "#1f77b4",
    "shrunk": "#9467bd",
    "prior": "#17becf",
    "blend": "#bcbd22",
    "global": "#7f7f7f",
}


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    # No "Software" chunk: it carries a matplotlib URL, and the report must not mention external resources.
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


def _cutoffs(label_stats: dict[str, Any]) -> tuple[int, int]:
    groups = label_stats.get("groups") or {}
    head_min = groups.get("head_min")
    tail_max = groups.get("tail_max")
    return (
        DEFAULT_HEAD_MIN if head_min is None else int(head_min),
        DEFAULT_TAIL_MAX if tail_max is None else int(tail_max),
    )


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def render_plots(
    ev: dict[str, Any], thresholds: dict[str, Any], label_stats: dict[str, Any]
) -> dict[str, bytes]:
    """PNG bytes for each plot of :data:`PLOTS`, keyed by plot name (use the key as the file stem).

    Uses matplotlib's object API on an explicit Agg canvas, never pyplot: headless without
    ``matplotlib.use("Agg")`` (which would switch the caller's process-wide backend), and no global figure
    registry to leak figures into. Log axes are symlog with a
    linear part below 1 so labels with zero counts (never predicted, absent from test) stay visible.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    def figure(width: float = 7.0, height: float = 4.2) -> tuple[Any, Any]:
        fig = Figure(figsize=(width, height), layout="constrained")
        FigureCanvasAgg(fig)
        return fig, fig.add_subplot()

    rows = ev["per_label"]
    head_min, tail_max = _cutoffs(label_stats)
    groups = np.array([r["group"] for r in rows], dtype=object)
    train = np.array([r["train_count"] for r in rows], dtype=np.float64)
    f1 = np.array([r["f1"] for r in rows], dtype=np.float64)
    true_c = np.array([r["true_count"] for r in rows], dtype=np.float64)
    pred_c = np.array([r["predicted_count"] for r in rows], dtype=np.float64)
    many = len(rows) > DENSE_PLOT_LABELS
    # Thousands of labels: small translucent, rasterised markers so the density shows, not a blot.
    dot: dict[str, Any] = {"s": 3, "alpha": 0.35, "linewidths": 0, "rasterized": True} if many else {}
    out: dict[str, bytes] = {}

    # Label frequency curve: the long tail at a glance.
    fig, ax = figure()
    counts_by_label = label_stats.get("label_counts") or {}
    if counts_by_label:
        group_of = (label_stats.get("groups") or {}).get("assignment") or {
            r["label"]: r["group"] for r in rows
        }
        freq = sorted(
            ((int(c.get("train", 0)), group_of.get(lab, "")) for lab, c in counts_by_label.items()),
            key=lambda t: -t[0],
        )
    else:
        freq = sorted(((int(r["train_count"]), r["group"]) for r in rows), key=lambda t: -t[0])
    if freq:
        y = np.array([c for c, _ in freq], dtype=np.float64)
        x = np.arange(1, y.size + 1)
        ax.plot(x, y, color="#bbbbbb", linewidth=1, zorder=1)
        for g in GROUPS:
            m = np.array([gg == g for _, gg in freq])
            if m.any():
                ax.scatter(
                    x[m],
                    y[m],
                    s=2 if many else 12,
                    color=GROUP_COLOURS[g],
                    label=f"{g} ({int(m.sum())})",
                    zorder=2,
                    rasterized=many,
                )
        ax.axhline(head_min, color=GROUP_COLOURS["head"], linestyle="--", linewidth=1)
        ax.axhline(tail_max, color=GROUP_COLOURS["tail"], linestyle="--", linewidth=1)
        ax.set_yscale("symlog", linthresh=1, linscale=0.3)
        ax.set_ylim(-0.2, max(float(y.max()), float(head_min)) * 1.6)
        ax.set_xlabel("label rank by training frequency")
        ax.set_ylabel("training documents")
        ax.legend(loc="upper right", fontsize=8, markerscale=4 if many else 1)
    else:
        _empty(ax, "no labels")
    ax.set_title(f"Label frequency (head >= {head_min}, tail <= {tail_max} training docs)")
    out["label_frequency"] = _png(fig)

    # F1 against training frequency: does the model learn the tail at all?
    fig, ax = figure()
    if rows:
        no_pos = true_c == 0
        for g in GROUPS:
            m = (groups == g) & ~no_pos
            if m.any():
                ax.scatter(
                    train[m], f1[m], **({"s": 16, "alpha": 0.8} | dot), color=GROUP_COLOURS[g], label=g
                )
        if no_pos.any():
            ax.scatter(
                train[no_pos],
                f1[no_pos],
                s=6 if many else 20,
                marker="x",
                color="#444444",
                label="no test positives",
                rasterized=many,
            )
        ax.axvline(head_min, color=GROUP_COLOURS["head"], linestyle="--", linewidth=1)
        ax.axvline(tail_max, color=GROUP_COLOURS["tail"], linestyle="--", linewidth=1)
        ax.set_xscale("symlog", linthresh=1, linscale=0.3)
        ax.set_xlim(-0.2, max(float(train.max()), float(head_min)) * 1.6)
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("training documents (log scale)")
        ax.set_ylabel("test F1")
        ax.legend(loc="lower right", fontsize=8, markerscale=4 if many else 1)
    else:
        _empty(ax, "no labels")
    ax.set_title("F1 per label against training frequency")
    out["f1_vs_frequency"] = _png(fig)

    # Metrics per group: the gap between head and tail.
    fig, ax = figure()
    metrics = (("micro_f1", "micro F1"), ("macro_f1", "macro F1"), ("macro_ap", "macro AP"))
    xg = np.arange(len(GROUPS))
    width = 0.26
    for i, (key, name) in enumerate(metrics):
        vals = [ev["groups"].get(g, {}).get(key) for g in GROUPS]
        heights = [np.nan if v is None else v for v in vals]
        bars = ax.bar(xg + (i - 1) * width, heights, width, label=name)
        ax.bar_label(bars, labels=["n/a" if v is None else f"{v:.2f}" for v in vals], fontsize=7, padding=2)
    ax.set_xticks(xg, [f"{g} ({ev['groups'].get(g, {}).get('n_labels', 0)} labels)" for g in GROUPS])
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("score")
    ax.legend(loc="upper right", fontsize=8, ncols=3)
    ax.set_title("Metrics per frequency group (test)")
    out["group_metrics"] = _png(fig)

    # Predicted vs true counts: over-prediction shows above the diagonal.
    fig, ax = figure(6.0, 5.0)
    if rows:
        for g in GROUPS:
            m = groups == g
            if m.any():
                ax.scatter(
                    true_c[m], pred_c[m], **({"s": 16, "alpha": 0.8} | dot), color=GROUP_COLOURS[g], label=g
                )
        top = max(float(true_c.max()), float(pred_c.max()), 1.0) * 1.5
        ax.plot([0, top], [0, top], color="#444444", linewidth=1, label="predicted = true")
        ax.set_xscale("symlog", linthresh=1, linscale=0.3)
        ax.set_yscale("symlog", linthresh=1, linscale=0.3)
        ax.set_xlim(-0.2, top)
        ax.set_ylim(-0.2, top)
        ax.text(0.04, 0.94, "over-predicted", transform=ax.transAxes, fontsize=8, color="#a00000")
        ax.text(0.70, 0.04, "under-predicted", transform=ax.transAxes, fontsize=8, color="#a00000")
        ax.set_xlabel("true test documents")
        ax.set_ylabel("predicted test documents")
        ax.legend(loc="lower right", fontsize=8, markerscale=4 if many else 1, bbox_to_anchor=(1.0, 0.08))
    else:
        _empty(ax, "no labels")
    ax.set_title("Predicted vs true label counts (test)")
    out["predicted_vs_true"] = _png(fig)

    # Threshold distribution, by where each threshold came from.
    fig, ax = figure()
    thr_rows = thresholds.get("labels", [])
    values = np.array([r["threshold"] for r in thr_rows], dtype=np.float64)
    if values.size:
        lo, hi = float(values.min()), float(values.max())
        if hi - lo < 1e-9:
            lo, hi = lo - 0.05, hi + 0.05
        bins = np.linspace(lo, hi, 26)
        sources = [s for s in SOURCE_COLOURS if any(r["source"] == s for r in thr_rows)]
        sources += sorted({r["source"] for r in thr_rows} - set(sources))
        data = [values[[r["source"] == s for r in thr_rows]] for s in sources]
        colours = [SOURCE_COLOURS.get(s, "#d62728") for s in sources]
        ax.hist(
            data,
            bins=bins,
            stacked=True,
            color=colours,
            label=[f"{s} ({len(d)})" for s, d in zip(sources, data, strict=True)],
        )
        gt = thresholds.get("global_threshold")
        if gt is not None:
            ax.axvline(gt, color="#000000", linestyle="--", linewidth=1, label=f"global = {gt:.3f}")
        ax.set_xlabel("threshold (predict iff score >= threshold)")
        ax.set_ylabel("labels")
        ax.legend(loc="upper right", fontsize=8)
    else:
        _empty(ax, "no thresholds")
    ax.set_title(f"Threshold distribution (strategy: {thresholds.get('strategy', 'n/a')})")
    out["threshold_distribution"] = _png(fig)

    # Binned by training frequency: readable at any label count.
    bins = frequency_bins(train.astype(np.int64))
    names = [f"{name}\n({idx.size})" for name, idx in bins]
    colours = [GROUP_COLOURS.get(_majority(groups[idx]), "#7f7f7f") for _, idx in bins]
    xb = np.arange(len(bins))

    fig, ax = figure(8.0, 4.6)
    has_pos = true_c > 0
    stats = []
    for _, idx in bins:
        v = f1[idx[has_pos[idx]]]
        stats.append(
            (float(v.mean()), *np.percentile(v, [25, 50, 75]), float((v > 0).mean()))
            if v.size
            else (np.nan,) * 5
        )
    if bins and any(np.isfinite(st[0]) for st in stats):
        mean, q25, q50, q75, share = (np.array(col, dtype=np.float64) for col in zip(*stats, strict=True))
        ax.bar(xb, mean, 0.6, color=colours, alpha=0.55, label="macro F1 (mean)")
        ok = np.isfinite(q50)
        ax.errorbar(
            xb[ok],
            q50[ok],
            yerr=[q50[ok] - q25[ok], q75[ok] - q50[ok]],
            fmt="o",
            color="#222222",
            markersize=4,
            capsize=3,
            label="median, interquartile range",
        )
        ax.plot(xb[ok], share[ok], color="#d62728", marker="s", markersize=4, label="share with F1 > 0")
        ax.set_xticks(xb, names, fontsize=7)
        ax.set_ylim(0, 1.22)
        ax.set_yticks(np.linspace(0, 1, 6))
        ax.set_xlabel("training documents per label (labels in bin)")
        ax.set_ylabel("test F1 / share")
        ax.legend(loc="upper center", fontsize=8, ncols=3)
    else:
        _empty(ax, "no labels with test positives")
    ax.set_title("Test F1 by training-frequency bin")
    out["f1_by_frequency_bin"] = _png(fig)

    fig, ax = figure(8.0, 4.6)
    if bins:
        true_sum = np.array([true_c[idx].sum() for _, idx in bins])
        pred_sum = np.array([pred_c[idx].sum() for _, idx in bins])
        ax.bar(xb - 0.2, true_sum, 0.4, color="#7f7f7f", label="true")
        ax.bar(xb + 0.2, pred_sum, 0.4, color=colours, label="predicted (coloured by group)")
        ratio = [
            f"{p / t:.2f}" if t else ("n/a" if not p else "inf")
            for t, p in zip(true_sum, pred_sum, strict=True)
        ]
        for x_, top, text in zip(xb, np.maximum(true_sum, pred_sum), ratio, strict=True):
            ax.annotate(text, (x_, top), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=7)
        both = np.concatenate([true_sum, pred_sum])
        if (both > 0).all():
            ax.set_yscale("log")
            ax.set_ylim(float(both.min()) / 2, float(both.max()) * 3)
        else:  # a zero bar (a bin never predicted) stays visible on a linear part below 1
            ax.set_yscale("symlog", linthresh=1, linscale=0.3)
            ax.set_ylim(0, max(float(both.max()), 1.0) * 3)
        ax.set_xticks(xb, names, fontsize=7)
        ax.set_xlabel("training documents per label (labels in bin)")
        ax.set_ylabel("test label assignments (log scale)")
        ax.legend(loc="upper left", fontsize=8)
    else:
        _empty(ax, "no labels")
    ax.set_title("True vs predicted test counts by training-frequency bin")
    out["counts_by_frequency_bin"] = _png(fig)
    return out


def _majority(values: np.ndarray) -> str:
    """Most common value (first in :data:`GROUPS` order on ties); ``""`` for none."""
    counts = Counter(str(v) for v in values)
    return max(GROUPS, key=lambda g: counts.get(g, 0)) if counts else ""


def frequency_bins(train_counts: Any, max_bins: int = FREQUENCY_BINS) -> list[tuple[str, np.ndarray]]:
    """Labels cut into at most ``max_bins`` bins of about equal size by training count, rarest first.

    Labels with one training count always share a bin (a bin edge falling inside a run of equal counts
    moves to the run's start), so bins can be fewer and uneven. Returns ``(name, label indices)`` per bin,
    the name being the bin's training-count range (``"3-8"``, or ``"5"`` when all are equal).
    """
    counts = np.asarray(train_counts)
    n = counts.size
    if n == 0:
        return []
    order = np.argsort(counts, kind="stable")
    ranked = counts[order]
    edges = {
        int(np.searchsorted(ranked, ranked[(i * n) // max_bins], side="left")) for i in range(1, max_bins)
    }
    bounds = sorted({0, n} | {e for e in edges if 0 < e < n})
    out = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=False):
        lo, hi = ranked[a], ranked[b - 1]
        out.append((str(lo) if lo == hi else f"{lo}-{hi}", order[a:b]))
    return out
