"""A category's global map scaling from the clients' map ranges, bounded so that no single
reply can set it.

Every client quantizes its maps to 16-bit levels of ONE scaling per category, so that the
pooled metrics are exact. With the exact scaling (`exact`: the smallest and largest value
any client reports) one client that reports a map maximum of 1e30 puts every honest map
on level 0, and the pooled metrics of everyone fall to chance.

`robust` bounds the scaling's top by a value the clients' evaluation replies cannot move:
`RADIUS_FACTOR` times the covering radius of the merged bank, which the server computed
itself (every training row lies within that distance of the bank, so honest maps rarely
reach a few radii: largest ratio measured on the project's synthetic data, 4.7). A client
whose reported maximum lies above the bound is named; its values above it share the top
level, so it can only blur the ranking of its own highest-scoring images. On honest
replies below the bound the scaling, and so every pooled metric, equals the exact one.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedpatch_app.metrics.map_scaling import MapScaling

#: The bound on map values, in covering radii of the merged bank.
RADIUS_FACTOR = 16.0
MODES = ("robust", "exact")


@dataclass
class ScalingDecision:
    """The scaling of one category, the bound used (None: exact) and who exceeded it."""

    scaling: MapScaling
    bound: float | None = None
    above: list[Hashable] = field(default_factory=list)
    note: str = ""

    def facts(self) -> dict[str, Any]:
        out: dict[str, Any] = {"bound": self.bound, "clipped": bool(self.above)}
        if self.note:
            out["note"] = self.note
        return out


def _bound(highs: list[float], low: float, radius: float) -> tuple[float, str]:
    if radius > 0 and math.isfinite(radius) and RADIUS_FACTOR * radius > low:
        return RADIUS_FACTOR * radius, ""
    # No usable radius (a bank that holds every patch): the median client's maximum.
    return RADIUS_FACTOR * float(np.median(highs)), "bound from the median client maximum"


def global_scaling(
    ranges: Mapping[Hashable, tuple[float, float]], *, mode: str, radius: float
) -> ScalingDecision:
    """One category's scaling from each client's (low, high) map range (see module doc)."""
    if mode not in MODES:
        raise ValueError(f"map scaling mode must be one of {MODES}, got {mode!r}")
    low = min(lo for lo, _ in ranges.values())
    high = max(hi for _, hi in ranges.values())
    if mode == "exact":
        return ScalingDecision(MapScaling(low, high))
    bound, note = _bound([hi for _, hi in ranges.values()], low, radius)
    if bound <= low:
        note = f"bound {bound:.4g} below the lowest map value {low:.4g}: exact scaling used"
        return ScalingDecision(MapScaling(low, high), None, [], note)
    above = [key for key, (_, hi) in ranges.items() if hi > bound]
    return ScalingDecision(MapScaling(low, min(high, bound)), bound, above, note)
