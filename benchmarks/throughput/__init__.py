"""What Ray costs: each stage's throughput through the pipeline against a single-process baseline.

    .venv/bin/python -m benchmarks.throughput [--rows 5000000] [--only stats,train,score,scale] [--out PATH]
    .venv/bin/python -m benchmarks.throughput --smoke          # tiny sizes, one Ray start, temp output

Sections of benchmarks/results/throughput.json (each one ratio, both sides measured in this one invocation):

- stats: the prepare stage's label statistics (`read_normalised` + `collect_partials`: Ray Data reads the
  shards, normalises every row and folds per-block partials) against one polars query over the same shards
  (per-split documents, label counts and summed cardinality); both results must be identical.
  Also an attribution of the Ray figure: `Normalise` and `block_partial` timed on one shard in-process,
  without Ray (what the map_batches functions cost before any Ray overhead).
- train: steady-state samples/s of Ray Train (`make_trainer` -> TorchTrainer, 1 worker) against a bare PyTorch
  loop: the same model (`build_model`), the same loop config (loss, optimiser, schedule, clipping), the same
  tokenised tensors and batch size, the same torch thread count. Epoch 0 is excluded; start-up is reported.
- score: steady-state documents/s of Ray Data batch scoring (`score_dataset`, one `Scorer` actor) against
  `load_model(...).predict_scores` in a loop with the same batch size. Ray's steady rate is rows / the
  Scorer operator's task time from Ray Data's own metrics; a two-point estimate and the start-up are
  reported beside it (see score.phase_score_ray). The score sums of both sides must agree.
- train and score run each side --repeats times (default 3), Ray and bare child processes alternating, and
  report each side's median run (see driver._groups: this machine's speed drifts over minutes).
- split: a reference to benchmarks/results/split_scaling.json (benchmarks/split_scaling.py), not re-run here.
- scale: training samples/s with 1 and 2 workers on a two-node ray.cluster_utils.Cluster (1 CPU per node)
  and a model that predicts N nodes.

Every measured side runs in a child process of its own (its ru_maxrss is that side's driver peak) with the
machine otherwise idle; Ray's workers are separate processes again, so a sampler also records the peak RSS of
every process the child started (raylet, GCS, dashboard, workers; that sum counts shared object-store pages
once per process mapping them). With --smoke all phases share one child and one Ray start (the two-node
cluster): ru_maxrss is then the child's high-water mark so far, and `shared_process_with` lists the earlier
phases. Torch runs --threads threads (default 1) on both sides and the Hugging Face tokenizer one thread.
Both sides run at the niceness Ray gives its workers (15 by default; see niceness._adopt_ray_niceness): in
--smoke the shared child takes it at the first bare phase, which only smoke's own figures feel.

Modules: schedule (sections, sizes, phases), driver (the child processes and the document), context (what a
phase is handed: Ray, memory sampler, config), niceness, one module per section (stats, train, score, scale)
and assemble (the sections from the phases' results).
"""
