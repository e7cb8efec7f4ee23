"""Which good training images are held out to calibrate the decision thresholds.

Per category, `round(calibration-fraction x n)` of its n training images are held out
(at least one when the fraction is above 0 and the category has two images or more):
the images with the lowest hash of (seed, category, path in the category). The choice
depends on the category's image list alone, never on which client holds an image or in
which order, so the centralized, federated and local-only runs of the same data hold out
exactly the same images, and the union of the clients' calibration images is the
centralized calibration set. Held-out images never enter a memory bank.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class CalibrationSplit:
    """Training images of one category: those for the bank, those for calibration."""

    fit: list[str]
    calibration: list[str]


def _rank(seed: int, category: str, rel_path: str) -> bytes:
    return hashlib.sha256(f"{seed}:{category}:{rel_path}".encode()).digest()


def calibration_set(category: str, universe: Sequence[str], fraction: float, seed: int) -> set[str]:
    """The held-out images of a category whose training images are `universe`."""
    n = len(universe)
    if fraction <= 0 or n < 2:
        return set()
    k = min(n - 1, max(1, round(fraction * n)))
    return set(sorted(universe, key=lambda rel: _rank(seed, category, str(rel)))[:k])


def split_calibration(
    category: str,
    rel_paths: Sequence[str],
    fraction: float,
    seed: int,
    universe: Sequence[str] | None = None,
) -> CalibrationSplit:
    """Split training images `rel_paths` (paths in the category folder) of a category whose
    whole training set is `universe` (default: `rel_paths` themselves)."""
    held = calibration_set(
        category, list(universe if universe is not None else rel_paths), fraction, seed
    )
    return CalibrationSplit(
        [r for r in rel_paths if r not in held], [r for r in rel_paths if r in held]
    )


def crossfit_folds(category: str, universe: Sequence[str], folds: int, seed: int) -> dict[str, int]:
    """Fold (0..folds-1) of each training image of a category for cross-fitted
    calibration: the images in the order of the same hash as `calibration_set`, dealt
    round-robin, so folds differ in size by one at most and depend on the image list
    alone (the same on every machine and in every run kind)."""
    ranked = sorted(universe, key=lambda rel: _rank(seed, category, str(rel)))
    return {str(rel): i % folds for i, rel in enumerate(ranked)}
