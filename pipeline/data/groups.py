"""Label groups: head / medium / tail by training documents per label, and the zero-shot group.

Defined once here; label statistics (prepare) and metrics (evaluate) both use it. The cut-offs' defaults are
the config's (`groups.head_min`, `groups.tail_max`), which follow the published Reuters-21578 split so that
group figures compare with the literature.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from pipeline.core.config import GroupsSection

#: Frequency groups of the training vocabulary, by training documents (:func:`assign_groups`).
GROUPS: tuple[str, ...] = ("head", "medium", "tail")
#: Labels of the evaluated set that never occur in train (prepare's ``data.unknown_label_policy:
#: zero-shot``): outside the model's vocabulary, so a closed-vocabulary model misses every one of their
#: positives. Reported as a group of its own beside :data:`GROUPS`, never mixed into the vocabulary figures.
ZERO_SHOT = "zero-shot"
DEFAULT_HEAD_MIN: int = GroupsSection.model_fields["head_min"].default
DEFAULT_TAIL_MAX: int = GroupsSection.model_fields["tail_max"].default


def assign_groups(
    train_counts: ArrayLike, head_min: int = DEFAULT_HEAD_MIN, tail_max: int = DEFAULT_TAIL_MAX
) -> NDArray[np.str_]:
    """Frequency group of each label from its number of training documents.

    ``head`` if count >= head_min, ``tail`` if count <= tail_max, ``medium`` otherwise. The defaults (35, 8)
    are the published Reuters-21578 split, so group figures compare with the literature.
    """
    counts = np.asarray(train_counts)
    if counts.ndim != 1:
        raise ValueError(f"train_counts must be 1-D, got shape {counts.shape}")
    if tail_max >= head_min:
        raise ValueError(f"tail_max ({tail_max}) must be below head_min ({head_min})")
    return np.where(counts >= head_min, "head", np.where(counts <= tail_max, "tail", "medium")).astype("<U6")
