"""What anomaly maps and their ground-truth regions must satisfy to be scored.

Both ways to AUC-sPRO (from the maps themselves, ``spro_maps``, and from their binned
statistics, ``spro_histograms``) check their inputs here first, so a bad map or region is a
:class:`~fedpatch_app.errors.DataError` that names the image and region at fault.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedpatch_app.errors import DataError
from fedpatch_app.metrics.spro_curve import RegionLike


def check_maps(maps: Sequence[np.ndarray], regions: Sequence[Sequence[RegionLike]]) -> None:
    """DataError naming the map or region at fault unless the maps can be scored."""
    if len(maps) != len(regions):
        raise DataError(f"{len(maps)} anomaly maps but {len(regions)} region lists")
    if len(maps) == 0:
        raise DataError("no anomaly maps to evaluate")
    for i, (m, regs) in enumerate(zip(maps, regions, strict=True)):
        if not isinstance(m, np.ndarray) or m.ndim != 2 or m.size == 0:
            raise DataError(f"anomaly map {i} must be a non-empty 2-D array")
        if not (np.issubdtype(m.dtype, np.integer) or np.issubdtype(m.dtype, np.floating)):
            raise DataError(f"anomaly map {i} has non-numeric dtype {m.dtype}")
        if np.issubdtype(m.dtype, np.floating) and not np.all(np.isfinite(m)):
            raise DataError(f"anomaly map {i} holds NaN or infinite scores")
        for r in regs:
            where = f"region {getattr(r, 'source', r.defect)} of image {i}"
            if r.mask.shape != m.shape:
                raise DataError(f"{where}: mask {r.mask.shape} differs from its map {m.shape}")
            if r.mask.dtype != np.bool_:
                raise DataError(f"{where}: mask must be boolean, not {r.mask.dtype}")
            area = int(np.count_nonzero(r.mask))
            if area == 0:
                raise DataError(f"{where}: the region is empty")
            if not (1 <= int(r.saturation_area) <= area):
                raise DataError(
                    f"{where}: saturation area {r.saturation_area} is outside [1, {area}]"
                )
