"""Binned sufficient statistics of AUC-sPRO: what clients send instead of anomaly maps.

:class:`SproStatistics` holds histograms of the normal pixels and of each region over shared
bin edges. Clients send these instead of maps; the server merges them and computes the pooled
metric with the same threshold sweep as for maps. With one bin per 16-bit level
(:func:`~fedpatch_app.evaluation.score_bins.level_edges`) the statistics are exact for 16-bit
maps, and :func:`auc_spro_from_statistics` equals ``auc_spro`` on them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from fedpatch_app.errors import DataError, ModelError
from fedpatch_app.evaluation.score_bins import bin_index, csr_from_dense, dense_row
from fedpatch_app.evaluation.spro_curve import (
    FPR_LIMITS,
    CurveInputs,
    RegionLike,
    RegionScores,
    SortedScores,
    SproResult,
    check_limits,
    initial_thresholds,
    quantiles_from_histogram,
    run_curve,
)
from fedpatch_app.evaluation.spro_validation import (
    INT_FIELDS,
    check_maps,
    statistics_fields,
    validate_statistics,
)


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
                        s.defect_normal_ptr, s.defect_normal_bins, s.defect_normal_counts,
                        k, s.n_bins,
                    )  # fmt: skip
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


def spro_statistics(
    maps: Sequence[np.ndarray], regions: Sequence[Sequence[RegionLike]], edges: np.ndarray
) -> SproStatistics:
    """Histogram the maps over ``edges`` (see :class:`SproStatistics`)."""
    edges = np.asarray(edges, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2 or not np.all(np.isfinite(edges)):
        raise DataError("bin edges must be a finite 1-D array of >= 2 values")
    if not np.all(np.diff(edges) > 0):
        raise DataError("bin edges must be strictly increasing")
    if len(maps) != len(regions):
        raise DataError(f"{len(maps)} anomaly maps but {len(regions)} region lists")
    if len(maps):
        check_maps(maps, regions)
    return histograms(maps, regions, edges)


def histograms(
    maps: Sequence[np.ndarray], regions: Sequence[Sequence[RegionLike]], edges: np.ndarray
) -> SproStatistics:
    """Statistics of maps already checked (``check_maps``) over valid ``edges``."""
    n_bins = edges.size - 1
    lookup: dict[int, np.ndarray | None] = {}
    names = sorted({r.defect for regs in regions for r in regs})
    index = {n: k for k, n in enumerate(names)}
    pixel = np.zeros(n_bins, dtype=np.int64)
    normal = np.zeros(n_bins, dtype=np.int64)
    good = np.zeros(n_bins, dtype=np.int64)
    per_defect = [np.zeros(n_bins, dtype=np.int64) for _ in names]
    region_rows: list[np.ndarray] = []
    saturation: list[int] = []
    defects: list[int] = []
    n_good = 0
    for m, regs in tqdm(
        list(zip(maps, regions, strict=True)), desc="sPRO statistics", disable=None, leave=False
    ):
        b = bin_index(m, edges, lookup)
        whole = np.bincount(b.ravel(), minlength=n_bins)
        pixel += whole
        if not regs:
            n_good += 1
            good += whole
            normal += whole
            continue
        union = np.zeros(m.shape, dtype=bool)
        for r in regs:
            union |= r.mask
            region_rows.append(np.bincount(b[r.mask], minlength=n_bins))
            saturation.append(int(r.saturation_area))
            defects.append(index[r.defect])
        h = np.bincount(b[~union], minlength=n_bins)
        normal += h
        for d in {index[r.defect] for r in regs}:
            per_defect[d] += h
    rptr, rbins, rcounts = csr_from_dense(region_rows)
    dptr, dbins, dcounts = csr_from_dense(per_defect)
    return SproStatistics(
        edges=edges.copy(),
        pixel_counts=pixel,
        normal_counts=normal,
        good_counts=good,
        region_ptr=rptr,
        region_bins=rbins,
        region_counts=rcounts,
        region_saturation=np.asarray(saturation, dtype=np.int64),
        region_defects=np.asarray(defects, dtype=np.int64),
        defect_names=tuple(names),
        defect_normal_ptr=dptr,
        defect_normal_bins=dbins,
        defect_normal_counts=dcounts,
        n_images=len(maps),
        n_good=n_good,
    )


def curve_inputs_from_statistics(
    stats: SproStatistics, quantiles: np.ndarray | None
) -> CurveInputs:
    """Sweep inputs from statistics; ``quantiles`` None: computed from every pixel."""
    centres = stats.centres

    def scores(hist: np.ndarray) -> SortedScores:
        nz = np.flatnonzero(hist)
        return SortedScores(centres[nz], hist[nz])

    defective = stats.normal_counts - stats.good_counts
    per_defect = [
        scores(
            dense_row(
                stats.defect_normal_ptr,
                stats.defect_normal_bins,
                stats.defect_normal_counts,
                d,
                stats.n_bins,
            )
        )  # fmt: skip
        for d in range(len(stats.defect_names))
    ]
    occupied = np.flatnonzero(stats.pixel_counts)
    if occupied.size == 0:
        raise DataError("AUC-sPRO statistics hold no pixels")
    if quantiles is None:
        quantiles = quantiles_from_histogram(centres[occupied], stats.pixel_counts[occupied])
    return CurveInputs(
        good=scores(stats.good_counts),
        defective=scores(defective),
        per_defect_normal=per_defect,
        regions=RegionScores(stats.region_ptr, centres[stats.region_bins], stats.region_counts),
        saturation=stats.region_saturation.astype(np.float64),
        region_defect=stats.region_defects,
        defect_names=list(stats.defect_names),
        initial_thresholds=initial_thresholds(
            centres[occupied[0]], centres[occupied[-1]], quantiles
        ),
    )


def auc_spro_from_statistics(
    stats: SproStatistics, limits: Sequence[float] = FPR_LIMITS
) -> SproResult:
    """AUC-sPRO from pooled statistics: the official procedure on the bin-centre scores.

    The quantile thresholds always use every pixel (no subsampling), so this equals
    ``auc_spro(maps, regions, max_samples=None)`` on maps holding bin centres, and
    ``auc_spro(maps, regions)`` whenever those maps hold at most ``max_samples`` scores.
    """
    lims = check_limits(limits)
    return run_curve(curve_inputs_from_statistics(stats, None), lims)
