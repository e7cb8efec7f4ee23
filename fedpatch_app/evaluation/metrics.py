"""Image-level AUROC and pixel-level AUC-sPRO, as the official AutoVI evaluator computes them.

AUC-sPRO (saturated per-region overlap against the pooled false-positive rate) follows the
official AutoVI evaluation code (v3.0) step by step: the same initial thresholds, the same
threshold refinement, the same capped trapezoid. It is vectorised: every score multiset (the
normal pixels, each ground-truth region) is sorted once and the number of scores above any
threshold is a binary search, so a threshold costs O(log n) instead of a pass over every map.

The same procedure also runs on binned *sufficient statistics* (:class:`SproStatistics`):
histograms of the normal pixels and of each region over shared bin edges. Clients send these
instead of maps; the server merges them and computes the pooled metric. With one bin per 16-bit
level (:func:`level_edges`) the statistics are exact for 16-bit maps, and
:func:`auc_spro_from_statistics` equals :func:`auc_spro` on them.

See ``docs/phases/phase-4-evaluation/metrics.md`` for the precise definitions.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from fedpatch_app.errors import DataError, ModelError

log = logging.getLogger(__name__)

FPR_LIMITS: tuple[float, ...] = (0.01, 0.05, 0.1, 0.3, 1.0)
"""Integration limits (maximum FPR) the official evaluator reports."""

CURVE_MAX_DISTANCE = 0.001
"""Refinement target: largest tolerated distance between neighbouring curve points."""
REFINEMENT_ROUNDS = 10
MIN_NEW_THRESHOLDS = 20
MAX_REFINED_INTERVALS = 100
NUM_INITIAL_THRESHOLDS = 50
THRESHOLD_EPSILON = 1e-6

_MAX_BINS = 1 << 22
_MAX_REGIONS = 1 << 22
_MAX_ENTRIES = 1 << 28


class RegionLike(Protocol):
    """What the metrics need from a ground-truth region (``fedpatch_app.data.autovi.Region``)."""

    mask: np.ndarray
    defect: str
    saturation_area: int


def limit_key(limit: float) -> str:
    """Result key of an integration limit: ``0.01 -> "0.01"``, ``1 -> "1.0"``."""
    return str(float(limit))


def _check_limits(limits: Sequence[float]) -> tuple[float, ...]:
    out = tuple(float(x) for x in limits)
    if not out:
        raise DataError("no FPR integration limits given")
    for x in out:
        if not (0.0 < x <= 1.0):
            raise DataError(f"FPR integration limit {x} is outside (0, 1]")
    return out


@dataclass
class SproResult:
    """AUC-sPRO of one category.

    ``auc[limit_key]`` is the normalised area under the sPRO-FPR curve up to that FPR.
    ``fpr``, ``spro`` and ``thresholds`` are the final curve, thresholds descending (so the FPR
    rises from 0 to 1); ``per_defect[defect][limit_key]`` restricts the sPRO to that defect's
    regions and the FPR to the good images plus the images holding that defect.
    """

    auc: dict[str, float]
    fpr: np.ndarray
    spro: np.ndarray
    thresholds: np.ndarray
    per_defect: dict[str, dict[str, float]] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Counting scores above thresholds


def _round_down_to(dtype: np.dtype, thresholds: np.ndarray) -> np.ndarray:
    """Largest values of ``dtype`` that are <= each float64 threshold.

    For ``x`` of that dtype, ``x > t`` holds exactly when ``x > round_down(t)``, so searches can
    run in the scores' own dtype without copying the scores to float64.
    """
    cast = thresholds.astype(dtype)
    above = cast.astype(np.float64) > thresholds
    if np.any(above):
        cast[above] = np.nextafter(cast[above], dtype.type(-np.inf))
    return cast


class _SortedScores:
    """A multiset of scores, sorted once; counts how many exceed any threshold."""

    def __init__(self, levels: np.ndarray, counts: np.ndarray | None = None) -> None:
        # levels: ascending (distinct when counts are given); counts=None means one per level
        self.levels = levels
        if counts is None:
            self.cum: np.ndarray | None = None
            self.total = int(levels.size)
        else:
            self.cum = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
            self.total = int(self.cum[-1])

    def above(self, thresholds: np.ndarray) -> np.ndarray:
        """Number of scores strictly greater than each threshold (int64)."""
        t = thresholds
        if self.levels.dtype != np.float64:
            t = _round_down_to(self.levels.dtype, thresholds)
        idx = np.searchsorted(self.levels, t, side="right")
        at_or_below = idx if self.cum is None else self.cum[idx]
        return (self.total - at_or_below).astype(np.int64)


class _RegionScores:
    """Score histograms of many regions (CSR), searched for all regions at once.

    Every level is replaced by its rank among the distinct levels of all regions; the key
    ``region * (n_distinct + 1) + rank`` then increases along the concatenated arrays, so one
    ``searchsorted`` answers every (region, threshold) pair.
    """

    def __init__(self, ptr: np.ndarray, levels: np.ndarray, counts: np.ndarray) -> None:
        self.ptr = ptr.astype(np.int64)
        self.n_regions = self.ptr.size - 1
        self.distinct = np.unique(levels)
        rank = np.searchsorted(self.distinct, levels)
        region = np.repeat(np.arange(self.n_regions, dtype=np.int64), np.diff(self.ptr))
        self.stride = np.int64(self.distinct.size + 1)
        self.keys = region * self.stride + rank
        self.cum = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
        self.area = self.cum[self.ptr[1:]] - self.cum[self.ptr[:-1]]

    def above(self, thresholds: np.ndarray) -> np.ndarray:
        """(R, T) int64: pixels of each region with a score strictly above each threshold."""
        q = np.searchsorted(self.distinct, thresholds, side="right").astype(np.int64)
        rows = np.arange(self.n_regions, dtype=np.int64)[:, None] * self.stride
        pos = np.searchsorted(self.keys, (rows + q[None, :]).ravel(), side="left")
        pos = pos.reshape(self.n_regions, thresholds.size)
        return self.cum[self.ptr[1:]][:, None] - self.cum[pos]


@dataclass
class _CurveInputs:
    """Everything the threshold sweep needs, however it was gathered (maps or statistics)."""

    good: _SortedScores  # normal pixels of good images (all their pixels)
    defective: _SortedScores  # normal pixels of defective images
    per_defect_normal: list[_SortedScores]  # normal pixels of the images holding each defect
    regions: _RegionScores
    saturation: np.ndarray  # (R,) float64, >= 1
    region_defect: np.ndarray  # (R,) int64 index into defect_names
    defect_names: list[str]
    initial_thresholds: list[float]


class _Sweep:
    """Evaluates (mean sPRO, FPR) at thresholds and keeps every raw count for the final curve."""

    def __init__(self, inputs: _CurveInputs) -> None:
        self.inputs = inputs
        self.n_normal = inputs.good.total + inputs.defective.total
        if inputs.regions.n_regions == 0:
            raise DataError("AUC-sPRO needs at least one ground-truth region (a defective image)")
        if self.n_normal == 0:
            raise DataError("AUC-sPRO needs at least one defect-free pixel to compute the FPR")
        self.thresholds: list[np.ndarray] = []
        self.region_spro: list[np.ndarray] = []
        self.fp_good: list[np.ndarray] = []
        self.fp_defective: list[np.ndarray] = []
        self.fp_per_defect: list[np.ndarray] = []

    def evaluate(self, thresholds: Sequence[float]) -> list[np.ndarray]:
        """Curve points ``[sPRO, FPR]`` in the order of ``thresholds``."""
        inp = self.inputs
        t = np.asarray(thresholds, dtype=np.float64)
        tp = inp.regions.above(t)
        spro = np.minimum(tp / inp.saturation[:, None], 1.0)
        fp_good = inp.good.above(t)
        fp_def = inp.defective.above(t)
        per_defect = np.zeros((len(inp.per_defect_normal), t.size), dtype=np.int64)
        for d, scores in enumerate(inp.per_defect_normal):
            per_defect[d] = scores.above(t)
        self.thresholds.append(t)
        self.region_spro.append(spro)
        self.fp_good.append(fp_good)
        self.fp_defective.append(fp_def)
        self.fp_per_defect.append(per_defect)
        mean_spro = np.mean(spro, axis=0)
        fpr = (fp_good + fp_def) / self.n_normal
        return [np.array([s, f]) for s, f in zip(mean_spro, fpr, strict=True)]

    def result(self, limits: tuple[float, ...]) -> SproResult:
        inp = self.inputs
        thresholds = np.concatenate(self.thresholds)
        order = np.argsort(thresholds)[::-1]
        thresholds = thresholds[order]
        spro_regions = np.concatenate(self.region_spro, axis=1)[:, order]
        fp_good = np.concatenate(self.fp_good)[order]
        fp_def = np.concatenate(self.fp_defective)[order]
        fp_per_defect = np.concatenate(self.fp_per_defect, axis=1)[:, order]
        spro = np.mean(spro_regions, axis=0)
        fpr = (fp_good + fp_def) / self.n_normal
        auc = {limit_key(x): capped_auc(fpr, spro, x) for x in limits}
        per_defect: dict[str, dict[str, float]] = {}
        for d, name in enumerate(inp.defect_names):
            chosen = inp.region_defect == d
            if not np.any(chosen):
                continue
            n_normal_d = inp.good.total + inp.per_defect_normal[d].total
            if n_normal_d == 0:
                log.warning("defect %s: no defect-free pixel in its images, no AUC-sPRO", name)
                per_defect[name] = {limit_key(x): float("nan") for x in limits}
                continue
            fpr_d = (fp_good + fp_per_defect[d]) / n_normal_d
            spro_d = np.mean(spro_regions[chosen], axis=0)
            per_defect[name] = {limit_key(x): capped_auc(fpr_d, spro_d, x) for x in limits}
        return SproResult(auc=auc, fpr=fpr, spro=spro, thresholds=thresholds, per_defect=per_defect)


# ---------------------------------------------------------------------------------------------
# The official threshold procedure


def _initial_thresholds(low: float, high: float, quantiles: np.ndarray) -> list[float]:
    """``[max + eps] + quantiles descending + [min - eps]``, de-duplicated, as floats."""
    top = float(high) + THRESHOLD_EPSILON
    bottom = float(low) - THRESHOLD_EPSILON
    # never triggers for 16-bit maps; keeps the curve's end points for scores near 1e10
    if not top > high:
        top = float(np.nextafter(float(high), np.inf))
    if not bottom < low:
        bottom = float(np.nextafter(float(low), -np.inf))
    values = [top] + [float(v) for v in quantiles[::-1]] + [bottom]
    return list(dict.fromkeys(values))


def _quantile_positions(n: int) -> np.ndarray:
    """Sorted positions of the 48 equal-count quantiles among ``n`` scores."""
    return np.linspace(0, n - 1, num=NUM_INITIAL_THRESHOLDS, endpoint=True, dtype=int)[1:-1]


def _quantiles_from_histogram(levels: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The scores at the quantile positions of the sorted multiset ``levels`` x ``counts``."""
    cum = np.cumsum(counts, dtype=np.int64)
    pos = _quantile_positions(int(cum[-1]))
    return levels[np.searchsorted(cum, pos, side="right")]


def _refine(sweep: _Sweep, thresholds: list[float], values: list[np.ndarray]) -> None:
    """Adds thresholds where neighbouring curve points are far apart, as the reference does.

    Bookkeeping mirrors the reference on purpose: thresholds are de-duplicated at the start of
    every round while their curve points are not, so the pairing of thresholds and points can
    shift when repeated thresholds appear (only once intervals shrink to a few ulps).
    """
    max_distance = CURVE_MAX_DISTANCE
    max_area = 0.25 * max_distance**2
    queries: list[float] = thresholds
    points: list[np.ndarray] = values
    for _ in range(REFINEMENT_ROUNDS):
        queries = list(dict.fromkeys(queries))
        candidates: list[tuple[float, float, float]] = []
        for i in range(len(queries) - 1):
            step = points[i] - points[i + 1]
            distance = float(np.linalg.norm(step))
            area = 0.5 * float(np.prod(step))
            if distance <= max_distance or area <= max_area:
                continue
            candidates.append((distance, queries[i], queries[i + 1]))
        if not candidates:
            break
        candidates.sort(key=lambda c: c[0], reverse=True)  # stable: ties keep curve order
        candidates = candidates[:MAX_REFINED_INTERVALS]
        to_share = max(MIN_NEW_THRESHOLDS - len(candidates), 0)
        distance_left = 0.0
        for c in candidates:
            distance_left += c[0]
        new: list[float] = []
        for distance, left, right in candidates:
            extra = int(np.round(distance / distance_left * to_share))
            inside = np.linspace(left, right, num=extra + 3)[1:-1]
            new.extend(float(v) for v in inside)
            to_share -= extra
            distance_left -= distance
        new_points = sweep.evaluate(new)
        all_queries = queries + new
        all_points = points + new_points
        order = np.argsort(all_queries)[::-1]
        queries = [all_queries[i] for i in order]
        points = [all_points[i] for i in order]


def _run(inputs: _CurveInputs, limits: tuple[float, ...]) -> SproResult:
    sweep = _Sweep(inputs)
    initial = inputs.initial_thresholds
    values = sweep.evaluate(initial)
    _refine(sweep, list(initial), values)
    return sweep.result(limits)


def capped_auc(fpr: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Trapezoidal area under ``y`` over ``fpr`` from 0 to ``limit``, divided by ``limit``.

    ``fpr`` ascends from 0 to 1 (repeats allowed); when ``limit`` is not one of its values,
    ``y`` is interpolated linearly at ``limit`` and the partial trapezoid is added.
    """
    x = np.asarray(fpr, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.size < 2 or x[0] != 0 or x[-1] != 1:
        raise DataError("an FPR curve must run from 0 to 1")
    partial = 0.0
    if not np.any(x == limit):
        k = int(np.searchsorted(x, limit, side="right"))
        x0, x1, y0, y1 = x[k - 1], x[k], y[k - 1], y[k]
        y_at = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
        partial = 0.5 * (y_at + y0) * (limit - x0)
    keep = x <= limit
    xs, ys = x[keep], y[keep]
    area = np.sum(0.5 * (ys[1:] + ys[:-1]) * (xs[1:] - xs[:-1])) + partial
    return float(area / limit)


# ---------------------------------------------------------------------------------------------
# Inputs from maps


def _check_inputs(maps: Sequence[np.ndarray], regions: Sequence[Sequence[RegionLike]]) -> None:
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


def _is_level_map(m: np.ndarray) -> bool:
    return m.dtype in (np.dtype(np.uint8), np.dtype(np.uint16))


def _sample_quantiles(maps: Sequence[np.ndarray], max_samples: int, seed: int) -> np.ndarray:
    """Quantiles of a seeded subsample: ``floor(max_samples / n_images)`` scores per map."""
    rng = np.random.default_rng(seed)
    per_image = int(np.floor(max_samples / len(maps)))
    if per_image < 1:
        raise DataError(f"max_samples={max_samples} is below the number of maps ({len(maps)})")
    picks = [rng.choice(m.ravel(), size=min(per_image, m.size), replace=False) for m in maps]
    sample = np.concatenate(picks)
    if _is_level_map(sample):  # counting sort: same order statistics, linear time
        counts = np.bincount(sample)
        levels = np.flatnonzero(counts)
        return _quantiles_from_histogram(levels.astype(np.float64), counts[levels])
    sample.sort()
    return sample[_quantile_positions(sample.size)]


def _float_inputs(
    maps: Sequence[np.ndarray],
    regions: Sequence[Sequence[RegionLike]],
    quantiles: np.ndarray | None,
) -> _CurveInputs:
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

    def sorted_scores(parts: list[np.ndarray]) -> _SortedScores:
        if not parts:
            return _SortedScores(np.empty(0, dtype=np.float64))
        s = np.concatenate(parts).astype(dtype, copy=False)
        s.sort()
        return _SortedScores(s)

    if quantiles is None:
        everything = np.concatenate([m.ravel() for m in maps])
        pos = _quantile_positions(everything.size)
        quantiles = np.partition(everything, pos)[pos]
    return _CurveInputs(
        good=sorted_scores(good_parts),
        defective=sorted_scores(defective_parts),
        per_defect_normal=[sorted_scores(p) for p in per_defect_parts],
        regions=_RegionScores(
            np.asarray(ptr, dtype=np.int64),
            np.concatenate(levels) if levels else np.empty(0, np.float64),
            np.concatenate(counts) if counts else np.empty(0, np.int64),
        ),
        saturation=np.asarray(saturation, dtype=np.float64),
        region_defect=np.asarray(region_defect, dtype=np.int64),
        defect_names=names,
        initial_thresholds=_initial_thresholds(low, high, quantiles),
    )


def auc_spro(
    maps: Sequence[np.ndarray],
    regions: Sequence[Sequence[RegionLike]],
    *,
    limits: Sequence[float] = FPR_LIMITS,
    max_samples: int | None = 10_000_000,
    seed: int = 0,
) -> SproResult:
    """AUC-sPRO of one category over all its test images, as the official evaluator computes it.

    ``maps[i]`` is the anomaly map (H, W) of test image ``i``, ``regions[i]`` its ground-truth
    regions (empty for good images). Maps as the official evaluator reads exported 16-bit PNGs
    (``uint16``) reproduce its figures; ``uint8``/``uint16`` maps are counted by histogram, other
    maps by sorting their scores (``float32`` kept as is, anything else as ``float64``).

    When the maps hold more than ``max_samples`` scores, the 48 initial quantile thresholds come
    from a subsample of ``floor(max_samples / n_images)`` scores per map drawn with ``seed`` (the
    reference draws it unseeded); ``max_samples=None`` always uses every score.
    """
    lims = _check_limits(limits)
    _check_inputs(maps, regions)
    total = int(sum(m.size for m in maps))
    sampled = max_samples is not None and total > int(max_samples)
    quantiles = _sample_quantiles(maps, int(max_samples), seed) if sampled else None
    if all(_is_level_map(m) for m in maps):
        n_levels = 1 << (8 * max(m.dtype.itemsize for m in maps))
        stats = _statistics(maps, regions, level_edges(n_levels))
        inputs = _inputs_from_statistics(stats, quantiles)
    else:
        inputs = _float_inputs(maps, regions, quantiles)
    return _run(inputs, lims)


# ---------------------------------------------------------------------------------------------
# Sufficient statistics


def level_edges(n_levels: int = 65536) -> np.ndarray:
    """Bin edges with one bin per integer level ``0 .. n_levels - 1`` (edges at ``k - 0.5``)."""
    if n_levels < 1:
        raise DataError(f"n_levels must be >= 1, got {n_levels}")
    return np.arange(n_levels + 1, dtype=np.float64) - 0.5


def uniform_edges(low: float, high: float, n_bins: int) -> np.ndarray:
    """``n_bins`` equal bins spanning ``[low, high]``."""
    if n_bins < 1 or not (np.isfinite(low) and np.isfinite(high) and high > low):
        raise DataError(f"cannot make {n_bins} bins over [{low}, {high}]")
    return np.linspace(float(low), float(high), n_bins + 1)


def _level_lookup(edges: np.ndarray, n_levels: int) -> np.ndarray:
    """Bin of each integer level ``0 .. n_levels - 1``."""
    levels = np.arange(n_levels, dtype=np.float64)
    return np.clip(np.searchsorted(edges, levels, side="right") - 1, 0, edges.size - 2)


def _bin_index(
    m: np.ndarray, edges: np.ndarray, lookup: dict[int, np.ndarray | None]
) -> np.ndarray:
    """Bin of every score: ``edges[b] <= s < edges[b + 1]``, out-of-range scores clipped."""
    n_bins = edges.size - 1
    if _is_level_map(m):
        n_levels = 1 << (8 * m.dtype.itemsize)
        if n_levels not in lookup:
            lut = _level_lookup(edges, n_levels)
            identity = lut.size <= n_bins and np.array_equal(lut, np.arange(n_levels))
            lookup[n_levels] = None if identity else lut
        lut = lookup[n_levels]
        return m if lut is None else lut[m]
    x = m.astype(np.float64, copy=False)
    width = np.diff(edges)
    if np.allclose(width, width[0], rtol=1e-9, atol=0.0):
        b = np.floor((x - edges[0]) / width[0]).astype(np.int64)
        np.clip(b, 0, n_bins - 1, out=b)
        # fix the rounding of scores that sit on an edge
        b -= (x < edges[b]) & (b > 0)
        b += (x >= edges[b + 1]) & (b < n_bins - 1)
        return b
    return np.clip(np.searchsorted(edges, x, side="right") - 1, 0, n_bins - 1)


def _csr_from_dense(rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ptr = [0]
    bins: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    for h in rows:
        nz = np.flatnonzero(h)
        bins.append(nz.astype(np.int64))
        counts.append(h[nz].astype(np.int64))
        ptr.append(ptr[-1] + nz.size)
    return (
        np.asarray(ptr, dtype=np.int64),
        np.concatenate(bins) if bins else np.empty(0, np.int64),
        np.concatenate(counts) if counts else np.empty(0, np.int64),
    )


def _dense_row(
    ptr: np.ndarray, bins: np.ndarray, counts: np.ndarray, row: int, n: int
) -> np.ndarray:
    out = np.zeros(n, dtype=np.int64)
    lo, hi = ptr[row], ptr[row + 1]
    out[bins[lo:hi]] = counts[lo:hi]
    return out


_INT_FIELDS = (
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
_ARRAY_KEYS = ("edges", *_INT_FIELDS, "defect_names_utf8")


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
        _validate(self)

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
                    row += _dense_row(
                        s.defect_normal_ptr, s.defect_normal_bins, s.defect_normal_counts,
                        k, s.n_bins,
                    )  # fmt: skip
            rows.append(row)
        dptr, dbins, dcounts = _csr_from_dense(rows)
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
        for name in _INT_FIELDS:
            out[name] = np.asarray(getattr(self, name), dtype=np.int64)
        blob = json.dumps(list(self.defect_names)).encode("utf-8")
        out["defect_names_utf8"] = np.frombuffer(blob, dtype=np.uint8).copy()
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, Any]) -> SproStatistics:
        """Rebuild from :meth:`to_arrays` output, validating everything (ModelError if malformed)."""
        if not isinstance(arrays, Mapping):
            raise ModelError("AUC-sPRO statistics must be a mapping of arrays")
        missing = [k for k in _ARRAY_KEYS if k not in arrays]
        extra = [k for k in arrays if k not in _ARRAY_KEYS]
        if missing or extra:
            raise ModelError(f"AUC-sPRO statistics: missing arrays {missing}, unexpected {extra}")
        for k in _ARRAY_KEYS:
            if not isinstance(arrays[k], np.ndarray):
                raise ModelError(f"AUC-sPRO statistics: {k} is not an array")
        want = {"edges": np.float64, "defect_names_utf8": np.uint8}
        for k in _ARRAY_KEYS:
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
            raise ModelError(
                "AUC-sPRO statistics: defect names must be a list of non-empty strings"
            )
        for k in ("n_images", "n_good"):
            if arrays[k].shape != ():
                raise ModelError(f"AUC-sPRO statistics: {k} must be a scalar array")
        kwargs: dict[str, Any] = {k: np.array(arrays[k]) for k in ("edges", *_INT_FIELDS)}
        kwargs["n_images"] = int(arrays["n_images"])
        kwargs["n_good"] = int(arrays["n_good"])
        return cls(defect_names=tuple(names), **kwargs)


def _validate(s: SproStatistics) -> None:
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
    for name in _INT_FIELDS[:-2]:
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
        _check_inputs(maps, regions)
    return _statistics(maps, regions, edges)


def _statistics(
    maps: Sequence[np.ndarray], regions: Sequence[Sequence[RegionLike]], edges: np.ndarray
) -> SproStatistics:
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
        b = _bin_index(m, edges, lookup)
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
    rptr, rbins, rcounts = _csr_from_dense(region_rows)
    dptr, dbins, dcounts = _csr_from_dense(per_defect)
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


def _inputs_from_statistics(stats: SproStatistics, quantiles: np.ndarray | None) -> _CurveInputs:
    centres = stats.centres

    def scores(hist: np.ndarray) -> _SortedScores:
        nz = np.flatnonzero(hist)
        return _SortedScores(centres[nz], hist[nz])

    defective = stats.normal_counts - stats.good_counts
    per_defect = [
        scores(
            _dense_row(
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
        quantiles = _quantiles_from_histogram(centres[occupied], stats.pixel_counts[occupied])
    return _CurveInputs(
        good=scores(stats.good_counts),
        defective=scores(defective),
        per_defect_normal=per_defect,
        regions=_RegionScores(stats.region_ptr, centres[stats.region_bins], stats.region_counts),
        saturation=stats.region_saturation.astype(np.float64),
        region_defect=stats.region_defects,
        defect_names=list(stats.defect_names),
        initial_thresholds=_initial_thresholds(
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
    lims = _check_limits(limits)
    return _run(_inputs_from_statistics(stats, None), lims)


# ---------------------------------------------------------------------------------------------
# Image level


def image_scores(maps: Sequence[np.ndarray]) -> np.ndarray:
    """Image anomaly score of each map: its maximum (float64)."""
    return np.asarray([float(np.max(m)) for m in maps], dtype=np.float64)


def _labels(scores: Sequence[float] | np.ndarray, defects: Sequence[str]):
    s = np.asarray(scores, dtype=np.float64)
    d = np.asarray(list(defects), dtype=object)
    if s.ndim != 1 or s.shape != d.shape:
        raise DataError(f"{s.size} image scores but {d.size} defect labels")
    if not np.all(np.isfinite(s)):
        raise DataError("image scores hold NaN or infinite values")
    good = d == "good"
    if not np.any(good):
        raise DataError("image AUROC needs good test images (defect 'good'); there are none")
    if np.all(good):
        raise DataError("image AUROC needs defective test images; every image is 'good'")
    return s, d, good


def image_auroc(scores: Sequence[float] | np.ndarray, defects: Sequence[str]) -> dict[str, float]:
    """Image-level AUROC, tie-corrected (the Mann-Whitney value, as scikit-learn computes it).

    Keys: each defect type (against the good images), ``"mean"`` (their unweighted mean) and
    ``"pooled"`` (all defective images against the good ones).
    """
    from sklearn.metrics import roc_auc_score

    s, d, good = _labels(scores, defects)
    kinds = sorted(set(d[~good].tolist()))
    clash = {"mean", "pooled"} & set(kinds)
    if clash:
        raise DataError(f"defect types may not be named {sorted(clash)}")
    per = {}
    for k in kinds:
        chosen = good | (d == k)
        per[k] = float(roc_auc_score((d[chosen] != "good").astype(int), s[chosen]))
    out = {"mean": float(np.mean(list(per.values())))}
    out["pooled"] = float(roc_auc_score((~good).astype(int), s))
    out.update(per)
    return out


def roc_curve_points(
    scores: Sequence[float] | np.ndarray, defects: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """ROC curve (FPR, TPR) of all defective images pooled against the good ones."""
    from sklearn.metrics import roc_curve

    s, _, good = _labels(scores, defects)
    fpr, tpr, _ = roc_curve((~good).astype(int), s, drop_intermediate=False)
    return fpr, tpr
