"""benchmarks/label_subset: a label subset trains exactly as those labels in the full model, and the tool runs
end to end on the long-tail smoke config."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from benchmarks import label_subset as tool
from benchmarks.longtail import driver
from pipeline.modeling.losses import build_loss

COUNTS = np.array([40, 12, 7, 3, 2, 1, 25])
N = 60


def _targets(rows: int, seed: int) -> np.ndarray:
    y = (np.random.default_rng(seed).random((rows, len(COUNTS))) < COUNTS / N).astype(np.float32)
    y[0] = 0  # a document without labels (DB's P_k = 0)
    return y


@pytest.mark.parametrize("name", ["db", "bce", "focal"])
def test_subset_loss_has_the_full_losss_gradients_on_its_labels(name):
    y = torch.from_numpy(_targets(9, 0))
    logits = torch.randn(9, len(COUNTS), dtype=torch.float32, requires_grad=True)
    build_loss(name, COUNTS, N)(logits, y).backward()
    cols = torch.tensor([1, 4, 5])
    sub = logits.detach()[:, cols].clone().requires_grad_(True)
    tool.subset_loss(build_loss(name, COUNTS, N, reduction="none"), sub, y, cols).backward()
    torch.testing.assert_close(sub.grad, logits.grad[:, cols], rtol=1e-6, atol=1e-9)


def _bench_config(overrides: list[str], tmp_path):
    bench = driver.load_bench(driver.CONFIGS / f"{driver.SMOKE}.yaml")
    return driver.row_config(bench, tmp_path, tmp_path, "base", overrides)


def test_a_subset_trains_as_those_labels_in_the_full_model(tmp_path):
    """Same batches, same settings: the subset's weights and biases are the full model's columns (AdamW,
    the per-label L2, weight decay and DB's P_k over every label of a document included)."""
    cfg = _bench_config(
        ["loss.name=db", "train.l2=1.0e-2", "train.weight_decay=0.01",
         "train.epochs=2", "train.batch_size=16", "train.warmup_ratio=0.2", "train.lr=0.1"],
        tmp_path,
    )  # fmt: skip
    rng = np.random.default_rng(1)
    features, width = 30, 5

    def split(rows: int, seed: int) -> tool.Split:
        ids = rng.integers(0, features, size=(rows, width)).astype(np.int32)
        return tool.Split(
            ids, rng.random((rows, width), dtype=np.float32), sp.csr_matrix(_targets(rows, seed))
        )

    train, validation = split(N, 2), split(20, 3)
    inputs = SimpleNamespace(
        labels=[f"l{j}" for j in range(len(COUNTS))],
        counts=COUNTS.tolist(),
        num_docs=N,
        featurizer=SimpleNamespace(num_features=features),
    )
    params = {"mu": 0.1}
    full, _ = tool.train_subset(cfg, inputs, params, np.arange(len(COUNTS)), train, validation)
    cols = np.array([0, 3, 5])
    sub, trained = tool.train_subset(cfg, inputs, params, cols, train, validation)
    assert len(trained["val_macro_ap_by_epoch"]) == 2
    assert full.head.bag.weight.abs().sum() > 0  # it trained
    torch.testing.assert_close(sub.head.bag.weight, full.head.bag.weight[:, cols], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(sub.head.bias, full.head.bias[cols], rtol=1e-4, atol=1e-6)


def test_settings_that_couple_labels_are_refused(tmp_path):
    with pytest.raises(ValueError, match="grad_clip=1.0"):
        tool.check_exact(_bench_config(["train.grad_clip=1.0"], tmp_path))
    with pytest.raises(ValueError, match="sampling=class-aware"):
        tool.check_exact(_bench_config(["train.sampling=class-aware"], tmp_path))
    tool.check_exact(_bench_config([], tmp_path))


def test_labels_are_drawn_by_their_seed():
    a = tool.pick_labels(100, 10, 0)
    assert a.tolist() == tool.pick_labels(100, 10, 0).tolist() and len(set(a)) == 10
    assert a.tolist() != tool.pick_labels(100, 10, 1).tolist()
    assert tool.pick_labels(5, 10, 0).tolist() == [0, 1, 2, 3, 4]


def test_full_model_figures_follow_the_reports_conventions(tmp_path):
    table = tmp_path / "per_label.csv"
    table.write_text(
        "label,group,support,f1,ap\n"
        "a,tail,2,0.5,0.7\n"
        "b,head,0,0.0,nan\n"  # no test positive: in macro-F1 (as 0), not in macro AP
        "c,tail,1,1.0,1.0\n"
        "d,head,4,0.2,0.3\n"
    )
    assert tool.full_model_figures(table, ["a", "b", "c"]) == {
        "labels": 3,
        "macro_ap": 0.85,
        "macro_f1": 0.5,
        "tail_f1": 0.75,
    }
    assert tool.full_model_figures(tmp_path / "absent.csv", ["a"]) is None


def test_smoke_run_writes_a_row_per_training_row(ray_session, tmp_path):
    out, work = tmp_path / "subset.json", tmp_path / "work"
    common = ["--smoke", "--labels", "6", "--work-dir", str(work), "--out", str(out)]
    first = tool.main([*common, "--rows", "db-sparse", "--full-run"])["rows"][0]
    # The smoke config's peer_thresholds decide (thresholds-prior); no whole-label run in this work folder.
    assert first["thresholds-prior"]["full_model"] is None
    # A whole-label run, as benchmarks.longtail leaves it (thresholds-prior: the row's -prior run), is read
    # back on the subset's labels; the row measured again replaces the first.
    report = work / "smoke" / "db-sparse-prior" / "report"
    report.mkdir(parents=True)
    labels = json.loads((work / "smoke" / "base" / "label_stats.json").read_text())["labels"]
    rows = "".join(f"{lab},{'tail' if i % 2 else 'head'},1,{i % 2},0.5\n" for i, lab in enumerate(labels))
    (report / "per_label.csv").write_text("label,group,support,f1,ap\n" + rows)
    tool.main([*common, "--rows", "db-sparse", "--full-run"])
    # A note written into the file by hand stays with its rows.
    out.write_text(json.dumps({**json.loads(out.read_text()), "note": "how these rows were made"}))
    doc = tool.main([*common, "--rows", "bce-sparse"])
    assert json.loads(out.read_text())["rows"] == doc["rows"]
    assert doc["note"] == "how these rows were made"
    assert [r["row"] for r in doc["rows"]] == ["db-sparse", "bce-sparse"]
    db, bce = doc["rows"]
    full = db["thresholds-prior"]["full_model"]
    assert full["labels"] == 6 and full["macro_ap"] == 0.5 and full["tail_f1"] == 1.0, full
    assert "full_model" not in bce["thresholds-prior"]
    for r in doc["rows"]:
        assert r["labels"] == 6 and r["set"] == [] and r["train_seconds"] > 0
        assert len(r["val_macro_ap_by_epoch"]) == 3  # the smoke config's epochs
        figures = r["thresholds-prior"]
        assert all(0.0 <= figures[k] <= 1.0 for k in ("macro_ap", "macro_f1", "micro_f1"))
        assert figures["macro_ap"] > 0.3, figures  # its labels follow their words (chance: about 0.1)
    # Each split's features are kept for the next invocation.
    assert len(list((work / "smoke" / "label_subset").glob("*/*.npz"))) == 3
    with pytest.raises(SystemExit, match="not training rows"):
        tool.main([*common, "--rows", "db-sparse-prior"])
    # A --set variant is not what the whole-label run trained: not compared with it.
    with pytest.raises(SystemExit, match="made without --set"):
        tool.main([*common, "--rows", "db-sparse", "--full-run", "--set", "train.lr=0.1"])
