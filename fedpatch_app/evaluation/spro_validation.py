"""What the AUC-sPRO code accepts: anomaly maps with their regions, and statistics.

Statistics arrive from clients over the network, so every field is checked (dtypes, shapes,
limits, consistency of the counts) before the server merges them, and a malformed payload is
a :class:`~fedpatch_app.errors.ModelError` that names the field at fault.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from fedpatch_app.errors import DataError, ModelError
from fedpatch_app.evaluation.spro_curve import RegionLike

if TYPE_CHECKING:
    from fedpatch_app.evaluation.spro_statistics import SproStatistics

_MAX_BINS = 1 << 22
_MAX_REGIONS = 1 << 22
_MAX_ENTRIES = 1 << 28

INT_FIELDS = (
    "pixel_counts",
    "normal_counts",
    "good_counts",
    "region_ptr",
    "region_bins",
    "region_counts",
    "region_saturation",
    "region_defects",
    "defect_normal_ptr",
    "defect_normal_bins",
    "defect_normal_counts",
    "n_images",
    "n_good",
)
ARRAY_KEYS = ("edges", *INT_FIELDS, "defect_names_utf8")


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


def statistics_fields(arrays: Mapping[str, Any]) -> dict[str, Any]:
    """Constructor arguments of ``SproStatistics`` from ``to_arrays`` output, type-checked."""
    if not isinstance(arrays, Mapping):
        raise ModelError("AUC-sPRO statistics must be a mapping of arrays")
    missing = [k for k in ARRAY_KEYS if k not in arrays]
    extra = [k for k in arrays if k not in ARRAY_KEYS]
    if missing or extra:
        raise ModelError(f"AUC-sPRO statistics: missing arrays {missing}, unexpected {extra}")
    for k in ARRAY_KEYS:
        if not isinstance(arrays[k], np.ndarray):
            raise ModelError(f"AUC-sPRO statistics: {k} is not an array")
    want = {"edges": np.float64, "defect_names_utf8": np.uint8}
    for k in ARRAY_KEYS:
        dt = np.dtype(want.get(k, np.int64))
        if arrays[k].dtype != dt:
            raise ModelError(f"AUC-sPRO statistics: {k} has dtype {arrays[k].dtype}, not {dt}")
    blob = arrays["defect_names_utf8"]
    if blob.ndim != 1 or blob.size > 1 << 20:
        raise ModelError("AUC-sPRO statistics: defect_names_utf8 must be a short 1-D array")
    try:
        names = json.loads(blob.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"AUC-sPRO statistics: defect names are not UTF-8 JSON ({e})") from e
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise ModelError("AUC-sPRO statistics: defect names must be a list of non-empty strings")
    for k in ("n_images", "n_good"):
        if arrays[k].shape != ():
            raise ModelError(f"AUC-sPRO statistics: {k} must be a scalar array")
    kwargs: dict[str, Any] = {k: np.array(arrays[k]) for k in ("edges", *INT_FIELDS)}
    kwargs["n_images"] = int(arrays["n_images"])
    kwargs["n_good"] = int(arrays["n_good"])
    kwargs["defect_names"] = tuple(names)
    return kwargs


def validate_statistics(s: SproStatistics) -> None:
    """ModelError naming the field at fault unless ``s`` is consistent and within limits."""

    def bad(msg: str) -> ModelError:
        return ModelError(f"invalid AUC-sPRO statistics: {msg}")

    e = s.edges
    if not isinstance(e, np.ndarray) or e.dtype != np.float64 or e.ndim != 1 or e.size < 2:
        raise bad("edges must be a 1-D float64 array of at least 2 values")
    if e.size - 1 > _MAX_BINS:
        raise bad(f"{e.size - 1} bins exceed the limit {_MAX_BINS}")
    if not np.all(np.isfinite(e)) or not np.all(np.diff(e) > 0):
        raise bad("edges must be finite and strictly increasing")
    n_bins = e.size - 1
    for name in INT_FIELDS[:-2]:
        a = getattr(s, name)
        if not isinstance(a, np.ndarray) or a.dtype != np.int64 or a.ndim != 1:
            raise bad(f"{name} must be a 1-D int64 array")
    for name in ("pixel_counts", "normal_counts", "good_counts"):
        a = getattr(s, name)
        if a.shape != (n_bins,):
            raise bad(f"{name} has shape {a.shape}, expected ({n_bins},)")
        if np.any(a < 0):
            raise bad(f"{name} holds negative counts")
    if np.any(s.good_counts > s.normal_counts) or np.any(s.normal_counts > s.pixel_counts):
        raise bad("counts must satisfy good <= normal <= all pixels in every bin")
    if not (0 <= s.n_good <= s.n_images):
        raise bad(f"image counts n_good={s.n_good}, n_images={s.n_images} are inconsistent")
    names = s.defect_names
    if list(names) != sorted(set(names)):
        raise bad("defect names must be sorted and unique")
    n_regions = _check_csr(s.region_ptr, s.region_bins, s.region_counts, n_bins, "region", bad)
    if n_regions > _MAX_REGIONS:
        raise bad(f"{n_regions} regions exceed the limit {_MAX_REGIONS}")
    for name in ("region_saturation", "region_defects"):
        if getattr(s, name).shape != (n_regions,):
            raise bad(f"{name} must have one entry per region ({n_regions})")
    area = np.add.reduceat(s.region_counts, s.region_ptr[:-1]) if n_regions else np.empty(0)
    if np.any(s.region_saturation < 1) or np.any(s.region_saturation > area):
        raise bad("every region's saturation area must lie in [1, region area]")
    if np.any(s.region_defects < 0) or np.any(s.region_defects >= len(names)):
        raise bad("region defect indices must point into the defect names")
    rows = _check_csr(
        s.defect_normal_ptr, s.defect_normal_bins, s.defect_normal_counts, n_bins, "defect_normal",
        bad, allow_empty_rows=True,
    )  # fmt: skip
    if rows != len(names):
        raise bad(f"{rows} per-defect normal histograms for {len(names)} defect names")
    defective_normal = s.normal_counts - s.good_counts
    for d in range(rows):
        lo, hi = s.defect_normal_ptr[d], s.defect_normal_ptr[d + 1]
        if np.any(s.defect_normal_counts[lo:hi] > defective_normal[s.defect_normal_bins[lo:hi]]):
            raise bad(f"normal histogram of defect {names[d]!r} exceeds the defective images'")


def _check_csr(ptr, bins, counts, n_bins, what, bad, allow_empty_rows=False) -> int:
    if ptr.size < 1 or ptr[0] != 0 or ptr[-1] != bins.size or bins.shape != counts.shape:
        raise bad(f"{what}_ptr/{what}_bins/{what}_counts are inconsistent")
    if bins.size > _MAX_ENTRIES:
        raise bad(f"{what} histograms hold {bins.size} entries, over the limit {_MAX_ENTRIES}")
    steps = np.diff(ptr)
    if np.any(steps < 0) or (not allow_empty_rows and np.any(steps == 0)):
        raise bad(
            f"{what}_ptr must increase ({'non-decreasing' if allow_empty_rows else 'strictly'})"
        )
    if np.any(bins < 0) or np.any(bins >= n_bins) or np.any(counts <= 0):
        raise bad(f"{what} histograms must use bins in [0, {n_bins}) with positive counts")
    if bins.size > 1:
        starts = np.zeros(bins.size, dtype=bool)
        starts[ptr[:-1][steps > 0]] = True
        if np.any((np.diff(bins) <= 0) & ~starts[1:]):
            raise bad(f"{what} histogram bins must increase within each row")
    return int(ptr.size - 1)
