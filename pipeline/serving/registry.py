"""Which model and thresholds the predict job uses: `predict.model` / `predict.thresholds` when set, else the
pair the run's pointer (`current.json`, written by retraining) names, else the run's own `model/` and
`thresholds.json`; both are checked to exist, to hold the same label vocabulary, and (where both record it) to
belong to the same model (`model_id`).
"""

from __future__ import annotations

import logging
import posixpath
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.core.config import Config, StorageSection
from pipeline.core.errors import InputError
from pipeline.core.layout import MODEL_CONFIG_FILE, RunLayout, require_evaluated
from pipeline.core.storage import Location, locate, read_json
from pipeline.evaluation.thresholds import ThresholdResult
from pipeline.serving.inputs import listed

log = logging.getLogger(__name__)


@dataclass
class ModelChoice:
    """The model folder and thresholds.json to use, where they came from, and what they hold."""

    model: Location
    thresholds: Location
    pointer: Location | None
    labels: list[str]
    model_config: dict[str, Any]
    thresholds_doc: dict[str, Any]
    fitted: ThresholdResult


def _ref(value: Any, run: RunLayout, pointer: Location, key: str, storage: StorageSection | None) -> Location:
    """A location named by the pointer: a URI or absolute path as it is; a relative path against the run
    folder, or (local runs, when only that exists) the working directory, which is what `Location.uri`
    gives for a relative run.output."""
    if not isinstance(value, str) or not value:
        raise InputError(f"{pointer.uri}: key '{key}' must be a non-empty path or URI, got {value!r}")
    if "://" in value or value.startswith("/"):
        return locate(value, storage)
    inside = run.join(value)
    if not run.is_local or inside.exists():
        return inside
    outside = locate(value, storage)
    return outside if outside.exists() else inside


def choose_model(cfg: Config, run: RunLayout) -> ModelChoice:
    """Resolve predict.model / predict.thresholds (explicit, else the run's current.json, else <run>/model
    and <run>/thresholds.json), check both exist and were fitted for the same labels."""
    pcfg, storage = cfg.predict, cfg.storage
    pointer: Location | None = None
    from_pointer: dict[str, Any] = {}
    ptr = run.pointer
    if pcfg.model is None and ptr.exists():  # the pointer names a model and its thresholds as a pair
        pointer = ptr
        try:
            from_pointer = read_json(ptr)
        except ValueError as err:
            raise InputError(f"{ptr.uri}: not valid JSON ({err})") from None
        if not isinstance(from_pointer, dict) or not {"model", "thresholds"} <= set(from_pointer):
            raise InputError(
                f"{ptr.uri}: expected a JSON object with keys 'model' and 'thresholds' (written by the "
                f"retrain stage), got {from_pointer!r:.200}"
            )

    if pcfg.model is not None:
        model, model_from = locate(pcfg.model, storage), f"predict.model ({pcfg.model})"
        model_hint = "fix predict.model or run the train stage"
    elif pointer is not None:
        model = _ref(from_pointer["model"], run, pointer, "model", storage)
        model_from, model_hint = (
            f"{pointer.uri} (key 'model')",
            "run the retrain stage again or set predict.model",
        )
    else:
        model, model_from = run.model, "the run's default model folder"
        model_hint = "run the train stage first (or set predict.model)"
    if pcfg.thresholds is not None:
        thresholds, thr_from = locate(pcfg.thresholds, storage), f"predict.thresholds ({pcfg.thresholds})"
        thr_hint = "fix predict.thresholds or run the evaluate stage"
    elif pointer is not None:
        thresholds = _ref(from_pointer["thresholds"], run, pointer, "thresholds", storage)
        thr_from = f"{pointer.uri} (key 'thresholds')"
        thr_hint = "run the retrain stage again or set predict.thresholds"
    elif pcfg.model is not None:
        # An explicit model folder: the thresholds.json beside it (<run>/model -> <run>/thresholds.json).
        thresholds = locate(
            posixpath.join(posixpath.dirname(pcfg.model.rstrip("/")), "thresholds.json"), storage
        )
        thr_from = "the thresholds.json beside predict.model"
        thr_hint = "run the evaluate stage for that model or set predict.thresholds"
    else:
        thresholds, thr_from = run.thresholds, "the run's default thresholds"
        thr_hint = "run the evaluate stage first (it fits thresholds.json) or set predict.thresholds"

    model_cfg_loc = model.join(MODEL_CONFIG_FILE)
    if not model_cfg_loc.exists():
        raise InputError(
            f"model not found: {model_cfg_loc.uri} does not exist (model from {model_from}); {model_hint}"
        )
    if not thresholds.exists() or thresholds.is_dir():
        raise InputError(
            f"thresholds not found: {thresholds.uri} does not exist (thresholds from {thr_from}); {thr_hint}"
        )
    try:
        model_cfg = read_json(model_cfg_loc)
        labels = [str(x) for x in model_cfg["labels"]]
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(
            f"{model_cfg_loc.uri}: not a model_config.json with a 'labels' list ({err!r})"
        ) from None
    require_evaluated(thresholds.parent, f"thresholds {thresholds.uri} (from {thr_from})")
    try:
        thr_doc = read_json(thresholds)
        fitted = ThresholdResult.from_json_dict(thr_doc)
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise InputError(
            f"{thresholds.uri}: not a thresholds.json written by the evaluate stage ({err!r})"
        ) from None
    if fitted.labels != labels:
        only_thr = [x for x in fitted.labels if x not in set(labels)]
        only_model = [x for x in labels if x not in set(fitted.labels)]
        if only_thr or only_model:
            detail = (
                f"labels only in the thresholds: {listed(only_thr)}; "
                f"labels only in the model: {listed(only_model)}"
            )
        else:
            detail = f"the same {len(labels)} labels in a different order"
        raise InputError(
            f"thresholds {thresholds.uri} do not match the model's label vocabulary ({model_cfg_loc.uri}, "
            f"{len(labels)} labels; thresholds list {len(fitted.labels)}): {detail}. "
            "Use the thresholds.json fitted for this model (run the evaluate stage on it)."
        )
    model_id = model_cfg.get("model_id")
    fitted_for = (thr_doc.get("provenance") or {}).get("model_id")
    if model_id and fitted_for and model_id != fitted_for:
        raise InputError(
            f"thresholds {thresholds.uri} were fitted for another model (model_id {fitted_for}) than "
            f"{model.uri} (model_id {model_id}), with the same labels. Use the thresholds.json fitted for "
            "this model (run the evaluate stage on it)."
        )
    if not (model_id and fitted_for):  # files written before models had an id
        log.warning(
            "predict: %s or %s has no model_id; cannot check that the thresholds were fitted for this model",
            model_cfg_loc.uri,
            thresholds.uri,
        )
    if not np.isfinite(fitted.thresholds).all():
        bad = [lab for lab, t in zip(labels, fitted.thresholds, strict=True) if not np.isfinite(t)]
        raise InputError(f"{thresholds.uri}: non-finite thresholds for labels {listed(bad)}")
    return ModelChoice(model, thresholds, pointer, labels, model_cfg, thr_doc, fitted)
