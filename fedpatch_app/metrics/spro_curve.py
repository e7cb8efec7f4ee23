"""The AUC-sPRO threshold sweep of the official AutoVI evaluator, on any score source.

AUC-sPRO (saturated per-region overlap against the pooled false-positive rate) follows the
official AutoVI evaluation code (v3.0) step by step: the same initial thresholds, the same
threshold refinement, the same capped trapezoid. The sweep only needs to count, for any
threshold, the scores above it in a few multisets (the normal pixels, each ground-truth
region); :class:`CurveInputs` holds those multisets sorted once, so a threshold costs a binary
search instead of a pass over every map. Whether the multisets come from maps
(``spro_maps``) or from pooled histograms (``spro_histograms``), the curve is computed here,
by the same code.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from fedpatch_app.errors import DataError

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


class RegionLike(Protocol):
    """What the metrics need from a ground-truth region (``fedpatch_app.data.autovi.Region``)."""

    mask: np.ndarray
    defect: str
    saturation_area: int


def limit_key(limit: float) -> str:
    """Result key of an integration limit: ``0.01 -> "0.01"``, ``1 -> "1.0"``."""
    return str(float(limit))


def check_limits(limits: Sequence[float]) -> tuple[float, ...]:
    """The FPR integration limits as floats (DataError unless each lies in (0, 1])."""
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


class SortedScores:
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


class RegionScores:
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
class CurveInputs:
    """Everything the threshold sweep needs, however it was gathered (maps or statistics)."""

    good: SortedScores  # normal pixels of good images (all their pixels)
    defective: SortedScores  # normal pixels of defective images
    per_defect_normal: list[SortedScores]  # normal pixels of the images holding each defect
    regions: RegionScores
    saturation: np.ndarray  # (R,) float64, >= 1
    region_defect: np.ndarray  # (R,) int64 index into defect_names
    defect_names: list[str]
    initial_thresholds: list[float]


class _Sweep:
    """Evaluates (mean sPRO, FPR) at thresholds and keeps every raw count for the final curve."""

    def __init__(self, inputs: CurveInputs) -> None:
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


def initial_thresholds(low: float, high: float, quantiles: np.ndarray) -> list[float]:
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


def quantile_positions(n: int) -> np.ndarray:
    """Sorted positions of the 48 equal-count quantiles among ``n`` scores."""
    return np.linspace(0, n - 1, num=NUM_INITIAL_THRESHOLDS, endpoint=True, dtype=int)[1:-1]


def quantiles_from_histogram(levels: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The scores at the quantile positions of the sorted multiset ``levels`` x ``counts``."""
    cum = np.cumsum(counts, dtype=np.int64)
    pos = quantile_positions(int(cum[-1]))
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


def run_curve(inputs: CurveInputs, limits: tuple[float, ...]) -> SproResult:
    """The official procedure: initial thresholds, refinement, then the final curve and areas."""
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
