"""The run's storage layout: where every stage reads and writes under ``<run.output>/<run.name>/``.

One typed object for the whole layout, so a path is spelled once. A local folder or an object-store prefix
alike (a :class:`~pipeline.core.storage.Location`)::

    <run>/data/                  the synthetic corpus (data.source: synthetic)
    <run>/prepared/<split>/      prepared Parquet shards (train, validation, test)
    <run>/label_stats.json       label statistics and groups
    <run>/profile.json           label statistics of the corpus as read (the profile stage)
    <run>/embeddings/<key>/      cached frozen-encoder embeddings (tune.mode: embeddings)
    <run>/tune/                  the Tune experiment; <run>/best_params.yaml its result
    <run>/checkpoints/           training checkpoints
    <run>/model/                 the trained model (model_config.json, weights, tokenizer)
    <run>/thresholds.json        per-label thresholds fitted on validation
    <run>/report/                metrics.json, per_label.csv, report.html, plots/
    <run>/predictions/<name>/    evaluate's validation/test scores and predict's outputs
    <run>/manifests/<stage>.json what each stage ran on (run_all)
    <run>/_EVALUATING.json       while evaluate replaces its outputs (or after it was killed doing so)
    <run>/current.json           the promoted model and thresholds (retrain; read by predict)
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.core.config import Config, StorageSection
from pipeline.core.errors import InputError
from pipeline.core.storage import Location, locate, read_json

#: A saved model folder's description (labels, encoder, loss, training history).
MODEL_CONFIG_FILE = "model_config.json"
#: Keys of a model's config file that describe it in reports and prediction records.
MODEL_DESCRIBING_KEYS = ("model_id", "kind", "encoder", "pooling", "max_length", "loss")
#: The run's pointer to its promoted model and thresholds (written by retraining, read by predict).
POINTER_FILE = "current.json"
#: Beside thresholds.json while the evaluate stage replaces its three outputs (predictions, thresholds,
#: report): they are one unit, and readers refuse them while it is there (:func:`require_evaluated`).
EVALUATING_FILE = "_EVALUATING.json"


def require_evaluated(folder: Location, what: str) -> None:
    """Refuse ``what`` (an output of the evaluate stage in ``folder``) while that folder's evaluate outputs
    are being replaced, or were left half-replaced by a killed evaluate: they may come from two
    evaluations."""
    marker = folder.join(EVALUATING_FILE)
    if not marker.exists():
        return
    try:
        started = read_json(marker)
    except (OSError, ValueError):
        started = {}
    who = ", ".join(f"{k} {started[k]}" for k in ("started", "host", "pid") if k in started)
    raise InputError(
        f"{what}: the evaluate stage of {folder.uri} is replacing its outputs or was interrupted doing so "
        f"({who or marker.uri}); its predictions, thresholds and report may come from two evaluations; "
        "run the evaluate stage again"
    )


@dataclass(frozen=True)
class RunLayout(Location):
    """A run's folder, with a property for each output in it (module docstring)."""

    @classmethod
    def of(cls, cfg: Config) -> RunLayout:
        """The layout of the run `cfg` names (`run.output` / `run.name`)."""
        return cls.at(cfg.run_uri, cfg.storage)

    @classmethod
    def at(cls, uri: str, storage: StorageSection | None = None) -> RunLayout:
        loc = locate(uri, storage)
        return cls(loc.fs, loc.path, loc.uri)

    @property
    def data(self) -> Location:
        return self.join("data")

    @property
    def prepared(self) -> Location:
        return self.join("prepared")

    def prepared_split(self, split: str) -> Location:
        return self.join("prepared", split)

    @property
    def label_stats(self) -> Location:
        return self.join("label_stats.json")

    @property
    def profile(self) -> Location:
        return self.join("profile.json")

    @property
    def embeddings(self) -> Location:
        return self.join("embeddings")

    @property
    def tune(self) -> Location:
        return self.join("tune")

    @property
    def best_params(self) -> Location:
        return self.join("best_params.yaml")

    @property
    def checkpoints(self) -> Location:
        return self.join("checkpoints")

    @property
    def model(self) -> Location:
        return self.join("model")

    @property
    def model_config(self) -> Location:
        return self.join("model", MODEL_CONFIG_FILE)

    @property
    def thresholds(self) -> Location:
        return self.join("thresholds.json")

    @property
    def report(self) -> Location:
        return self.join("report")

    @property
    def metrics(self) -> Location:
        return self.join("report", "metrics.json")

    @property
    def predictions(self) -> Location:
        return self.join("predictions")

    @property
    def pointer(self) -> Location:
        return self.join(POINTER_FILE)

    @property
    def evaluating(self) -> Location:
        return self.join(EVALUATING_FILE)

    @property
    def manifests(self) -> Location:
        return self.join("manifests")
