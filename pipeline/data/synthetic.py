"""A deterministic synthetic long-tailed multi-label corpus: the embedded default's data.

Label frequencies follow a Zipf law, labels come in co-occurring groups, and each label has its own small
vocabulary mixed into shared noise words, so a text encoder can learn it and the tail is genuinely rare.

Two generators (`data.synthetic.generator`): `per-document`, the original one (one document at a time; the
default, its output is unchanged), and `vectorised`, which draws whole chunks of documents with numpy and
builds the texts with Arrow kernels, for shapes like 80,000 documents x 7,900 labels x 130 labels each.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.core.config import SyntheticSection
from pipeline.core.storage import Location, write_bytes

_SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
#: Words in each label's own vocabulary; noise words shared by all documents.
_LABEL_VOCAB = 6
_NOISE_WORDS = 400
#: Share of documents that carry one word of a label they do not have.
_CONFUSER_RATE = 0.3
#: No label is in more than this share of documents (vectorised generator).
_MAX_FREQUENCY = 0.95
#: (documents per chunk) x labels drawn at once by the vectorised generator.
_CHUNK_CELLS = 1 << 22


def label_names(num_labels: int) -> list[str]:
    """label_000, label_001, ...: zero-padded to the width of num_labels - 1 (at least 3 digits), so the
    names sort in index order for any vocabulary size."""
    width = max(3, len(str(num_labels - 1)))
    return [f"label_{i:0{width}d}" for i in range(num_labels)]


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
    if cfg.generator == "vectorised":
        return generate_vectorised(cfg)
    return _generate_per_document(cfg)


def _generate_per_document(cfg: SyntheticSection) -> pa.Table:
    rng = np.random.default_rng(cfg.seed)
    labels = label_names(cfg.num_labels)
    freq = label_frequencies(cfg.num_labels, cfg.zipf_exponent)
    # Co-occurring groups of three neighbouring-rank labels: a drawn label pulls in a group partner.
    group_of = np.arange(cfg.num_labels) // 3
    label_words = [_words(rng, _LABEL_VOCAB, 3) for _ in labels]
    noise = _words(rng, _NOISE_WORDS, 2)

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
            n_words = int(rng.integers(cfg.label_words_min, cfg.label_words_max + 1))
            for w in rng.choice(label_words[lab], size=n_words):
                words[int(rng.integers(0, len(words)))] = w
        # A confuser: a word of an absent label, so single words are not perfect evidence.
        if rng.random() < _CONFUSER_RATE:
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


# --- the vectorised generator ---------------------------------------------------------------------------


def target_frequencies(num_labels: int, exponent: float, mean_labels: float) -> np.ndarray:
    """Expected share of documents holding each label (largest first): Zipf-shaped, summing to mean_labels,
    none above _MAX_FREQUENCY (the excess of capped labels is spread over the others)."""
    shape = 1.0 / np.arange(1, num_labels + 1) ** exponent
    capped = np.zeros(num_labels, dtype=bool)
    for _ in range(num_labels):
        free = mean_labels - _MAX_FREQUENCY * capped.sum()
        f = np.where(capped, _MAX_FREQUENCY, free * shape / shape[~capped].sum())
        over = (f > _MAX_FREQUENCY) & ~capped
        if not over.any():
            return f
        capped |= over
    return f


def _groups(num_labels: int) -> tuple[np.ndarray, np.ndarray]:
    """(first label of each label's co-occurrence group, size of that group): groups of 3 neighbours."""
    start = (np.arange(num_labels) // 3) * 3
    return start, np.minimum(start + 3, num_labels) - start


def base_rates(target: np.ndarray, cooccurrence: float, iterations: int = 30) -> np.ndarray:
    """Per-label Bernoulli rates p such that, after each drawn label pulls a uniform member of its group of
    three with probability `cooccurrence`, label i is in a document with probability target[i]:
    1 - target_i = (1 - p_i) * prod_{j != i in the group} (1 - p_j * cooccurrence / size)."""
    start, size = _groups(len(target))
    p = target.copy()
    for _ in range(iterations):
        pulled = np.log1p(-np.clip(p * cooccurrence / size, 0, 1 - 1e-12))
        group_sum = np.bincount(start, weights=pulled, minlength=len(target))[start]
        others = np.exp(group_sum - pulled)  # prod over the other members of the group
        p = np.clip(1 - (1 - target) / others, 0.0, _MAX_FREQUENCY)
    return p


def _syllable_words(codes: np.ndarray, syllables: int) -> np.ndarray:
    """Words (numpy str) from integer codes, one base-len(_SYLLABLES) digit per syllable."""
    base = len(_SYLLABLES)
    syl = np.asarray(_SYLLABLES)
    out = np.full(len(codes), "", dtype=f"<U{2 * syllables}")
    for _ in range(syllables):
        out = np.char.add(syl[codes % base], out)
        codes = codes // base
    return out


def generate_vectorised(cfg: SyntheticSection) -> pa.Table:
    """The vectorised generator (see SyntheticSection.generator); deterministic for cfg.seed."""
    rng = np.random.default_rng(cfg.seed)
    n_labels = cfg.num_labels
    names = pa.array(label_names(n_labels), pa.string())
    start, size = _groups(n_labels)

    # Word list: noise words (2 syllables) first, then each label's own words (3+ syllables, distinct
    # across labels): word id of label l's k-th word = _NOISE_WORDS + l * _LABEL_VOCAB + k.
    syllables = 3
    while len(_SYLLABLES) ** syllables < 2 * n_labels * _LABEL_VOCAB:
        syllables += 1
    noise_codes = rng.choice(len(_SYLLABLES) ** 2, size=_NOISE_WORDS, replace=False)
    label_codes = rng.choice(len(_SYLLABLES) ** syllables, size=n_labels * _LABEL_VOCAB, replace=False)
    words = pa.array(
        np.concatenate([_syllable_words(noise_codes, 2), _syllable_words(label_codes, syllables)]).tolist(),
        pa.string(),
    )

    # Rates: target frequencies sum to the mean, less the share of documents that draw no label at all
    # (each of those gets one label drawn in proportion to the targets).
    target = target_frequencies(n_labels, cfg.zipf_exponent, cfg.mean_labels_per_doc)
    p, empty = base_rates(target, cfg.cooccurrence), 0.0
    for _ in range(20):
        p = base_rates(target * (1 - empty / cfg.mean_labels_per_doc), cfg.cooccurrence)
        empty = float(np.exp(np.log1p(-p).sum()))
    fallback = target / target.sum()
    p32 = p.astype(np.float32)

    rows_per_chunk = max(1, _CHUNK_CELLS // n_labels)
    texts, label_cols = [], []
    for first in range(0, cfg.num_docs, rows_per_chunk):
        n = min(rows_per_chunk, cfg.num_docs - first)
        has = rng.random((n, n_labels), dtype=np.float32) < p32
        # Co-occurrence: each drawn label pulls in a uniform member of its group (maybe itself).
        r, c = np.nonzero(has)
        pull = rng.random(len(r)) < cfg.cooccurrence
        partner = start[c[pull]] + (rng.random(int(pull.sum())) * size[c[pull]]).astype(np.int64)
        has[r[pull], partner] = True
        none = np.flatnonzero(~has.any(axis=1))
        if len(none):
            has[none, rng.choice(n_labels, size=len(none), p=fallback)] = True
        r, c = np.nonzero(has)  # row-major: each document's labels in index (= name) order
        # Tokens: noise words, label_words_min..max words of each label, sometimes a confuser; shuffled.
        noise_doc = np.repeat(np.arange(n), cfg.words_per_doc)
        noise_tok = rng.integers(0, _NOISE_WORDS, size=len(noise_doc))
        reps = rng.integers(cfg.label_words_min, cfg.label_words_max + 1, size=len(r))
        lab_doc, lab = np.repeat(r, reps), np.repeat(c, reps)
        lab_tok = _NOISE_WORDS + lab * _LABEL_VOCAB + rng.integers(0, _LABEL_VOCAB, size=len(lab))
        other = rng.integers(0, n_labels, size=n)
        conf = (rng.random(n) < _CONFUSER_RATE) & ~has[np.arange(n), other]
        conf_doc = np.flatnonzero(conf)
        conf_word = rng.integers(0, _LABEL_VOCAB, size=len(conf_doc))
        conf_tok = _NOISE_WORDS + other[conf] * _LABEL_VOCAB + conf_word
        doc = np.concatenate([noise_doc, lab_doc, conf_doc])
        tok = np.concatenate([noise_tok, lab_tok, conf_tok])
        order = np.lexsort((rng.random(len(doc)), doc))
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(doc, minlength=n), out=offsets[1:])
        tokens = pa.LargeListArray.from_arrays(pa.array(offsets), words.take(pa.array(tok[order])))
        texts.append(pc.binary_join(tokens, " ").cast(pa.string()))
        label_offsets = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(np.bincount(r, minlength=n), out=label_offsets[1:])
        label_cols.append(pa.ListArray.from_arrays(pa.array(label_offsets), names.take(pa.array(c))))
    return pa.table(
        {
            "id": pa.array([f"doc-{d:07d}" for d in range(cfg.num_docs)], pa.string()),
            "text": pa.chunked_array(texts, pa.string()),
            "labels": pa.chunked_array(label_cols, pa.list_(pa.string())),
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
