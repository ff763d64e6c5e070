"""Thin entry points for `ray job submit -- python -m jobs.<stage>`."""

from pipeline.core.console import quiet_libraries

# Before any job module imports Ray: Ray reads its log-forwarding filter from the environment at import.
quiet_libraries()
