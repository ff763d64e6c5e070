"""Shared by every stage: typed config, user-facing errors, console output, storage, the Ray cluster and
resource plans."""
