"""The quality table of a dataset and the issue's targets."""

from __future__ import annotations

from typing import Any

from benchmarks.quality.config import ALL_ROWS, OUR_ROWS

#: Columns of the markdown table (row summary key, header).
COLUMNS = (
    ("micro_f1", "micro-F1"),
    ("macro_f1", "macro-F1"),
    ("macro_ap", "macro AP"),
    ("head_f1", "head F1"),
    ("medium_f1", "medium F1"),
    ("tail_f1", "tail F1"),
    ("oracle_macro_f1", "test-oracle macro-F1"),
)
METRICS = tuple(key for key, _ in COLUMNS)


def _fmt(x: Any) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def markdown_table(title: str, rows: dict[str, dict[str, Any]], stats: dict[str, Any]) -> str:
    sizes = stats["groups"]["sizes"]
    headers = []
    for key, header in COLUMNS:
        group = key.removesuffix("_f1")
        headers.append(f"{header} ({sizes[group]})" if group in sizes else header)
    lines = [
        f"{title} (test; head >= {stats['groups']['head_min']}, tail <= {stats['groups']['tail_max']} "
        "training docs, labels per group in brackets)",
        "",
        "| row | " + " | ".join(headers) + " |",
        "| --- |" + " ---: |" * len(COLUMNS),
    ]
    for name in ALL_ROWS:
        if name in rows:
            lines.append(f"| {name} | " + " | ".join(_fmt(rows[name].get(k)) for k, _ in COLUMNS) + " |")
    return "\n".join(lines)


def _best(rows: dict[str, dict[str, Any]], metric: str) -> tuple[str | None, float | None]:
    vals = [(r, rows[r][metric]) for r in OUR_ROWS if r in rows and rows[r].get(metric) is not None]
    return max(vals, key=lambda x: x[1]) if vals else (None, None)


def check_targets(key: str, result: dict[str, Any], targets: dict[str, float]) -> list[dict[str, Any]]:
    """The issue's targets, from the config's `bench.targets` (best of our rows) plus DB above BCE."""
    rows = result["rows"]
    out = []
    for metric, goal in targets.items():
        row, value = _best(rows, metric)
        out.append(
            {
                "dataset": key,
                "target": f"{metric} >= {goal} (best of our rows)",
                "value": value,
                "row": row,
                "met": value is not None and value >= goal,
            }
        )
    for metric in ("macro_f1", "tail_f1"):
        db, bce = rows["db"].get(metric), rows["bce"].get(metric)
        out.append(
            {
                "dataset": key,
                "target": f"db above bce on {metric}",
                "value": {"db": db, "bce": bce},
                "met": db is not None and bce is not None and db > bce,
                **({"note": "no label in this group"} if db is None or bce is None else {}),
            }
        )
    return out
