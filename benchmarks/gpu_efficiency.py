"""GPU efficiency of training: samples/s of an all-MiniLM-L6-v2-shaped encoder (6 layers, 384 hidden, 12
heads, 1,536 feed-forward, randomly initialised: the rate does not depend on the weights, and nothing is
downloaded) against batch size and sequence length in bf16; the train stage's Ray Train loop beside a bare
Hugging Face loop at the bare loop's saturating batch, in matched pairs (bare, Ray, bare); and the share of
the chip's bf16 peak (6 x parameters x tokens/s against the datasheet figure, `--peak-tflops`).

    python -m benchmarks.gpu_efficiency --out benchmarks/results/gpu_efficiency.json   # on a GPU machine
    python -m benchmarks.gpu_efficiency --smoke --out /tmp/gpu_smoke.json             # CPU, tiny sizes

The results file is rewritten after every measurement, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common.paths import DEMO_CONFIG
from benchmarks.common.provenance import run_header, utc_now
from benchmarks.common.results import write_json

MODULE = "benchmarks.gpu_efficiency"
#: all-MiniLM-L6-v2's shape (the packaged encoder of `model.encoder: minilm`).
MINILM = {"hidden_size": 384, "num_layers": 6, "num_heads": 12, "intermediate_size": 1536}
TINY = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64}
#: NVIDIA's dense bf16 datasheet figure for the H100 and H200 SXM (TFLOP/s, without sparsity).
H100_H200_BF16_TFLOPS = 989.4
#: A batch is saturating when its rate is within this share of the best batch's at the same length.
SATURATION = 0.95


def saturating_batch(rates: dict[int, float], share: float = SATURATION) -> int:
    """The smallest batch whose samples/s is at least `share` of the best batch's."""
    if not rates:
        raise ValueError("no measured batch")
    best = max(rates.values())
    return min(b for b, r in rates.items() if r >= share * best)


def model_tflops(params: int, tokens_per_s: float) -> float:
    """Training TFLOP/s by the 6 x parameters x tokens rule (forward 2, backward 4 per parameter, token)."""
    return 6.0 * params * tokens_per_s / 1e12


def bare_classifier(vocab: int, num_labels: int, shape: dict[str, int], max_length: int) -> Any:
    """A BertModel with a mean-pooled linear head: the model a user writes in a plain Hugging Face loop (the
    train stage's tiny-bert classifier has the same layers)."""
    import torch
    from transformers import BertConfig, BertModel

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            config = BertConfig(
                vocab_size=vocab,
                hidden_size=shape["hidden_size"],
                num_hidden_layers=shape["num_layers"],
                num_attention_heads=shape["num_heads"],
                intermediate_size=shape["intermediate_size"],
                max_position_embeddings=max(512, max_length),
            )
            self.encoder = BertModel(config, add_pooling_layer=False)
            self.dropout = torch.nn.Dropout(0.1)
            self.head = torch.nn.Linear(shape["hidden_size"], num_labels)

        def forward(self, input_ids, attention_mask):
            states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            return self.head(self.dropout(pooled))

    return Model()


def bare_rate(model: Any, batch: int, seq: int, num_labels: int, steps: int, warmup: int) -> float:
    """Samples/s of `steps` AdamW steps (after `warmup`) on random token ids, bf16 autocast on a GPU."""
    import contextlib

    import torch

    device = next(model.parameters()).device
    cuda = device.type == "cuda"
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=cuda)
    vocab = model.encoder.config.vocab_size
    ids = torch.randint(1, vocab, (batch, seq), device=device)
    mask = torch.ones_like(ids)
    y = (torch.rand(batch, num_labels, device=device) < 0.02).float()
    loss_fn = torch.nn.BCEWithLogitsLoss()
    model.train()
    t0 = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        amp = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()
        with amp:
            logits = model(ids, mask)
        loss_fn(logits.float(), y).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if cuda:
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t0)


def count_params(model: Any) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    embeddings = sum(p.numel() for p in model.encoder.embeddings.parameters())
    return {"params": total, "params_without_embeddings": total - embeddings}


def _point(rate: float, seq: int, params: dict[str, int], peak: float) -> dict[str, Any]:
    tokens = rate * seq
    tflops = model_tflops(params["params"], tokens)
    return {
        "samples_per_s": round(rate, 1),
        "tokens_per_s": round(tokens),
        "tflops": round(tflops, 2),
        "share_of_peak": round(tflops / peak, 4),
        "share_of_peak_without_embeddings": round(
            model_tflops(params["params_without_embeddings"], tokens) / peak, 4
        ),
    }


def ray_rate(
    work: Path, seq: int, batch: int, docs: int, epochs: int, shape: dict, gpu: bool
) -> dict[str, Any]:
    """The train stage (run_prepare, then run_train: Ray Data ingest, the TorchTrainer's worker loop) on a
    synthetic corpus whose documents fill `seq` tokens; its steady epochs' samples/s (training batches,
    input waits included; validation and checkpoints excluded)."""
    from pipeline.core.config import load_config
    from pipeline.data.prepare import run_prepare
    from pipeline.training.train import run_train

    name = f"ray-{seq}-{batch}"
    cfg = load_config(
        DEMO_CONFIG,
        [
            f"run.output={work / 'runs'}",
            f"run.name={name}",
            f"data.synthetic.num_docs={docs}",
            f"data.synthetic.words_per_doc={seq}",
            f"model.max_length={seq}",
            *(f"model.{k}={v}" for k, v in shape.items()),
            f"train.epochs={epochs}",
            f"train.batch_size={batch}",
            f"train.eval_batch_size={batch}",
            "train.lr=1e-4",
            "train.patience=0",
            "train.max_failures=0",
            f"train.use_gpu={str(gpu).lower()}",
            f"train.precision={'bf16' if gpu else 'fp32'}",
            f"train.cpus_per_worker={4 if gpu else 1}",
        ],
    )
    t0 = time.perf_counter()
    run_prepare(cfg)
    prepare_s = time.perf_counter() - t0
    summary = run_train(cfg)
    history = summary["history"]
    steady = history[1:] if len(history) > 1 else history
    return {
        "samples_per_s": statistics.median(float(h["samples_per_s"]) for h in steady),
        "epochs": [round(float(h["samples_per_s"]), 1) for h in history],
        "input_wait_fraction": [round(float(h.get("input_wait_fraction", 0.0)), 3) for h in history],
        "prepare_seconds": round(prepare_s, 1),
        "train_seconds": round(time.perf_counter() - t0 - prepare_s, 1),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from benchmarks.common.ray_session import benchmark_ray

    gpu = torch.cuda.is_available()
    device = torch.device("cuda" if gpu else "cpu")
    shape = TINY if args.smoke else MINILM
    seqs = [int(s) for s in args.seq.split(",")]
    batches = [int(b) for b in args.batch.split(",")]
    doc = {
        **run_header(MODULE, None, ["torch", "transformers", "ray"]),
        "device": "gpu" if gpu else "cpu",
        "gpu": torch.cuda.get_device_name(0) if gpu else None,
        "shape": shape,
        "precision": "bf16" if gpu else "fp32",
        "peak_tflops": args.peak_tflops,
        "num_labels": args.labels,
        "steps": args.steps,
        "warmup": args.warmup,
        "saturation": SATURATION,
        "sweep": [],
        "pairs": [],
        "complete": False,
    }
    out = Path(args.out)
    write_json(out, doc)
    torch.manual_seed(0)
    model = bare_classifier(args.vocab, args.labels, shape, max(seqs)).to(device)
    params = count_params(model)
    doc["params"] = params
    saturating: dict[int, int] = {}
    for seq in seqs:  # the bare sweep
        rates: dict[int, float] = {}
        for batch in batches:
            try:
                rate = bare_rate(model, batch, seq, args.labels, args.steps, args.warmup)
            except torch.OutOfMemoryError:
                doc["sweep"].append({"seq": seq, "batch": batch, "oom": True})
                torch.cuda.empty_cache()
                break
            rates[batch] = rate
            doc["sweep"].append({"seq": seq, "batch": batch, **_point(rate, seq, params, args.peak_tflops)})
            print(f"bare seq {seq} batch {batch}: {rate:.0f} samples/s", flush=True)
            write_json(out, doc)
        saturating[seq] = saturating_batch(rates)
    doc["saturating_batch"] = {str(k): v for k, v in saturating.items()}
    write_json(out, doc)
    ray_seqs = [int(s) for s in args.ray_seq.split(",")] if args.ray_seq else seqs
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="gpu-eff-"))
    with benchmark_ray(None, include_dashboard=True):
        for seq in ray_seqs:
            batch = saturating[seq]
            before = bare_rate(model, batch, seq, args.labels, args.steps, args.warmup)
            # Enough documents for epochs of about `epoch_seconds` at the bare rate (70% of them train).
            docs = max(args.min_docs, min(args.max_docs, math.ceil(before * args.epoch_seconds / 0.7)))
            ray = ray_rate(work, seq, batch, docs, args.ray_epochs, shape, gpu)
            after = bare_rate(model, batch, seq, args.labels, args.steps, args.warmup)
            bare = (before + after) / 2
            doc["pairs"].append(
                {
                    "seq": seq,
                    "batch": batch,
                    "docs": docs,
                    "bare_before": round(before, 1),
                    "bare_after": round(after, 1),
                    "ray": ray,
                    "ratio": round(ray["samples_per_s"] / bare, 4),
                    "ratio_range": [
                        round(ray["samples_per_s"] / max(before, after), 4),
                        round(ray["samples_per_s"] / min(before, after), 4),
                    ],
                    "ray_point": _point(ray["samples_per_s"], seq, params, args.peak_tflops),
                }
            )
            print(f"pair seq {seq} batch {batch}: ratio {doc['pairs'][-1]['ratio']:.3f}", flush=True)
            write_json(out, doc)
    doc["complete"] = True
    doc["finished"] = utc_now()
    return doc


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m " + MODULE, description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="benchmarks/results/gpu_efficiency.json")
    p.add_argument("--smoke", action="store_true", help="tiny model and sizes (a CPU check of the code)")
    p.add_argument("--seq", default="128,256,512", help="sequence lengths of the bare sweep")
    p.add_argument("--batch", default="16,32,64,128,256,512,1024", help="batch sizes of the bare sweep")
    p.add_argument("--ray-seq", default="128,512", help="lengths of the matched pairs (default: the sweep's)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument(
        "--labels", type=int, default=40, help="labels of the head (the synthetic corpus' default)"
    )
    p.add_argument(
        "--vocab", type=int, default=8000, help="the bare model's vocabulary (tiny-bert's default)"
    )
    p.add_argument("--ray-epochs", type=int, default=3)
    p.add_argument("--epoch-seconds", type=float, default=8.0, help="target length of a Ray epoch")
    p.add_argument("--min-docs", type=int, default=2000)
    p.add_argument("--max-docs", type=int, default=150_000)
    p.add_argument("--peak-tflops", type=float, default=H100_H200_BF16_TFLOPS)
    p.add_argument("--work-dir", default=None)
    args = p.parse_args(argv)
    if args.smoke:
        args.seq, args.batch, args.ray_seq = "16,32", "4,8", "16"
        args.steps, args.warmup, args.ray_epochs, args.max_docs, args.min_docs = 2, 1, 2, 300, 300
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    doc = run(args)
    write_json(Path(args.out), doc)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
