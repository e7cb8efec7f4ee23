"""From anomaly maps to AUC-sPRO statistics, and from statistics to AUC-sPRO.

:func:`spro_statistics` histograms a category's maps over shared bin edges into a
:class:`~fedpatch_app.metrics.sufficient_statistics.SproStatistics` (what clients send instead of
maps); :func:`auc_spro_from_statistics` computes the metric from (pooled) statistics with the
same threshold sweep as for maps. With one bin per 16-bit level
(:func:`~fedpatch_app.metrics.score_bins.level_edges`) the statistics are exact for 16-bit
maps, and :func:`auc_spro_from_statistics` equals ``auc_spro`` on them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tqdm import tqdm

from fedpatch_app.errors import DataError
from fedpatch_app.metrics.map_checks import check_maps
from fedpatch_app.metrics.score_bins import bin_index, csr_from_dense, dense_row
from fedpatch_app.metrics.spro_curve import (
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
from fedpatch_app.metrics.sufficient_statistics import SproStatistics


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
        )
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
