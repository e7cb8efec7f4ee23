"""The affine scaling of a category's anomaly maps to 16-bit levels.

All maps of a category share ONE scaling from the category's score range to the levels
0..65535, so that one threshold sweep over the levels ranks pixels of different images
exactly as the raw scores do, and the image score (the map's maximum) keeps its order
across images. The exported maps (`results.official_maps`), the pooled metrics, the
calibrated thresholds and the model folder all read scores through it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedpatch_app.errors import ModelError

#: Highest level of a 16-bit map.
UINT16_MAX = 65535


@dataclass(frozen=True)
class MapScaling:
    """Affine map from raw anomaly scores to 16-bit levels: ``low -> 0``, ``high -> 65535``.

    Scores outside ``[low, high]`` are clipped; levels are rounded to the nearest integer.
    When ``high == low`` (constant maps) every score maps to level 0.
    """

    low: float
    high: float

    def __post_init__(self) -> None:
        low, high = float(self.low), float(self.high)
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ModelError(f"map scaling needs finite bounds, got low={low}, high={high}")
        if high < low:
            raise ModelError(f"map scaling needs high >= low, got low={low}, high={high}")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    @property
    def step(self) -> float:
        """Raw-score width of one 16-bit level (0 for a constant scaling)."""
        return (self.high - self.low) / UINT16_MAX

    def to_uint16(self, anomaly_map: np.ndarray) -> np.ndarray:
        """Levels 0..65535 (uint16, same shape) of one map of raw scores."""
        values = np.asarray(anomaly_map)
        if not np.all(np.isfinite(values)):
            raise ModelError("anomaly map holds NaN or infinite scores; cannot export it")
        if self.high == self.low:
            return np.zeros(values.shape, dtype=np.uint16)
        levels = (values.astype(np.float64) - self.low) * (UINT16_MAX / (self.high - self.low))
        np.clip(levels, 0.0, float(UINT16_MAX), out=levels)
        np.rint(levels, out=levels)
        return levels.astype(np.uint16)

    def from_uint16(self, levels: np.ndarray) -> np.ndarray:
        """Raw scores (float64) back from 16-bit levels (exact up to half a level)."""
        return self.low + np.asarray(levels, dtype=np.float64) * self.step

    def to_dict(self) -> dict[str, float]:
        return {"low": self.low, "high": self.high}

    @classmethod
    def from_dict(cls, data: Any) -> MapScaling:
        """Inverse of `to_dict` (ModelError for anything else)."""
        try:
            return cls(float(data["low"]), float(data["high"]))
        except (KeyError, TypeError, ValueError):
            raise ModelError(f"map scaling: expected {{low, high}} numbers, got {data!r}") from None


def fit_scaling(maps: Iterable[np.ndarray]) -> MapScaling:
    """The one scaling of a category: its minimum and maximum over ALL its maps."""
    low = math.inf
    high = -math.inf
    count = 0
    for anomaly_map in maps:
        values = np.asarray(anomaly_map)
        if values.size == 0:
            continue
        lo, hi = float(np.min(values)), float(np.max(values))
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ModelError(f"anomaly map {count} holds NaN or infinite scores")
        low, high = min(low, lo), max(high, hi)
        count += 1
    if count == 0:
        raise ModelError("cannot fit a map scaling: no anomaly maps were given")
    return MapScaling(low, high)
