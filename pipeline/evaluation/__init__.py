"""Metrics, per-label thresholds, batch scoring with a saved model, the evaluate stage and its report."""
