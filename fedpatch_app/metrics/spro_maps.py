"""AUC-sPRO of one category from its anomaly maps and ground-truth regions.

Integer-level maps (8- or 16-bit, as the official evaluator reads exported PNGs) are counted
by histogram through the sufficient statistics; real-valued maps by sorting their scores.
Both feed the same threshold sweep (``spro_curve``), so the figures agree with
:func:`~fedpatch_app.metrics.spro_histograms.auc_spro_from_statistics` on the same maps.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tqdm import tqdm

from fedpatch_app.errors import DataError
from fedpatch_app.metrics import spro_curve as curve
from fedpatch_app.metrics.map_checks import check_maps
from fedpatch_app.metrics.score_bins import is_level_map, level_edges
from fedpatch_app.metrics.spro_histograms import curve_inputs_from_statistics, histograms


def _sample_quantiles(maps: Sequence[np.ndarray], max_samples: int, seed: int) -> np.ndarray:
    """Quantiles of a seeded subsample: ``floor(max_samples / n_images)`` scores per map."""
    rng = np.random.default_rng(seed)
    per_image = int(np.floor(max_samples / len(maps)))
    if per_image < 1:
        raise DataError(f"max_samples={max_samples} is below the number of maps ({len(maps)})")
    picks = [rng.choice(m.ravel(), size=min(per_image, m.size), replace=False) for m in maps]
    sample = np.concatenate(picks)
    if is_level_map(sample):  # counting sort: same order statistics, linear time
        counts = np.bincount(sample)
        levels = np.flatnonzero(counts)
        return curve.quantiles_from_histogram(levels.astype(np.float64), counts[levels])
    sample.sort()
    return sample[curve.quantile_positions(sample.size)]


def _sorted_scores(parts: list[np.ndarray], dtype: np.dtype) -> curve.SortedScores:
    """The scores of ``parts`` as one sorted array of ``dtype`` (float64 when empty)."""
    if not parts:
        return curve.SortedScores(np.empty(0, dtype=np.float64))
    s = np.concatenate(parts).astype(dtype, copy=False)
    s.sort()
    return curve.SortedScores(s)


def _all_quantiles(maps: Sequence[np.ndarray]) -> np.ndarray:
    """The scores at the quantile positions among every score of every map."""
    everything = np.concatenate([m.ravel() for m in maps])
    pos = curve.quantile_positions(everything.size)
    return np.partition(everything, pos)[pos]


def _float_inputs(
    maps: Sequence[np.ndarray],
    regions: Sequence[Sequence[curve.RegionLike]],
    quantiles: np.ndarray | None,
) -> curve.CurveInputs:
    """Inputs from real-valued maps: sorted score arrays (float32 kept, others as float64)."""
    names = sorted({r.defect for regs in regions for r in regs})
    index = {n: k for k, n in enumerate(names)}
    good_parts: list[np.ndarray] = []
    defective_parts: list[np.ndarray] = []
    per_defect_parts: list[list[np.ndarray]] = [[] for _ in names]
    ptr = [0]
    levels: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    saturation: list[int] = []
    region_defect: list[int] = []
    low, high = np.inf, -np.inf
    for m, regs in tqdm(
        list(zip(maps, regions, strict=True)), desc="sPRO inputs", disable=None, leave=False
    ):
        a = m if m.dtype in (np.float32, np.float64) else m.astype(np.float64)
        low = min(low, float(a.min()))
        high = max(high, float(a.max()))
        if not regs:
            good_parts.append(a.ravel())
            continue
        union = np.zeros(a.shape, dtype=bool)
        for r in regs:
            union |= r.mask
            lv, ct = np.unique(a[r.mask], return_counts=True)
            levels.append(lv.astype(np.float64))
            counts.append(ct)
            ptr.append(ptr[-1] + lv.size)
            saturation.append(int(r.saturation_area))
            region_defect.append(index[r.defect])
        normal = a[~union]
        defective_parts.append(normal)
        for d in sorted({index[r.defect] for r in regs}):
            per_defect_parts[d].append(normal)
    dtype = np.result_type(*[p.dtype for p in good_parts + defective_parts] or [np.float64])
    if quantiles is None:
        quantiles = _all_quantiles(maps)
    return curve.CurveInputs(
        good=_sorted_scores(good_parts, dtype),
        defective=_sorted_scores(defective_parts, dtype),
        per_defect_normal=[_sorted_scores(p, dtype) for p in per_defect_parts],
        regions=curve.RegionScores(
            np.asarray(ptr, dtype=np.int64),
            np.concatenate(levels) if levels else np.empty(0, np.float64),
            np.concatenate(counts) if counts else np.empty(0, np.int64),
        ),
        saturation=np.asarray(saturation, dtype=np.float64),
        region_defect=np.asarray(region_defect, dtype=np.int64),
        defect_names=names,
        initial_thresholds=curve.initial_thresholds(low, high, quantiles),
    )


def auc_spro(
    maps: Sequence[np.ndarray],
    regions: Sequence[Sequence[curve.RegionLike]],
    *,
    limits: Sequence[float] = curve.FPR_LIMITS,
    max_samples: int | None = 10_000_000,
    seed: int = 0,
) -> curve.SproResult:
    """AUC-sPRO of one category over all its test images, as the official evaluator computes it.

    ``maps[i]`` is the anomaly map (H, W) of test image ``i``, ``regions[i]`` its ground-truth
    regions (empty for good images). Maps as the official evaluator reads exported 16-bit PNGs
    (``uint16``) reproduce its figures; ``uint8``/``uint16`` maps are counted by histogram, other
    maps by sorting their scores (``float32`` kept as is, anything else as ``float64``).

    When the maps hold more than ``max_samples`` scores, the 48 initial quantile thresholds come
    from a subsample of ``floor(max_samples / n_images)`` scores per map drawn with ``seed`` (the
    reference draws it unseeded); ``max_samples=None`` always uses every score.
    """
    lims = curve.check_limits(limits)
    check_maps(maps, regions)
    total = int(sum(m.size for m in maps))
    sampled = max_samples is not None and total > int(max_samples)
    quantiles = _sample_quantiles(maps, int(max_samples), seed) if sampled else None
    if all(is_level_map(m) for m in maps):
        n_levels = 1 << (8 * max(m.dtype.itemsize for m in maps))
        stats = histograms(maps, regions, level_edges(n_levels))
        inputs = curve_inputs_from_statistics(stats, quantiles)
    else:
        inputs = _float_inputs(maps, regions, quantiles)
    return curve.run_curve(inputs, lims)
