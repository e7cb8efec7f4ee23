"""The leave-one-source-out check: which client's bank rows hide labelled defects.

The robust merge (`defences.robust_merge`) judges a coreset row by whether the other
clients' data supports it. Defect features that look like normal features elsewhere (a
missing part shows background that is normal in other places) are supported and pass.
Only labelled defects can show that such rows do harm, and only the clients hold them.

Every row of a global bank carries its source: a label for the client that sent it
(drawn for the run; `PARENT` for the rows of a parent model under `init-model`). A client searches each source's rows
separately, so it knows every patch's distance to the whole bank (the minimum over the
sources) and to the bank less any one source (the minimum over the others) for the cost
of one search over the bank. Per category it replies, for the whole bank and for each
source left out, the AUROC of its defect patches against the patches of its good images
(test and calibration): how well its defects stand out; and per source how many of its
defect patches score higher without it (their nearest row is that source's).

The server (`judge`) takes each source's GAIN, the rise of that AUROC when the source is
left out, as reported by the OTHER clients whose defect patches it touches (at least one
affected, at least `MIN_DEFECT_PATCHES` defect patches in all: one or two patches decide
nothing), and flags a source whose lower-median gain exceeds `source-check-gain`.
Leaving honest rows out makes defects stand out less or about the same (the good patches
lose their nearest rows too); leaving planted defect rows out makes them stand out more.
A client's report about itself is never used, and with the lower median one lying
reporter cannot make an honest source look guilty where at least one honest reporter's
defects touch it.

Pure numpy (no Flower): the client code calls `SourceDistances` and `report`, the
server's strategy `judge`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedpatch_app.model.memory_bank import MemoryBank

#: The source of a parent model's rows: never judged, part of every bank compared.
PARENT = -1
#: A report judges a source only if it rests on at least this many defect patches.
MIN_DEFECT_PATCHES = 3


def bank_sources(owners: np.ndarray) -> list[int]:
    """The sources that can be left out of a bank whose rows come from `owners`: every
    client source, provided some other rows remain without it (else nothing is left to
    compare with)."""
    present = sorted({int(o) for o in np.unique(owners)})
    if len(present) < 2:
        return []
    return [s for s in present if s != PARENT]


class SourceDistances:
    """Each query patch's distance to the rows of each source of one bank.

    Called as the `observe` hook of `PatchCore.predict` (one call per batch of images);
    `take()` returns one (groups, h, w) grid per image scored since the last take, the
    groups being `groups` (the judged sources, then `PARENT` when present)."""

    def __init__(self, features: np.ndarray, owners: np.ndarray, device: Any = None) -> None:
        owners = np.asarray(owners, dtype=np.int64)
        self.sources = bank_sources(owners)
        self.groups = self.sources + ([PARENT] if PARENT in set(owners.tolist()) else [])
        self.indexes = [MemoryBank(features[owners == g], device=device) for g in self.groups]
        self._grids: list[np.ndarray] = []

    def __call__(self, start: int, queries: np.ndarray, shape: tuple[int, int, int]) -> None:
        b, h, w = shape
        found = np.stack([index.patch_scores(queries) for index in self.indexes])
        self._grids.extend(found.reshape(len(self.groups), b, h, w).transpose(1, 0, 2, 3))

    def take(self) -> list[np.ndarray]:
        grids, self._grids = self._grids, []
        return grids


def defect_patch_mask(regions: Sequence[np.ndarray], grid: tuple[int, int]) -> np.ndarray:
    """Which cells of a (h, w) patch grid a defect covers: the share of each cell's
    native pixels inside any region is at least a quarter."""
    import torch
    import torch.nn.functional as F

    union = np.zeros_like(regions[0], dtype=np.float32)
    for mask in regions:
        union = np.maximum(union, mask.astype(np.float32))
    share = F.adaptive_avg_pool2d(torch.from_numpy(union)[None, None], grid)[0, 0].numpy()
    return share >= 0.25


def leave_out(distances: np.ndarray, sources: int) -> np.ndarray:
    """(1 + sources, n) patch scores from (groups, n) distances per group: row 0 with the
    whole bank, row 1 + j with the bank less group j (the first `sources` groups)."""
    whole = distances.min(axis=0)
    if sources == 0:
        return whole[None]
    # Without group j a patch's score is unchanged unless j held its nearest row; then it
    # is the second-nearest group's distance.
    second = np.partition(distances, 1, axis=0)[1]
    nearest = distances.argmin(axis=0)
    rows = [whole] + [np.where(nearest == j, second, whole) for j in range(sources)]
    return np.stack(rows)


def auroc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """Area under the ROC curve of positives vs negatives by counting: the mean over
    positives of the share of negatives below (ties count half). 1 = every positive above
    every negative; 0 = every one below."""
    ranked = np.sort(np.asarray(negatives, dtype=np.float64))
    values = np.asarray(positives, dtype=np.float64)
    below = np.searchsorted(ranked, values, side="left")
    tied = np.searchsorted(ranked, values, side="right") - below
    return float(np.mean((below + 0.5 * tied) / len(ranked)))


@dataclass
class Report:
    """One client's check of one category: the AUROC with the whole bank, then with each
    source left out (in the order of `bank_sources`); per source the defect patches that
    score higher without it; how many defect and good patches it rests on."""

    values: np.ndarray
    affected: np.ndarray
    positives: int
    negatives: int


def report(
    defect_grids: Sequence[np.ndarray],
    defect_cells: Sequence[np.ndarray],
    good_grids: Sequence[np.ndarray],
    sources: int,
) -> Report | None:
    """A client's report from its per-group distance grids: `defect_grids` of defective
    test images with their defect cells (boolean (h, w)), `good_grids` of good test and
    calibration images. None when it has no defect cell or no good patch to compare."""
    pos = [g[:, cells] for g, cells in zip(defect_grids, defect_cells, strict=True)]
    pos = [p for p in pos if p.shape[1]]
    if not pos or not good_grids or sources < 1:
        return None
    positives = leave_out(np.concatenate(pos, axis=1), sources)
    negatives = leave_out(
        np.concatenate([g.reshape(g.shape[0], -1) for g in good_grids], 1), sources
    )
    values = np.array([auroc(p, n) for p, n in zip(positives, negatives, strict=True)])
    affected = (positives[1:] > positives[0]).sum(axis=1).astype(np.int64)
    return Report(values, affected, int(positives.shape[1]), int(negatives.shape[1]))


def lower_median(values: Sequence[float]) -> float:
    """The smaller middle value: raising it takes more than half of the values."""
    ordered = sorted(values)
    return float(ordered[(len(ordered) - 1) // 2])


def judge(
    sources: Sequence[int], reports: dict[int, Report], threshold: float
) -> dict[int, dict[str, Any]]:
    """Per source: the gains the other reporters whose defect patches it touches saw
    when it was left out, their lower median, and whether it exceeds `threshold`
    (`reports` keyed by reporter partition)."""
    out: dict[int, dict[str, Any]] = {}
    for j, source in enumerate(sources):
        gains = {
            reporter: float(r.values[1 + j] - r.values[0])
            for reporter, r in sorted(reports.items())
            if reporter != source and r.positives >= MIN_DEFECT_PATCHES and r.affected[j] > 0
        }
        patches = sum(reports[reporter].positives for reporter in gains)
        verdict: dict[str, Any] = {
            "reporters": len(gains),
            "defect_patches": patches,
            "gains": gains,
        }
        if gains:
            verdict["gain"] = lower_median(list(gains.values()))
            verdict["flagged"] = verdict["gain"] > threshold
        else:
            verdict["gain"], verdict["flagged"] = None, False
        out[source] = verdict
    return out
