"""The throughput benchmark's plan: its sections, their sizes and their phases."""

from __future__ import annotations

SECTIONS = ("stats", "train", "score", "scale")

#: Sizes of the full benchmark and of --smoke.
FULL = {
    "rows": 5_000_000,
    "labels": 1000,
    "shards": 20,
    "train_docs": 6_000,
    "epochs": 4,
    "score_docs": 20_000,
    "repeats": 3,
    "scale_epochs": 3,
}
SMOKE = {
    "rows": 20_000,
    "labels": 1000,
    "shards": 4,
    "train_docs": 400,
    "epochs": 2,
    "score_docs": 1024,
    "repeats": 1,
    "scale_epochs": 2,
}

#: Phases in the order they run (score_setup before score_*, train_ray before train_bare; the Ray phases
#: next to each other, so that --smoke starts Ray once). A full run alternates the Ray and bare sides of
#: train and score instead (see driver._groups).
PHASES = (
    ("stats_gen", "stats", None),
    ("stats_polars", "stats", None),
    ("stats_profile", "stats", None),
    ("score_setup", "score", None),
    ("stats_ray", "stats", "local"),
    ("train_ray", "train", "local"),
    ("score_ray", "score", "local"),
    ("scale", "scale", "cluster"),
    ("train_bare", "train", None),
    ("score_bare", "score", None),
)


#: Joins a phase and its repeat in a result's name (train_ray@0, train_bare@0, ...).
REPEAT_SEP = "@"
