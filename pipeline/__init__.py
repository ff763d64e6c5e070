"""balanced-multilabel: a Ray pipeline for long-tailed multi-label text classification."""

__version__ = "0.1.0"
