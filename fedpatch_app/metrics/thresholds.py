"""Decision thresholds calibrated on good held-out images, from pooled histograms.

A client never sends a calibration image or map: it sends two histograms on the 16-bit
levels of the category's map scaling (`CalibrationStats`): the levels of its calibration
images' scores (map maxima) and the levels of all their pixels. Histograms add up, so the
server's pooled histogram is exactly the one of all calibration images together, and:

- the image threshold is the smallest level whose share of calibration images scoring
  above it is at most `target-false-reject` (a good part is rejected when its score is
  above the threshold);
- the pixel threshold is the smallest level whose share of calibration pixels above it
  is at most `target-pixel-fpr` (the regions a prediction reports).

Thresholds are given back in raw units (nearest-neighbour distance): the upper edge of the
chosen level, so `raw > threshold` holds exactly for the levels above it. With n
calibration images the smallest false-reject rate that can be told apart from zero is 1/n;
when that is coarser than the target, the threshold is the highest calibration score and
the facts say so.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedpatch_app.errors import ModelError
from fedpatch_app.metrics.map_scaling import UINT16_MAX, MapScaling

#: The method, as model.json and results.json name it.
METHOD = (
    "quantile of the pooled histogram of good held-out calibration images (never in a bank), "
    "on the category's 16-bit map levels"
)


@dataclass(frozen=True)
class LevelHistogram:
    """Counts per 16-bit level, sparse: strictly increasing `levels`, positive `counts`."""

    levels: np.ndarray
    counts: np.ndarray

    @classmethod
    def of(cls, values: np.ndarray) -> LevelHistogram:
        """The histogram of uint16 level values (any shape)."""
        dense = np.bincount(np.asarray(values, dtype=np.int64).ravel(), minlength=UINT16_MAX + 1)
        levels = np.flatnonzero(dense)
        return cls(levels.astype(np.int64), dense[levels].astype(np.int64))

    @classmethod
    def empty(cls) -> LevelHistogram:
        return cls(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def merge(self, other: LevelHistogram) -> LevelHistogram:
        dense = np.zeros(UINT16_MAX + 1, dtype=np.int64)
        np.add.at(dense, self.levels, self.counts)
        np.add.at(dense, other.levels, other.counts)
        levels = np.flatnonzero(dense)
        return LevelHistogram(levels.astype(np.int64), dense[levels])

    def check(self, what: str) -> LevelHistogram:
        """ModelError unless the histogram is well formed (a client's reply)."""
        lv, ct = np.asarray(self.levels), np.asarray(self.counts)
        if (
            lv.ndim != 1
            or ct.shape != lv.shape
            or lv.dtype.kind not in "iu"
            or ct.dtype.kind not in "iu"
        ):
            raise ModelError(f"{what}: levels and counts must be 1-D integer arrays of one length")
        if lv.size and (lv.min() < 0 or lv.max() > UINT16_MAX or np.any(np.diff(lv) <= 0)):
            raise ModelError(f"{what}: levels must be increasing 16-bit levels")
        if np.any(ct <= 0):
            raise ModelError(f"{what}: counts must be positive")
        return LevelHistogram(lv.astype(np.int64), ct.astype(np.int64))

    def level_at_rate(self, rate: float) -> tuple[int, float]:
        """The smallest level with at most `rate` of the counts strictly above it, and the
        share actually above it."""
        total = self.total
        if total == 0:
            raise ModelError("no calibration values to set a threshold from")
        above = total - np.cumsum(self.counts)
        index = int(np.flatnonzero(above <= rate * total)[0])
        return int(self.levels[index]), float(above[index] / total)


@dataclass(frozen=True)
class CalibrationStats:
    """One category's calibration histograms (one client's, or pooled)."""

    images: LevelHistogram
    pixels: LevelHistogram

    @classmethod
    def of_maps(cls, maps: Iterable[np.ndarray], scaling: MapScaling) -> CalibrationStats:
        images, pixels = [], LevelHistogram.empty()
        for anomaly_map in maps:
            levels = scaling.to_uint16(np.asarray(anomaly_map))
            images.append(int(levels.max()))
            pixels = pixels.merge(LevelHistogram.of(levels))
        return cls(LevelHistogram.of(np.asarray(images, dtype=np.int64)), pixels)

    def merge(self, other: CalibrationStats) -> CalibrationStats:
        return CalibrationStats(self.images.merge(other.images), self.pixels.merge(other.pixels))

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "image_levels": self.images.levels,
            "image_counts": self.images.counts,
            "pixel_levels": self.pixels.levels,
            "pixel_counts": self.pixels.counts,
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], what: str) -> CalibrationStats:
        try:
            images = LevelHistogram(arrays["image_levels"], arrays["image_counts"])
            pixels = LevelHistogram(arrays["pixel_levels"], arrays["pixel_counts"])
        except KeyError as exc:
            raise ModelError(f"{what}: missing {exc}") from None
        return cls(images.check(f"{what} images"), pixels.check(f"{what} pixels"))


def raw_of_level(scaling: MapScaling, level: int) -> float:
    """The raw score at the upper edge of a level: `raw > it` exactly for higher levels."""
    if scaling.step == 0:
        return float(scaling.low)
    return float(scaling.low + (min(level, UINT16_MAX) + 0.5) * scaling.step)


#: Fewer image scores than this under a threshold: a warning in the fit's output, the
#: results, report.md and the review page (its false-reject rate is barely known).
MIN_CALIBRATION_SCORES = 20


def support_warning(category: str, thresholds: Mapping[str, Any] | None) -> str | None:
    """The warning for a category whose image threshold rests on too few scores."""
    image = (thresholds or {}).get("image") or {}
    count = image.get("calibration_images")
    if not isinstance(count, int) or count >= MIN_CALIBRATION_SCORES:
        return None
    return (
        f"{category}: the image threshold rests on {count} calibration score(s), fewer than "
        f"{MIN_CALIBRATION_SCORES}: the false-reject rate it gives on new good parts is "
        f"barely known (smallest resolvable rate {1 / max(count, 1):.3g}); give more good "
        "images, a larger calibration-fraction or calibration-folds=5 (every good image)"
    )


def _threshold(hist: LevelHistogram, rate: float, scaling: MapScaling, unit: str) -> dict[str, Any]:
    level, achieved = hist.level_at_rate(rate)
    resolvable = 1.0 / hist.total
    facts: dict[str, Any] = {
        "raw": raw_of_level(scaling, level),
        "level": level,
        "target_rate": rate,
        f"calibration_{unit}": hist.total,
        "calibration_rate": achieved,
        "smallest_resolvable_rate": resolvable,
    }
    if resolvable > rate:
        facts["note"] = (
            f"{hist.total} calibration {unit} resolve rates down to {resolvable:.3g} only, "
            f"coarser than the target {rate:g}: the threshold is the highest calibration "
            "value, and the rate actually reached on parts is not known to that precision"
        )
    return facts


def calibrate(
    stats: CalibrationStats, scaling: MapScaling, false_reject: float, pixel_fpr: float
) -> dict[str, Any]:
    """Image and pixel thresholds of one category (raw units), with how they were set."""
    return {
        "method": METHOD,
        "image": _threshold(stats.images, false_reject, scaling, "images"),
        "pixel": _threshold(stats.pixels, pixel_fpr, scaling, "pixels"),
    }


def _counts(scores: np.ndarray, bad: np.ndarray, threshold: float) -> tuple[int, int, int, int]:
    rejected = scores > threshold
    return (
        int(np.sum(rejected & bad)),
        int(np.sum(rejected & ~bad)),
        int(np.sum(~rejected & bad)),
        int(np.sum(~rejected & ~bad)),
    )


def _f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def threshold_on_test(
    scores: Sequence[float], defects: Sequence[str], threshold: float
) -> dict[str, Any]:
    """What a threshold achieves on labelled test images, and the F1-optimal threshold
    on the same images for comparison (it uses the labels: not available on a line)."""
    raw = np.asarray(scores, dtype=np.float64)
    bad = np.asarray([d != "good" for d in defects])
    tp, fp, fn, tn = _counts(raw, bad, threshold)
    # "reject every part" is the float just below the lowest score, not -inf: the result
    # goes into JSON (model.json allows no infinity), e.g. for a split of defective parts only
    candidates = np.unique(raw)
    candidates = np.concatenate([[np.nextafter(candidates[0], -np.inf)], candidates])
    f1s = [_f1(*_counts(raw, bad, t)[:3]) for t in candidates]
    best = int(np.argmax(f1s))
    return {
        "threshold": threshold,
        "false_reject_rate": _ratio(fp, fp + tn),
        "detection_rate": _ratio(tp, tp + fn),
        "precision": _ratio(tp, tp + fp),
        "f1": _f1(tp, fp, fn),
        "f1_optimal": {"threshold": float(candidates[best]), "f1": float(f1s[best])},
        "test_good": int(fp + tn),
        "test_defective": int(tp + fn),
    }


def category_thresholds(
    parts: Sequence[CalibrationStats], scaling: MapScaling, false_reject: float, pixel_fpr: float
) -> dict[str, Any] | None:
    """Thresholds from every client's calibration histograms of one category (None when
    no calibration image was held out)."""
    if not parts:
        return None
    merged = parts[0]
    for part in parts[1:]:
        merged = merged.merge(part)
    return calibrate(merged, scaling, false_reject, pixel_fpr)
