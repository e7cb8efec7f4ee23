"""Cross-fitted calibration on a federated client (`calibration-folds` K >= 2).

The client's good training images all feed its coreset (none is held out). It deals
them into K folds by the same seeded hash as a centralized run (`data.calibration.
crossfit_folds`, over the category's whole training list), and scores each fold's
images with a bank that cannot hold their patches: the global bank LESS every row this
client sent, joined with a coreset of its own other folds at the run's coreset ratio
(`model.crossfit.fold_maps`). The maps are cached and sent up as the held-out
calibration's are (a range in phase A, histograms in phase B): the server learns
nothing it does not learn from a held-out calibration.

How a client knows its own rows: it keeps the coreset it sent (in the transport dtype,
exactly as it travelled) on its own disk between the train and evaluate instructions,
and removes from the global bank every row equal to one of them, bit for bit. The merge
copies rows unchanged (greedy k-center selects rows of the union; the banks travel in
the same transport dtype both ways), so every row that came from this client matches;
a row of another client equal to one of ours is removed too, which only makes the
calibration bank smaller, never one holding the image's own patches. No label of any
other client is needed (the source check's labels are pseudonyms and are not used).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fedpatch_app.errors import ModelError
from fedpatch_app.federated import messages as M
from fedpatch_app.federated.map_cache import MapCache
from fedpatch_app.federated.wire import TRANSPORT_DTYPES
from fedpatch_app.model.ann_index import for_bank
from fedpatch_app.model.crossfit import fold_maps
from fedpatch_app.model.patchcore import Bank, PatchCore
from fedpatch_app.settings import RunSettings

log = logging.getLogger(__name__)


def sent_folder(cache: Path) -> Path:
    """Where a node keeps the coresets it sent, beside its map cache `cache` (the map
    cache is emptied at each evaluate instruction; this folder is not)."""
    return cache.with_name(f"{cache.name}-sent")


def keep_sent(cache: Path, banks: Mapping[str, Bank], transport_dtype: str) -> None:
    """Keep each category's coreset as it travels (`transport_dtype`)."""
    folder = sent_folder(cache)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    dtype = TRANSPORT_DTYPES[transport_dtype]
    for cat, bank in banks.items():
        rows = np.ascontiguousarray(np.asarray(bank.features).astype(dtype, copy=False))
        np.save(folder / f"{cat}.npy", rows, allow_pickle=False)


def remove_sent(cache: Path) -> None:
    shutil.rmtree(sent_folder(cache), ignore_errors=True)


def _sent(cache: Path, cat: str) -> np.ndarray:
    path = sent_folder(cache) / f"{cat}.npy"
    if not path.is_file():
        raise ModelError(
            f"{cat}: cross-fitted calibration (calibration-folds) needs the coreset this node "
            f"sent for it, kept at {path}, and it is not there: the node's cache-dir must "
            "survive from the train to the evaluate instruction"
        )
    return np.load(path, allow_pickle=False)


def own_rows(bank: np.ndarray, sent: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows of `bank` (float32, as decoded) equal bit for bit to a
    row of `sent` (as sent, any transport dtype)."""
    sent32 = np.ascontiguousarray(np.asarray(sent).astype(np.float32))
    rows = np.ascontiguousarray(np.asarray(bank, dtype=np.float32))
    if not len(sent32) or not len(rows):
        return np.zeros(len(rows), dtype=bool)
    if sent32.shape[1] != rows.shape[1]:
        raise ModelError(
            f"the coreset this node sent has {sent32.shape[1]} features per row, the global "
            f"bank {rows.shape[1]}"
        )
    mine = {r.tobytes() for r in sent32}
    return np.fromiter((r.tobytes() in mine for r in rows), dtype=bool, count=len(rows))


def score_folds(
    model: PatchCore,
    bank: Bank,
    category: Any,
    rel: list[str],
    settings: RunSettings,
    cache: MapCache,
) -> M.CalibrationRange | None:
    """Cache the cross-fitted calibration maps of this node's training images `rel` of
    `category` (paths in its folder) scored against `bank`, the global bank; None when
    no image could be scored (one fold here and no other client's row)."""
    from fedpatch_app.data.calibration import crossfit_folds

    cat = bank.category
    k = settings.calibration_folds
    fold = crossfit_folds(cat, category.train_rel, k, settings.seed)
    mine = own_rows(bank.features, _sent(cache.folder, cat))
    others = bank.features[~mine]
    log.info(
        "%s: cross-fitting %d images in %d folds against %d of the %d global rows (%d are "
        "this node's)",
        cat,
        len(rel),
        k,
        len(others),
        bank.size,
        int(mine.sum()),
    )
    root, size = category.root, category.size
    feats = model.features([root / r for r in rel], f"{cat}: calibration features", size)
    folds = {i: fold[r] for i, r in enumerate(rel)}
    search = for_bank(bank.size, model.search)  # the category's choice for its global bank
    found = fold_maps(model, cat, feats, folds, settings.coreset_ratio, size, search, others)
    del feats
    scored = [(r, m) for r, m in zip(rel, found, strict=True) if m is not None]
    if not scored:
        return None
    maps = [m for _, m in scored]
    lo, hi = cache.put(cat, "calibration", maps, {"rel_paths": [r for r, _ in scored]})
    return M.CalibrationRange(len(maps), lo, hi)
