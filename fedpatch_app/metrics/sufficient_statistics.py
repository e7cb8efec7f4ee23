"""Binned sufficient statistics of AUC-sPRO: what clients send instead of anomaly maps.

:class:`SproStatistics` holds histograms of the normal pixels and of each region over shared
bin edges. Clients send these instead of maps; the server merges them (:meth:`merge`) and
computes the pooled metric with the same threshold sweep as for maps (``spro_histograms``).
With one bin per 16-bit level (:func:`~fedpatch_app.metrics.score_bins.level_edges`) the
statistics are exact for 16-bit maps.

Statistics arrive from clients over the network, so every field is checked on construction
(dtypes, shapes, limits, consistency of the counts) before the server merges them, and a
malformed payload is a :class:`~fedpatch_app.errors.ModelError` that names the field at fault.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedpatch_app.errors import ModelError
from fedpatch_app.metrics.score_bins import csr_from_dense, dense_row

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


@dataclass
class SproStatistics:
    """Binned sufficient statistics of one category's test split for AUC-sPRO.

    Over shared bin ``edges`` (B + 1 ascending values; bin ``b`` holds ``edges[b] <= s <
    edges[b+1]``, scores outside are put in the end bins):

    - ``pixel_counts`` (B,): every pixel of every image (for the quantile thresholds);
    - ``normal_counts`` (B,): pixels in no region, all images (the FPR denominator);
    - ``good_counts`` (B,): pixels of the good images;
    - ``region_ptr`` (R+1,), ``region_bins``, ``region_counts``: one sparse histogram per region
      (bins ascending within a region, counts > 0);
    - ``region_saturation`` (R,): saturation area of each region;
    - ``region_defects`` (R,): index of each region's defect in ``defect_names`` (sorted);
    - ``defect_normal_ptr`` (D+1,), ``defect_normal_bins``, ``defect_normal_counts``: per defect,
      the normal pixels of the defective images holding it (for the per-defect FPR);
    - ``n_images``, ``n_good``: image counts.

    A bin counts as *above* a threshold ``t`` when its centre is > ``t``: the statistics behave
    exactly like maps whose every score was replaced by its bin centre. With
    :func:`level_edges` the centres are the integer levels, so 16-bit maps are represented exactly.
    """

    edges: np.ndarray
    pixel_counts: np.ndarray
    normal_counts: np.ndarray
    good_counts: np.ndarray
    region_ptr: np.ndarray
    region_bins: np.ndarray
    region_counts: np.ndarray
    region_saturation: np.ndarray
    region_defects: np.ndarray
    defect_names: tuple[str, ...]
    defect_normal_ptr: np.ndarray
    defect_normal_bins: np.ndarray
    defect_normal_counts: np.ndarray
    n_images: int
    n_good: int

    def __post_init__(self) -> None:
        self.defect_names = tuple(self.defect_names)
        self.n_images = int(self.n_images)
        self.n_good = int(self.n_good)
        validate_statistics(self)

    @property
    def n_bins(self) -> int:
        return int(self.edges.size - 1)

    @property
    def n_regions(self) -> int:
        return int(self.region_ptr.size - 1)

    @property
    def centres(self) -> np.ndarray:
        return 0.5 * (self.edges[:-1] + self.edges[1:])

    def merge(self, other: SproStatistics) -> SproStatistics:
        """Statistics of both image sets together (normal counts summed, regions concatenated)."""
        if self.edges.shape != other.edges.shape or not np.array_equal(self.edges, other.edges):
            raise ModelError(
                "cannot merge AUC-sPRO statistics with different bin edges "
                f"({self.n_bins} vs {other.n_bins} bins or different values)"
            )
        names = sorted(set(self.defect_names) | set(other.defect_names))
        pos = {n: k for k, n in enumerate(names)}
        remap_a = np.asarray([pos[n] for n in self.defect_names], dtype=np.int64)
        remap_b = np.asarray([pos[n] for n in other.defect_names], dtype=np.int64)
        rows = []
        for n in names:
            row = np.zeros(self.n_bins, dtype=np.int64)
            for s in (self, other):
                if n in s.defect_names:
                    k = s.defect_names.index(n)
                    row += dense_row(
                        s.defect_normal_ptr,
                        s.defect_normal_bins,
                        s.defect_normal_counts,
                        k,
                        s.n_bins,
                    )
            rows.append(row)
        dptr, dbins, dcounts = csr_from_dense(rows)
        return SproStatistics(
            edges=self.edges.copy(),
            pixel_counts=self.pixel_counts + other.pixel_counts,
            normal_counts=self.normal_counts + other.normal_counts,
            good_counts=self.good_counts + other.good_counts,
            region_ptr=np.concatenate(
                [self.region_ptr, other.region_ptr[1:] + self.region_ptr[-1]]
            ),
            region_bins=np.concatenate([self.region_bins, other.region_bins]),
            region_counts=np.concatenate([self.region_counts, other.region_counts]),
            region_saturation=np.concatenate([self.region_saturation, other.region_saturation]),
            region_defects=np.concatenate(
                [remap_a[self.region_defects], remap_b[other.region_defects]]
            ).astype(np.int64),
            defect_names=tuple(names),
            defect_normal_ptr=dptr,
            defect_normal_bins=dbins,
            defect_normal_counts=dcounts,
            n_images=self.n_images + other.n_images,
            n_good=self.n_good + other.n_good,
        )

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Numeric arrays only (defect names as JSON in UTF-8 bytes); no pickle needed."""
        out: dict[str, np.ndarray] = {"edges": self.edges.astype(np.float64)}
        for name in INT_FIELDS:
            out[name] = np.asarray(getattr(self, name), dtype=np.int64)
        blob = json.dumps(list(self.defect_names)).encode("utf-8")
        out["defect_names_utf8"] = np.frombuffer(blob, dtype=np.uint8).copy()
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, Any]) -> SproStatistics:
        """Rebuild from :meth:`to_arrays` output, validating everything (ModelError if malformed)."""
        return cls(**statistics_fields(arrays))


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
        s.defect_normal_ptr,
        s.defect_normal_bins,
        s.defect_normal_counts,
        n_bins,
        "defect_normal",
        bad,
        allow_empty_rows=True,
    )
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
