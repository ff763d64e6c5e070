"""The profile stage: label statistics of a corpus as it is read, in one counting pass, without preparing it.

What a user looks at before choosing losses, groups and model sizes (how long the tail is, labels per
document, text lengths), at a fraction of prepare's cost on a large corpus: prepare also hashes every row and
every normalised text for its keys, merges duplicate texts, splits and writes the corpus again; the profile
reads the text and label columns only and sends per-block partial counts (`pipeline.data.stats`) to the
driver. It writes `<run>/profile.json` with `label_stats.json`'s schema, counted over the rows as read:

- rows are cleaned and dropped or kept as prepare does (labels de-duplicated, empty names removed; rows with
  empty text or no labels per `data.empty_policy`), but duplicate texts are not merged;
- splits are the ones the data gives (split folders or a split column; validation is not carved from train);
  a corpus that gives none is counted as one `train` split, so its groups are those of the whole corpus;
- `row_issues` examples name files (the rows' ids are not read).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from pipeline.core.config import Config
from pipeline.core.errors import InputError
from pipeline.core.layout import RunLayout
from pipeline.core.progress import PassProgress
from pipeline.core.storage import write_json
from pipeline.data import stats as stats_mod
from pipeline.data.prepare import (
    check_issues,
    count_rows,
    count_top_pairs,
    read_normalised,
    reading,
    resolve_source,
)
from pipeline.data.sources import SPLITS, discover

log = logging.getLogger(__name__)


def run_profile(cfg: Config) -> dict[str, Any]:
    """Count the corpus of `data.source` and write `<run>/profile.json`; returns the document."""
    t0 = time.perf_counter()
    run = RunLayout.of(cfg)
    source = resolve_source(cfg, run)
    spec = discover(source, cfg.data, cfg.storage)
    if spec.by_split:
        method = "folders"
    elif spec.has_split_column:
        method = "split-column"
    else:
        method = "none: every row counted as train"
    log.info("profile of %s: %d file(s), splits: %s", source, len(spec.all_files), method)
    with reading(source):
        total = count_rows(spec, cfg)
    check_issues(total)
    if not any(total.splits[s].docs for s in SPLITS):
        raise InputError(f"{source}: no row has both text and labels")
    ds = read_normalised(spec, cfg, keys=False)  # the pairs' pass reads the rows again
    progress = PassProgress(spec.rows, "profile: pairs", verb="read")
    pairs, exact = count_top_pairs(ds, total, cfg.data.top_pairs, cfg.data.pair_candidates, progress)
    groups = cfg.data.groups
    doc = stats_mod.label_stats(total, groups.head_min, groups.tail_max, pairs, exact)
    doc["source"] = source
    doc["split"] = {"method": method}
    doc["duplicates"] = "not merged: rows are counted as read"
    doc["empty_policy"] = cfg.data.empty_policy
    doc["seconds"] = round(time.perf_counter() - t0, 2)
    write_json(run.profile, doc)
    lengths = doc["text_length"]["train"]
    log.info(
        "profile done in %.1fs: %s docs, %d train labels (head %d, medium %d, tail %d), %d zero-shot; "
        "labels per train document %.2f; train text length p50 <= %s, p90 <= %s characters -> %s",
        doc["seconds"],
        doc["documents"],
        doc["num_labels"],
        *(doc["groups"]["sizes"].get(g, 0) for g in ("head", "medium", "tail")),
        len(doc["zero_shot_labels"]),
        doc["cardinality"]["train"],
        lengths["p50_at_most"],
        lengths["p90_at_most"],
        run.profile.uri,
    )
    return doc
