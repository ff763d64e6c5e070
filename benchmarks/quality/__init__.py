"""Test-set quality of every loss on Reuters-21578 and GoEmotions, beside LibMultiLabel's linear baseline.

    .venv/bin/python -m benchmarks.quality            # both datasets -> benchmarks/results/quality.json
    .venv/bin/python -m benchmarks.quality --smoke    # synthetic corpus + tiny-bert, seconds, temp folder

A CPU-feasible configuration of the pipeline (benchmarks/configs/<dataset>.yaml): the frozen pretrained
encoder all-MiniLM-L6-v2 (`model.encoder: minilm`, mean pooling) embeds every document once; then, per loss,
the classification head is trained on those features with `head_train.train_head` (the code path of
`tune.mode: embeddings`), the best epoch (train.checkpoint_metric on validation, as the train stage keeps)
scores validation and test, thresholds are fitted on validation with `thresholds.fit_thresholds`
(the evaluate stage's strategy and settings) and `metrics.evaluate` measures test with the groups of
label_stats.json. Rows:

- bce, weighted-bce, focal, cb (class-balanced), db: each loss at its library defaults (DB's mu data-driven);
- tuned: `tune.run_tune` (tune.mode=embeddings) over the loss families, its best_params replayed;
- libmultilabel-1vsrest / libmultilabel-thresholding: LibMultiLabel's linear one-vs-rest on TF-IDF features
  (libmultilabel.linear.Preprocessor, i.e. sklearn's TfidfVectorizer at its defaults) of the same prepared
  train split, decided at its default rule (decision value > 0) and by its own thresholding method
  (`train_thresholding`), measured with our `pipeline.evaluation.metrics.evaluate`.

The head's hyper-parameters (epochs, lr, batch size) are the same for all loss rows of a dataset: the
candidates of `bench.head_grid` are compared on validation only (mean best validation tuned macro-F1 of
`bench.selection_losses`), never on test. Data are read from the corpora folder (benchmarks/corpora.py;
never copied into the project); a dataset whose folder is absent is skipped with a message. Prepared splits
and embeddings go to a work folder outside the project (a fresh temporary one unless --work-dir is given,
which is then kept and reused).

Modules: config (the benchmark configs and the rows), features (the frozen encoder's embeddings), heads (the
loss rows and the tuned row: train, threshold, measure), peer (LibMultiLabel), report (table and targets) and
driver (every dataset into one JSON document).
"""
