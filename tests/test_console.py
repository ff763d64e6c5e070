"""The driver's console filter: Ray's routine notices are dropped, everything else is shown."""

from __future__ import annotations

import io
import logging

from pipeline.core.console import quiet_driver_logs


def test_routine_ray_data_notices_are_dropped_and_other_lines_kept():
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    logger = logging.getLogger("ray.data")
    logger.addHandler(handler)
    try:
        quiet_driver_logs()
        quiet_driver_logs()  # twice: one filter, not two
        assert sum(type(f).__name__ == "_Drop" for f in handler.filters) == 1
        for line in (
            "Estimated parquet encoding ratio is 0.169.",
            "Estimated parquet reader batch size at 10627 rows",
            "Data sink Parquet finished. 1164 rows and 463.0KiB data written.",
            "Starting execution of Dataset dataset_1_0. Full logs are in /tmp/ray",
            "Registered dataset logger for dataset dataset_1_0",
        ):
            logger.warning(line)
    finally:
        logger.removeHandler(handler)
    assert out.getvalue().splitlines() == ["Registered dataset logger for dataset dataset_1_0"]
