"""Long-tail quality at the label-space sizes users bring: our models through the real stages, beside the
linear and extreme-classification peers on the same prepared split.

    .venv/bin/python -m benchmarks.longtail           # every dataset -> benchmarks/results/longtail.json
    .venv/bin/python -m benchmarks.longtail --dataset eurlex57k --rows db-sparse
    .venv/bin/python -m benchmarks.longtail --smoke   # synthetic corpus, seconds, temp folder

Each dataset has a config, benchmarks/configs/longtail/<dataset>.yaml: a pipeline config plus a `bench:`
section naming the rows. An own row is a set of `--set` overrides on that config, run through the pipeline's
own stages, in order: `run_prepare` (once per dataset, shared by its rows), `run_train`, `run_evaluate`
(thresholds fitted on validation, metrics on test): the figures are those of the run's `report/metrics.json`.
A row written `{model_of: <row>, set: [evaluate.*]}` evaluates that earlier row's trained model (same seed)
with other threshold settings instead of training one; its train_seconds are that model's.
A peer row runs the peer's own method on TF-IDF features (scikit-learn's defaults, LibMultiLabel's
`Preprocessor`) of the same prepared train split and is measured on the same test split with the same
`pipeline.evaluation.metrics.evaluate` (training-label vocabulary, zero_division=0, the run's groups):

- `libmultilabel-1vsrest`: LibMultiLabel's linear one-vs-rest (liblinear, library defaults), decision
  value > 0;
- `libmultilabel-thresholding`: the same with the per-label offsets LibMultiLabel's `train_thresholding`
  learns by 3-fold cross-validation on the train split, decision value (offset included) > 0;
- `napkinxc-plt`: napkinXC's probabilistic label tree (library defaults), probability >= 0.5;
- `pecos-xrlinear`: PECOS's XR-Linear (in its own environment), its top `bench.pecos_top_k` labels per
  document (default 100) from a beam search of width `bench.pecos_beam_size` over its label tree (default
  10, PECOS's own; both recorded in its rows as `top_k` and `beam_size`), score >= 0.5.

`bench.peer_thresholds: {<suffix>: [evaluate.*]}` adds, per peer, a row `<peer>+<suffix>`: the same fitted
peer's test scores decided by per-label thresholds fitted on its validation scores, with the config's
evaluate settings plus these overrides (`pipeline.evaluation.thresholds.fit_thresholds`, as our rows),
so that an F1 lead can be told apart from the thresholds' share of it. Its train_seconds are the peer's;
threshold_seconds: scoring validation and fitting the thresholds.

Every row is one flat record: dataset, row, device, seed, micro_f1, macro_f1, tail_f1, macro_ap, p_at_1,
p_at_5, ndcg_at_5, psp_at_5, predicted_to_true (predicted positives / true positives on test),
train_seconds, peak_rss_mb (the largest resident set summed over this process and the Ray processes it
started, sampled every 0.25 s: an upper bound, shared pages count once per process); own rows add
evaluate_seconds and evaluate_peak_rss_driver_mb (the evaluate stage's driver alone). The JSON adds the
command, git SHA, versions, machine and each dataset's settings.

Data are read from the corpora folder (benchmarks/corpora.py, never copied); a dataset whose folder is
absent is skipped with its reason. Work goes to a temporary folder unless --work-dir is given (kept and
reused: prepared splits and TF-IDF features are not computed twice).
"""
