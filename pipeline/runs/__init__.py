"""Whole runs: stage records (manifests), the orchestrator and scheduled retraining."""
