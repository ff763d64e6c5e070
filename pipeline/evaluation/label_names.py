"""Scores for named labels that never occur in training: the report's zero-shot group, scored.

A label seen only outside train has no weights in the model. When the labels have names (EURLEX57K's EUROVOC
concepts do), such a label is scored from its name through the model's own TF-IDF vectorizer:

1. its name text (the name and any alternative names) becomes a TF-IDF vector, L2-normalised as documents are;
2. a document's score for it starts from the cosine of the two vectors, blended with the cosine of a
   frozen encoder's embeddings of the two when `evaluate.label_names.encoder` names one (:class:`NameScorer`);
3. the cosine becomes a probability by a one-feature logistic regression fitted on the *seen* labels of
   validation: every (document, seen label) pair, summarised as two cosine histograms (exact counts, memory
   bounded by the bins, not by documents x labels), so the mapping is learnt where the answers are known and
   carried over to labels without any;
4. the label is predicted at one probability threshold, chosen on the pairs of validation's *unseen* named
   labels (validation, like test, holds labels never in train): the cut that maximises validation micro-F1
   over all labels, the model's own decisions included, so name predictions are made only where they add
   more hits than false pairs, and not at all when no cut does. Unseen labels are far rarer than the seen
   ones (EURLEX57K: 96 positives among 6,000 x 3,093 pairs, against about 5 per document among 4,108 seen
   labels): a cut chosen on the seen labels predicted hundreds of false pairs for each hit. Without an
   unseen positive in validation the cut is the name-only scorer's F1-optimal one on the seen labels.

Kinds with a TF-IDF vectorizer (lexical, combined) support it. Written here rather than taken from a library:
scikit-learn fits the logistic map (on the histogram), the rest is the sparse products and counting.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from pipeline.core.config import LabelNamesSection, StorageSection
from pipeline.core.errors import InputError
from pipeline.core.storage import Location, locate, read_bytes

log = logging.getLogger(__name__)

#: Cosine histogram bins over [0, 1] (a TF-IDF cosine of non-negative vectors lies there).
BINS = 2000
#: Ranking depth of the zero-shot group's figures (P@5 and recall@5).
TOP = 5
#: Model kinds whose folder holds the TF-IDF vectorizer the names are read with.
NAMED_KINDS = ("lexical", "combined")
#: Documents per block of cosines (a block is [BLOCK, labels] floats).
BLOCK = 512


def id_names(labels: Iterable[str]) -> dict[str, str]:
    """Each label id as its name, "-" and "_" read as spaces (``money-fx`` -> ``money fx``)."""
    out = {label: " ".join(label.replace("-", " ").replace("_", " ").split()) for label in labels}
    return {label: name for label, name in out.items() if name}


def read_label_names(
    section: LabelNamesSection, storage: StorageSection | None = None, labels: Iterable[str] = ()
) -> dict[str, str]:
    """label id -> its name text (the name, then the alternative names, joined with " ; "); with
    ``section.from_ids``, :func:`id_names` of ``labels``.

    A one-line :class:`InputError` for a missing or unreadable file, missing columns or no named label.
    """
    if section.from_ids:
        return id_names(labels)
    if section.source is None:
        return {}
    loc = locate(section.source, storage)
    if not loc.exists():
        raise InputError(f"evaluate.label_names.source {loc.uri}: not found")
    wanted = [section.id_column, section.name_column, *([section.alt_column] if section.alt_column else [])]
    try:
        if loc.path.lower().endswith(".csv"):
            import pyarrow.csv as pacsv

            with loc.fs.open_input_stream(loc.path) as f:
                table = pacsv.read_csv(f)
        else:
            import pyarrow.parquet as pq

            table = pq.read_table(loc.path, filesystem=loc.fs)
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(f"{loc.uri}: not a readable Parquet or CSV file of label names ({e})") from e
    missing = [c for c in wanted if c not in table.column_names]
    if missing:
        raise InputError(
            f"{loc.uri}: no column(s) {missing} (it has {table.column_names}); set "
            "evaluate.label_names.id_column / name_column / alt_column"
        )
    ids = table.column(section.id_column).cast(pa.string()).to_pylist()
    names = table.column(section.name_column).cast(pa.string()).to_pylist()
    alts = table.column(section.alt_column).to_pylist() if section.alt_column else [None] * len(ids)
    out: dict[str, str] = {}
    for label, name, alt in zip(ids, names, alts, strict=True):
        parts = [name] if name else []
        if isinstance(alt, str):
            parts.append(alt)
        elif alt:
            parts += [str(a) for a in alt if a]
        text = " ; ".join(p.strip() for p in parts if p.strip())
        if label is not None and text:
            out[label] = f"{out[label]} ; {text}" if label in out else text
    if not out:
        raise InputError(f"{loc.uri}: no label has a name in column {section.name_column!r}")
    return out


def _rows_l2(x: sp.csr_matrix) -> sp.csr_matrix:
    from sklearn.preprocessing import normalize

    return normalize(x.tocsr().astype(np.float32), norm="l2", axis=1, copy=False)


def name_vectors(vectorizer: Any, names: Sequence[str]) -> sp.csr_matrix:
    """[features, len(names)]: each name's L2-normalised TF-IDF vector as a column."""
    return _rows_l2(vectorizer.transform(list(names))).T.tocsr()


def cosines(vectorizer: Any, texts: Sequence[str], vectors: sp.csr_matrix) -> np.ndarray:
    """[len(texts), names] cosine of each document with each name (0 where they share no term)."""
    x = _rows_l2(vectorizer.transform([str(t) for t in texts]))
    return np.asarray((x @ vectors).toarray(), dtype=np.float32)


class NameScorer:
    """Documents' similarity to label names, in [0, 1]: the cosine of their TF-IDF vectors (the model's
    vectorizer) and, with a frozen ``encoder`` (:class:`pipeline.modeling.frozen.EmbeddingFeaturizer`),
    ``(1 - weight) * tfidf + weight * max(encoder cosine, 0)`` of mean-pooled embeddings: names share few
    words with the documents they fit, and the encoder scores related words too."""

    def __init__(self, vectorizer: Any, encoder: Any | None = None, weight: float = 0.0) -> None:
        if encoder is None and weight:
            raise ValueError("an encoder weight needs an encoder")
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"encoder weight must be in [0, 1], got {weight}")
        self.vectorizer, self.encoder, self.weight = vectorizer, encoder, float(weight)

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        from sklearn.preprocessing import normalize

        return normalize(self.encoder.encode(list(texts))["embedding"], norm="l2", axis=1)

    def names(self, names: Sequence[str]) -> tuple[sp.csr_matrix, np.ndarray | None]:
        """The names' vectors: TF-IDF [features, names] and, with an encoder, embeddings [names, hidden]."""
        tfidf = name_vectors(self.vectorizer, names)
        return tfidf, self._embed(names) if self.encoder is not None else None

    def similarity(self, texts: Sequence[str], names: tuple[sp.csr_matrix, np.ndarray | None]) -> np.ndarray:
        """[len(texts), names] float32 in [0, 1]."""
        sim = cosines(self.vectorizer, texts, names[0])
        if self.encoder is None or not self.weight:
            return sim
        dense = np.clip(self._embed(texts) @ names[1].T, 0.0, 1.0)
        return ((1.0 - self.weight) * sim + self.weight * dense).astype(np.float32)


def cosine_histograms(
    blocks: Iterable[tuple[np.ndarray, Sequence[Sequence[int]]]],
) -> tuple[np.ndarray, np.ndarray]:
    """(positives, negatives) per cosine bin over every (document, label) pair of ``blocks``: each block is
    the cosines [B, C] and, per document, the column indices of its labels."""
    pos = np.zeros(BINS, dtype=np.int64)
    neg = np.zeros(BINS, dtype=np.int64)
    for cos, cols in blocks:
        bins = np.minimum((np.clip(cos, 0.0, 1.0) * BINS).astype(np.int64), BINS - 1)
        y = np.zeros(cos.shape, dtype=bool)
        for r, c in enumerate(cols):
            y[r, list(c)] = True
        pos += np.bincount(bins[y], minlength=BINS)
        neg += np.bincount(bins[~y], minlength=BINS)
    return pos, neg


@dataclass(frozen=True)
class NameCalibration:
    """probability = sigmoid(a cosine + b); predicted at probability >= threshold (> 1: never)."""

    a: float
    b: float
    threshold: float
    #: The name-only scorer's F1 at the threshold, on the pairs it was chosen on (``threshold_from``).
    validation_f1: float
    #: The seen labels' pairs of validation the logistic map was fitted on.
    validation_positives: int
    validation_pairs: int
    #: "unseen": chosen on validation's unseen named labels; "seen": on the seen ones (no unseen positive).
    threshold_from: str = "seen"
    unseen_positives: int = 0
    unseen_pairs: int = 0
    #: With the model's validation counts (``closed``): validation micro-F1 over all labels without name
    #: predictions, and with them at the threshold.
    closed_micro_f1: float | None = None
    micro_f1_with_names: float | None = None

    def probability(self, cos: np.ndarray) -> np.ndarray:
        z = np.clip(self.a * np.asarray(cos, dtype=np.float64) + self.b, -60.0, 60.0)
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (a threshold of "never" is null)."""
        out = asdict(self)
        out["threshold"] = out["threshold"] if math.isfinite(out["threshold"]) else None
        return out


def _best_cut(pos: np.ndarray, neg: np.ndarray) -> tuple[int, float]:
    """(k, F1): predicting every pair in bins >= k is F1-optimal; F1 = 2 tp / (predicted + positives)."""
    tp = np.cumsum(pos[::-1])[::-1]
    predicted = tp + np.cumsum(neg[::-1])[::-1]
    f1 = 2.0 * tp / np.maximum(predicted + pos.sum(), 1.0)
    k = int(np.argmax(f1))
    return k, float(f1[k])


def fit_calibration(
    pos: np.ndarray,
    neg: np.ndarray,
    unseen_pos: np.ndarray | None = None,
    unseen_neg: np.ndarray | None = None,
    closed: tuple[int, int, int] | None = None,
) -> NameCalibration:
    """The logistic map (fitted on the seen labels' cosine histograms ``pos`` / ``neg``, see
    :func:`cosine_histograms`) and the threshold: on the unseen labels' histograms when they hold a
    positive, else on the seen labels'.

    On the seen labels the threshold is the name-only scorer's F1-optimal cut. On the unseen ones it is the
    cut that maximises validation micro-F1 over all labels when ``closed`` gives the model's own counts there
    (true positives, predicted, positives of the vocabulary): name predictions are then made only where they
    add more hits than they cost (a pair helps micro-F1 only if the cut's precision beats half of it), and
    never when no cut does; without ``closed``, the name-only F1-optimal cut.

    Names that do not separate positives (no positive pair, or a non-positive slope) give a threshold above
    1: the unseen labels are then ranked but never predicted.
    """
    pos, neg = np.asarray(pos, dtype=np.float64), np.asarray(neg, dtype=np.float64)
    u_pos = np.zeros(BINS) if unseen_pos is None else np.asarray(unseen_pos, dtype=np.float64)
    u_neg = np.zeros(BINS) if unseen_neg is None else np.asarray(unseen_neg, dtype=np.float64)
    n_pos, n_pairs = int(pos.sum()), int(pos.sum() + neg.sum())
    extra: dict[str, Any] = {
        "unseen_positives": int(u_pos.sum()),
        "unseen_pairs": int(u_pos.sum() + u_neg.sum()),
    }
    if n_pos == 0 or n_pos == n_pairs:
        return NameCalibration(0.0, 0.0, math.inf, 0.0, n_pos, n_pairs, **extra)
    from sklearn.linear_model import LogisticRegression

    centers = (np.arange(BINS) + 0.5) / BINS
    x = np.concatenate([centers[pos > 0], centers[neg > 0]])[:, None]
    y = np.concatenate([np.ones(int((pos > 0).sum())), np.zeros(int((neg > 0).sum()))])
    w = np.concatenate([pos[pos > 0], neg[neg > 0]])
    # A tight tolerance: positives are rare (EURLEX57K: 1 pair in 800), so the gradient is small long before
    # the optimum, and lbfgs' default tolerance stopped at a slope of 0.13 where the optimum is 54: a map that
    # flat put every unseen label's probability near the base rate, below every document's top 5.
    fit = LogisticRegression(C=1e6, max_iter=1000, tol=1e-10).fit(x, y, sample_weight=w / w.mean())
    a, b = float(fit.coef_[0, 0]), float(fit.intercept_[0])
    source = "unseen" if u_pos.sum() > 0 else "seen"
    if source == "unseen" and closed is not None:
        k, f1, extra = _best_combined_cut(u_pos, u_neg, closed, extra)
    else:
        k, f1 = _best_cut(u_pos, u_neg) if source == "unseen" else _best_cut(pos, neg)
    if a <= 0 or f1 <= 0 or k >= BINS:
        return NameCalibration(a, b, math.inf, 0.0, n_pos, n_pairs, source, **extra)
    cut = k / BINS  # the lower edge of the first predicted bin
    threshold = float(1.0 / (1.0 + math.exp(-(a * cut + b))))
    return NameCalibration(a, b, threshold, f1, n_pos, n_pairs, source, **extra)


def _best_combined_cut(
    u_pos: np.ndarray, u_neg: np.ndarray, closed: tuple[int, int, int], extra: dict[str, Any]
) -> tuple[int, float, dict[str, Any]]:
    """(k, name-only F1 at k, ``extra`` with the micro-F1s) of the cut maximising validation micro-F1 over
    vocabulary and unseen labels; k = BINS: predict nothing from names."""
    tp_v, pred_v, true_v = (float(v) for v in closed)
    true_all = true_v + u_pos.sum()
    tp = np.append(np.cumsum(u_pos[::-1])[::-1], 0.0)  # index BINS: nothing predicted
    predicted = tp + np.append(np.cumsum(u_neg[::-1])[::-1], 0.0)
    micro = 2.0 * (tp_v + tp) / np.maximum(pred_v + predicted + true_all, 1.0)
    k = BINS - int(np.argmax(micro[::-1]))  # ties: the highest cut (fewest predictions)
    name_f1 = 2.0 * tp[k] / max(predicted[k] + u_pos.sum(), 1.0)
    extra = {**extra, "closed_micro_f1": float(micro[BINS]), "micro_f1_with_names": float(micro[k])}
    return k, float(name_f1), extra


@dataclass
class _ZeroShotSums:
    """What the zero-shot figures are made of, summed over blocks of documents."""

    predicted: np.ndarray
    hits: np.ndarray
    p_sum: float = 0.0
    found: int = 0
    total: int = 0
    docs: int = 0

    def add(
        self,
        positives: Sequence[Sequence[int]],
        scores: np.ndarray,
        predicted: np.ndarray,
        vocabulary_scores: np.ndarray,
    ) -> None:
        self.predicted += predicted.sum(axis=0)
        c = vocabulary_scores.shape[1]
        for i, cols in enumerate(positives):
            cols = np.asarray(sorted(set(cols)), dtype=np.int64)
            if cols.size == 0:
                continue
            self.hits[cols[predicted[i, cols]]] += 1
            self.docs += 1
            top = np.argsort(-scores[i], kind="stable")[:TOP]
            self.p_sum += np.isin(top, cols).sum() / TOP
            both = np.concatenate([vocabulary_scores[i], scores[i]])
            top_all = np.argsort(-both, kind="stable")[:TOP]
            self.found += int(np.isin(top_all - c, cols).sum())
            self.total += cols.size

    def figures(
        self, labels: Sequence[str]
    ) -> tuple[dict[str, int], dict[str, int], dict[str, float | None]]:
        ranking = {
            "p_at_5": self.p_sum / self.docs if self.docs else None,
            "recall_at_5": self.found / self.total if self.total else None,
        }
        return (
            {lab: int(self.predicted[j]) for j, lab in enumerate(labels)},
            {lab: int(self.hits[j]) for j, lab in enumerate(labels)},
            ranking,
        )


def _sums(z: int) -> _ZeroShotSums:
    return _ZeroShotSums(np.zeros(z, dtype=np.int64), np.zeros(z, dtype=np.int64))


def zero_shot_figures(
    positives: Sequence[Sequence[int]],
    scores: np.ndarray,
    predicted: np.ndarray,
    vocabulary_scores: np.ndarray,
    labels: Sequence[str],
) -> tuple[dict[str, int], dict[str, int], dict[str, float | None]]:
    """(predicted documents per label, hits per label, ranking figures) of the scored unseen labels.

    ``positives[i]``: the column indices (into ``labels``, the unseen labels) of document i's positives;
    ``scores`` / ``predicted`` [N, Z]: their probabilities and decisions; ``vocabulary_scores`` [N, C]: the
    model's probabilities of the vocabulary, or only each document's 5 largest of them
    (``blocks.top_scores``: the figures are the same). Over the documents with at least one unseen positive:
    ``p_at_5``, the positives among the 5 top-scored unseen labels / 5; ``recall_at_5``, the share of their
    unseen positives among the 5 top-scored labels of all, vocabulary and unseen (ties: vocabulary first).
    """
    scores, predicted = np.asarray(scores), np.asarray(predicted, dtype=bool)
    n, z = scores.shape
    ok = predicted.shape == (n, z) and len(positives) == n and len(labels) == z
    if not ok or vocabulary_scores.shape[0] != n:
        raise ValueError(
            f"shapes disagree: scores {scores.shape}, predicted {predicted.shape}, {len(positives)} "
            f"documents of positives, {len(labels)} labels, vocabulary scores {vocabulary_scores.shape}"
        )
    sums = _sums(z)
    sums.add(positives, scores, predicted, vocabulary_scores)
    return sums.figures(labels)


def check_kind(kind: str) -> None:
    if kind not in NAMED_KINDS:
        raise InputError(
            "evaluate.label_names needs a model with TF-IDF features (model.kind "
            f"{' or '.join(NAMED_KINDS)}); this run's model is {kind!r}"
        )


def load_vectorizer(model: Location) -> Any:
    """The TF-IDF vectorizer of the model folder at ``model`` (only its vectorizer file is read)."""
    from pipeline.modeling.lexical import VECTORIZER_FILE, TfidfFeaturizer

    with tempfile.TemporaryDirectory(prefix="bml-names-") as tmp:
        Path(tmp, VECTORIZER_FILE).write_bytes(read_bytes(model.join(VECTORIZER_FILE)))
        return TfidfFeaturizer.load(tmp).vectorizer


def load_scorer(model: Location, section: LabelNamesSection) -> NameScorer:
    """The :class:`NameScorer` of the model folder at ``model`` and ``section``'s encoder, if any."""
    vectorizer = load_vectorizer(model)
    if section.encoder is None:
        return NameScorer(vectorizer)
    from pipeline.modeling.encoder_paths import local_encoder_path
    from pipeline.modeling.frozen import EmbeddingFeaturizer
    from pipeline.modeling.model import FROZEN, ModelConfig

    local_encoder_path(section.encoder)  # never a download
    cfg = ModelConfig(
        kind=FROZEN, encoder=section.encoder, pooling="mean", max_length=section.encoder_max_length
    )
    embedding = EmbeddingFeaturizer.fit(cfg, None)
    return NameScorer(vectorizer, embedding, section.encoder_weight)


def check_encoder(section: LabelNamesSection) -> None:
    """An InputError unless `evaluate.label_names.encoder` loads without the network (torch not imported)."""
    if section.encoder is None:
        return
    from pipeline.modeling.encoder_paths import local_encoder_path

    try:
        local_encoder_path(section.encoder)
    except (ImportError, OSError, ValueError) as e:
        raise InputError(f"evaluate.label_names.encoder: {e}") from e


def _batches(split: Location, columns: list[str], what: str) -> Iterator[pa.RecordBatch]:
    """The split's rows in blocks of ``BLOCK``, with a progress line every 30 s (an encoder takes minutes)."""
    import pyarrow.dataset as pads

    from pipeline.core.progress import PROGRESS_INTERVAL_S

    dataset = pads.dataset(split.path, filesystem=split.fs, format="parquet")
    total, done = dataset.count_rows(), 0
    t0 = last = time.perf_counter()
    for batch in dataset.to_batches(columns=columns, batch_size=BLOCK):
        yield batch
        done += batch.num_rows
        now = time.perf_counter()
        if now - last >= PROGRESS_INTERVAL_S and done < total:
            last = now
            log.info("label names, %s: %d / %d documents in %.0fs", what, done, total, now - t0)


def calibrate(
    scorer: NameScorer,
    names: Mapping[str, str],
    vocabulary: Sequence[str],
    split: Location,
    unseen: Sequence[str] = (),
    closed: tuple[int, int, int] | None = None,
) -> NameCalibration:
    """:func:`fit_calibration` on the prepared ``split`` (validation): the map on the named ``vocabulary``
    labels, the threshold on the ``unseen`` ones (those of :func:`unseen_named`) where the split holds one,
    against the model's own counts ``closed`` there (see :func:`fit_calibration`)."""
    seen = [lab for lab in vocabulary if lab in names]
    if not seen:
        return fit_calibration(np.zeros(BINS), np.zeros(BINS))
    both = [*seen, *unseen]
    column = {lab: j for j, lab in enumerate(both)}
    vectors = scorer.names([names[lab] for lab in both])
    s = len(seen)
    hist = {part: (np.zeros(BINS, np.int64), np.zeros(BINS, np.int64)) for part in ("seen", "unseen")}
    # One pass; the seen columns are [:s], the unseen [s:].
    for batch in _batches(split, ["text", "labels"], "calibrating on " + split.uri):
        cos = scorer.similarity(batch.column("text").to_pylist(), vectors)
        cols = [[column[x] for x in (ls or []) if x in column] for ls in batch.column("labels").to_pylist()]
        parts = {
            "seen": (cos[:, :s], [[c for c in r if c < s] for r in cols]),
            "unseen": (cos[:, s:], [[c - s for c in r if c >= s] for r in cols]),
        }
        for part, block in parts.items():
            p, n = cosine_histograms([block])
            hist[part][0][:] += p
            hist[part][1][:] += n
    (seen_pos, seen_neg), (unseen_pos, unseen_neg) = hist["seen"], hist["unseen"]
    return fit_calibration(seen_pos, seen_neg, unseen_pos, unseen_neg, closed)


def score_unseen(
    scorer: NameScorer,
    names: Mapping[str, str],
    unseen: Sequence[str],
    calibration: NameCalibration,
    split: Location,
    order: Sequence[str],
    vocabulary_top: np.ndarray,
) -> tuple[dict[str, int], dict[str, int], dict[str, float | None]]:
    """:func:`zero_shot_figures` of the ``unseen`` labels on the prepared ``split``, scored block by block
    (memory: a block of documents x unseen labels). ``vocabulary_top`` [N, <= 5]: each document's top
    vocabulary scores (``blocks.top_scores``), rows in the document order ``order`` (ids)."""
    vectors = scorer.names([names[lab] for lab in unseen])
    column = {lab: j for j, lab in enumerate(unseen)}
    row = {doc_id: i for i, doc_id in enumerate(order)}
    if len(row) != len(order) or vocabulary_top.shape[0] != len(order):
        raise ValueError("document ids must be unique and match the vocabulary scores' rows")
    sums = _sums(len(unseen))
    seen_rows = 0
    for batch in _batches(split, ["id", "text", "labels"], "scoring " + split.uri):
        at = [row[str(i)] for i in batch.column("id").cast(pa.string()).to_pylist()]
        probs = calibration.probability(scorer.similarity(batch.column("text").to_pylist(), vectors))
        positives = [
            sorted({column[x] for x in (ls or []) if x in column})
            for ls in batch.column("labels").to_pylist()
        ]
        sums.add(positives, probs, probs >= calibration.threshold, vocabulary_top[at])
        seen_rows += len(at)
    if seen_rows != len(order):
        raise ValueError(f"{split.uri}: {seen_rows} documents, but {len(order)} were scored")
    return sums.figures(unseen)


def unseen_named(names: Mapping[str, str], vocabulary: Sequence[str]) -> list[str]:
    """The named labels outside the vocabulary, sorted (the columns of the zero-shot scores)."""
    known = set(vocabulary)
    return sorted(label for label in names if label not in known)


__all__ = [
    "BINS",
    "NAMED_KINDS",
    "calibrate",
    "check_encoder",
    "check_kind",
    "load_scorer",
    "load_vectorizer",
    "score_unseen",
    "NameCalibration",
    "NameScorer",
    "cosine_histograms",
    "cosines",
    "fit_calibration",
    "name_vectors",
    "id_names",
    "read_label_names",
    "unseen_named",
    "zero_shot_figures",
]
