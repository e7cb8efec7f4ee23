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

from fedpatch_app.model.ann_index import IvfParams, for_bank
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
    maps = fold_maps(model, category, feats, folds, coreset_ratio, native_size, search)
    return bank, [m for m in maps if m is not None]


def fold_maps(
    model: PatchCore,
    category: str,
    feats: np.ndarray,
    folds: Mapping[int, int],
    coreset_ratio: float,
    native_size: tuple[int, int],
    search: IvfParams | None,
    others: np.ndarray | None = None,
) -> list[np.ndarray | None]:
    """Each image's map (image `i` has patch features `feats[i]` and fold `folds[i]`)
    from a coreset of the other folds' patches at `coreset_ratio`, joined with the bank
    rows `others` where given (a federated client: the global bank less its own rows);
    None for an image no such bank exists for (a single fold and no `others`). `search`:
    how every fold's bank is searched, the choice made for the category's own bank
    (`ann_index.for_bank`)."""
    n = len(feats)
    extra = None if others is None or not len(others) else np.asarray(others, dtype=np.float32)
    maps: list[np.ndarray | None] = [None] * n
    for fold in sorted(set(folds.values())):
        held = [i for i in range(n) if folds[i] == fold]
        kept = [i for i in range(n) if folds[i] != fold]
        if not held or (not kept and extra is None):
            continue
        other = _fold_bank(model, category, feats[kept], fold, coreset_ratio, extra)
        index = bank_index(other.features, model.device, search)
        for start in range(0, len(held), 8):
            part = held[start : start + 8]
            found = model.maps_of(other, index, feats[part], native_size)
            for i, anomaly_map in zip(part, found, strict=True):
                maps[i] = anomaly_map
    missing = sum(1 for m in maps if m is None)
    if missing:
        log.warning("%s: %d image(s) not cross-fitted (a single fold)", category, missing)
    return maps


def _fold_bank(
    model: PatchCore,
    category: str,
    kept: np.ndarray,
    fold: int,
    coreset_ratio: float,
    extra: np.ndarray | None,
) -> Bank:
    """The bank that scores fold `fold`: a coreset of the other folds' patches `kept`,
    joined with the rows `extra`."""
    if extra is not None and not len(kept):
        return Bank(extra, model.spec, category, radius=0.0, n_patches=len(extra))
    own = model.bank_of(kept, f"{category} (fold {fold} held out)", coreset_ratio)
    if extra is None:
        return own
    rows = np.concatenate([extra, own.features], axis=0)
    return Bank(rows, model.spec, category, radius=0.0, n_patches=len(extra) + own.n_patches)
