"""Our iterative stratification (split.py): exact ratios, determinism, the first-split guarantee,
label-free rows, Arrow input, and quality against scikit-multilearn (the implementation it replaced).

Reuters-on-the-real-corpus "beats random" lives in tests/test_prepare.py; here Reuters is compared with
scikit-multilearn.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest
import scipy.sparse as sp

from benchmarks.split_scaling import RATIOS, reuters_labels, skmultilearn_assign, zipf_labels
from pipeline.data.labels import csr_from_arrow
from pipeline.data.split import label_matrix, proportion_error, stratified_assign
from tests.conftest import ROOT, shared_dataset

pytestmark = pytest.mark.timeout(120)


def test_exact_ratios_on_a_simple_case():
    # 100 rows of label 0, 60 of label 1 (20 of them also label 0), 40 label-free rows.
    rows = [[0]] * 80 + [[0, 1]] * 20 + [[1]] * 40 + [[]] * 40
    y = label_matrix(rows, 2)
    ratios = {"train": 0.6, "validation": 0.2, "test": 0.2}
    names = stratified_assign(y, ratios, seed=3)
    sizes = Counter(names.tolist())
    assert sizes == {"train": 108, "validation": 36, "test": 36}
    for label, total in ((0, 100), (1, 60)):
        col = y[:, label].toarray().ravel().astype(bool)
        got = Counter(names[col].tolist())
        assert got == {s: round(r * total) for s, r in ratios.items()}, (label, got)


def test_same_seed_same_assignment_other_seed_differs():
    y = zipf_labels(2000, 100, 1.5, seed=1)
    a = stratified_assign(y, RATIOS, seed=7)
    assert (stratified_assign(y, RATIOS, seed=7) == a).all()
    assert (stratified_assign(y, RATIOS, seed=8) != a).any()
    # numpy's global generator is neither used nor disturbed.
    np.random.seed(0)
    before = np.random.random()
    np.random.seed(0)
    stratified_assign(y, RATIOS, seed=7)
    assert np.random.random() == before


def test_every_label_in_the_first_split():
    # Mostly singletons and pairs, and a first split that is the smallest: without the guarantee many labels
    # would land only in the larger splits.
    y = zipf_labels(600, 400, 1.5, seed=2)
    ratios = {"train": 0.1, "validation": 0.45, "test": 0.45}
    names = stratified_assign(y, ratios, seed=0)
    present = np.asarray(y.sum(0)).ravel() > 0
    in_train = np.asarray(y[names == "train"].sum(0)).ravel() > 0
    assert np.all(in_train[present])


def test_label_free_rows_are_all_assigned():
    y = label_matrix([[0], [1], [], [0, 1], [], [], [2], [], []] * 30, 3)
    names = stratified_assign(y, RATIOS, seed=0)
    assert len(names) == y.shape[0] and set(names.tolist()) <= set(RATIOS)
    empty = np.diff(y.indptr) == 0
    # Label-free rows go wherever the split sizes fall short: the sizes land within a row of the ratios.
    assert abs(int((names == "train").sum()) - 0.7 * y.shape[0]) <= 1
    assert set(names[empty].tolist()) == set(RATIOS)
    only_empty = stratified_assign(sp.csr_matrix((10, 4), dtype=np.int8), RATIOS, seed=0)
    assert Counter(only_empty.tolist()) == {"train": 7, "validation": 2, "test": 1} or Counter(
        only_empty.tolist()
    ) == {"train": 7, "validation": 1, "test": 2}


def test_too_few_rows_and_bad_ratios_raise():
    with pytest.raises(ValueError, match="cannot split"):
        stratified_assign(label_matrix([[0], [0]], 1), RATIOS, seed=0)
    with pytest.raises(ValueError, match="non-negative"):
        stratified_assign(label_matrix([[0]] * 5, 1), {"train": 1.0, "test": -0.1}, seed=0)


def test_label_matrix_and_csr_from_arrow_agree():
    rows = [["b", "a"], [], ["c", "a", "a"], ["b"]]
    vocab = ["a", "b", "c"]
    lookup = {lab: i for i, lab in enumerate(vocab)}
    expected = label_matrix([[lookup[lab] for lab in r] for r in rows], 3)
    assert expected[2].nnz == 2  # a label listed twice counts once
    arr = pa.array(rows, pa.list_(pa.string()))
    for labels in (
        arr,
        pa.chunked_array([arr.slice(0, 2), arr.slice(2)]),
        arr.cast(pa.large_list(pa.string())),
    ):
        got = csr_from_arrow(labels, vocab)
        assert got.shape == (4, 3) and (got != expected).nnz == 0
    with pytest.raises(KeyError, match="not in the label vocabulary"):
        csr_from_arrow(arr, ["a", "b"])
    with pytest.raises(ValueError, match="out of range"):
        label_matrix([[0, 3]], 3)


def test_proportion_error_no_worse_than_skmultilearn_on_zipf():
    y = zipf_labels(3000, 300, 2.0, seed=0)
    ours = proportion_error(y, stratified_assign(y, RATIOS, seed=0), RATIOS)
    ref = proportion_error(y, skmultilearn_assign(y, RATIOS, seed=0), RATIOS)
    assert ours["mean_abs_error"] <= 1.1 * ref["mean_abs_error"], (ours, ref)
    assert ours["zero_desired_gt0"] <= ref["zero_desired_gt0"], (ours, ref)
    assert ours["zero_desired_ge1"] <= ref["zero_desired_ge1"], (ours, ref)
    assert ours["size_abs_error"] <= 0.01, ours


def test_proportion_error_no_worse_than_skmultilearn_on_reuters():
    shared_dataset("reuters21578")  # skips with the reason when the corpora folder is absent
    y = reuters_labels()
    ours = proportion_error(y, stratified_assign(y, RATIOS, seed=0), RATIOS)
    ref = proportion_error(y, skmultilearn_assign(y, RATIOS, seed=0), RATIOS)
    assert ours["mean_abs_error"] <= 1.1 * ref["mean_abs_error"], (ours, ref)
    assert ours["zero_desired_gt0"] <= ref["zero_desired_gt0"], (ours, ref)


def test_benchmark_smoke_mode(tmp_path):
    out = tmp_path / "smoke.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.split_scaling", "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert set(result["versions"]) == {"python", "numpy", "scipy", "scikit-multilearn"}
    for entry in result["results"]:
        assert entry["seconds"] is not None and entry["peak_rss_mb"] > 0, entry
        assert entry["labels"] == 50 and entry["labels_per_doc"] > 1
    assert "quality" in result["results"][0]["skmultilearn"]
    assert result["dense"]["seconds"] is not None
    assert "ours" in result["quality"]["synthetic_zipf"]
