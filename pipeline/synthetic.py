"""A deterministic synthetic long-tailed multi-label corpus: the embedded default's data.

Label frequencies follow a Zipf law, labels come in co-occurring groups, and each label has its own small
vocabulary mixed into shared noise words, so a text encoder can learn it and the tail is genuinely rare.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import SyntheticSection
from pipeline.storage import Location, write_bytes

_SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]


def _words(rng: np.random.Generator, n: int, syllables: int) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        word = "".join(rng.choice(_SYLLABLES, size=syllables))
        if word not in seen:
            seen.add(word)
            out.append(word)
    return out


def label_frequencies(num_labels: int, exponent: float) -> np.ndarray:
    """Zipf-like relative frequencies, largest first, summing to 1."""
    raw = 1.0 / np.arange(1, num_labels + 1) ** exponent
    return raw / raw.sum()


def generate(cfg: SyntheticSection) -> pa.Table:
    """Build the corpus as one Arrow table with columns id, text, labels (list<string>)."""
    rng = np.random.default_rng(cfg.seed)
    labels = [f"label_{i:03d}" for i in range(cfg.num_labels)]
    freq = label_frequencies(cfg.num_labels, cfg.zipf_exponent)
    # Co-occurring groups of three neighbouring-rank labels: a drawn label pulls in a group partner.
    group_of = np.arange(cfg.num_labels) // 3
    label_words = [_words(rng, 6, 3) for _ in labels]
    noise = _words(rng, 400, 2)

    ids, texts, label_lists = [], [], []
    extra = max(cfg.mean_labels_per_doc - 1.0, 0.0)
    for d in range(cfg.num_docs):
        k = min(1 + rng.poisson(extra), cfg.num_labels)
        chosen = set(rng.choice(cfg.num_labels, size=k, replace=False, p=freq).tolist())
        for lab in list(chosen):
            if rng.random() < cfg.cooccurrence:
                partners = np.flatnonzero(group_of == group_of[lab])
                chosen.add(int(rng.choice(partners)))
        chosen_sorted = sorted(chosen)
        words = list(rng.choice(noise, size=cfg.words_per_doc))
        for lab in chosen_sorted:
            # 3 to 5 label words; some of them may repeat, some documents are weaker evidence than others.
            for w in rng.choice(label_words[lab], size=int(rng.integers(3, 6))):
                words[int(rng.integers(0, len(words)))] = w
        # A confuser: a word of an absent label, so single words are not perfect evidence.
        if rng.random() < 0.3:
            other = int(rng.integers(0, cfg.num_labels))
            if other not in chosen:
                words[int(rng.integers(0, len(words)))] = str(rng.choice(label_words[other]))
        ids.append(f"doc-{d:07d}")
        texts.append(" ".join(words))
        label_lists.append([labels[i] for i in chosen_sorted])
    return pa.table(
        {
            "id": pa.array(ids, pa.string()),
            "text": pa.array(texts, pa.string()),
            "labels": pa.array(label_lists, pa.list_(pa.string())),
        }
    )


def write_shards(cfg: SyntheticSection, dest: Location) -> list[str]:
    """Write the corpus as `cfg.num_shards` Parquet files under dest; returns their paths."""
    table = generate(cfg)
    dest.fs.create_dir(dest.path, recursive=True)
    bounds = np.linspace(0, table.num_rows, cfg.num_shards + 1).astype(int)
    paths = []
    for i in range(cfg.num_shards):
        part = table.slice(bounds[i], bounds[i + 1] - bounds[i])
        loc = dest.join(f"part-{i:05d}.parquet")
        buf = pa.BufferOutputStream()
        pq.write_table(part, buf)
        write_bytes(loc, buf.getvalue().to_pybytes())
        paths.append(loc.path)
    return paths
