"""Cross-fitted calibration: every good training image both feeds the bank and
calibrates the thresholds, without ever being scored against its own patches.

The good training images of a category are dealt into K folds (`data.calibration.
crossfit_folds`). The features are extracted once. The final bank is built from all
images, exactly as without calibration; for each fold, a bank built from the other
folds' patches (same coreset ratio) scores the fold's images. The K banks are thrown
away; the maps they give are the calibration maps, one per training image, so the
thresholds rest on every good image instead of the share a held-out split leaves out
of the bank. The cost: K more coreset selections and scoring every training image once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from fedpatch_app.model.ann_index import for_bank
from fedpatch_app.model.memory_bank import bank_index
from fedpatch_app.model.patchcore import Bank, PatchCore

log = logging.getLogger(__name__)


def crossfit_bank(
    model: PatchCore,
    category: str,
    paths: Sequence[Path],
    folds: Mapping[int, int],
    coreset_ratio: float,
    native_size: tuple[int, int],
) -> tuple[Bank, list[np.ndarray]]:
    """(bank of all `paths`, each image's map from a bank without its fold); `folds`
    maps an image's index in `paths` to its fold."""
    feats = model.features(list(paths), f"{category}: train features", native_size)
    bank = model.bank_of(feats, category, coreset_ratio)
    search = for_bank(bank.size, model.search)  # the folds follow the category's choice
    maps: list[np.ndarray | None] = [None] * len(paths)
    for fold in sorted(set(folds.values())):
        held = [i for i in range(len(paths)) if folds[i] == fold]
        kept = [i for i in range(len(paths)) if folds[i] != fold]
        if not held or not kept:
            continue
        other = model.bank_of(feats[kept], f"{category} (fold {fold} held out)", coreset_ratio)
        index = bank_index(other.features, model.device, search)
        for start in range(0, len(held), 8):
            part = held[start : start + 8]
            found = model.maps_of(other, index, feats[part], native_size)
            for i, anomaly_map in zip(part, found, strict=True):
                maps[i] = anomaly_map
    missing = [str(paths[i]) for i, m in enumerate(maps) if m is None]
    if missing:
        log.warning("%s: %d image(s) not cross-fitted (a single fold)", category, len(missing))
    return bank, [m for m in maps if m is not None]
