"""What LibMultiLabel's linear methods need from us, shared by the quality and long-tail benchmarks."""

from __future__ import annotations

from typing import Any

import scipy.sparse as sp


class LabelCountsCSC(sp.csc_matrix):
    """Adapter for libmultilabel 0.10.0's `train_thresholding`, which orders labels by frequency with
    `np.sum(y, 2)`: scipy 1.17 rejects axis 2 ("axis out of range for ndim"). The intent (the micromacro-freq
    method processes labels from the most to the least frequent) is the column sum, axis 0; nothing else of
    the matrix changes."""

    def sum(self, axis: Any = None, dtype: Any = None, out: Any = None) -> Any:
        return super().sum(axis=0 if axis == 2 else axis, dtype=dtype, out=out)
