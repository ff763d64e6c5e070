"""User-facing errors: problems a user fixes by changing the input, the config or the cluster.

A job prints the message of a :class:`PipelineError` on one line and exits 1; any other exception is a bug
and keeps its traceback. Raise these only with a message that says where the problem is and what to do.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base of every error the user can act on (printed as one line by the jobs)."""


class InputError(PipelineError, ValueError):
    """The input does not match the contract; the message says where and what was expected."""


class ResourceError(PipelineError, RuntimeError):
    """The request cannot be scheduled on this cluster."""


class CheckpointError(PipelineError, RuntimeError):
    """A checkpoint that may not be loaded: one holding pickled objects, which loading would run as code."""
