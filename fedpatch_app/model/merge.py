"""The federated merge of one category: the clients' coresets -> one global bank.

Pure functions (no Flower): the server's strategy calls `merge_category` per category.
The union of the coresets is reduced by greedy k-center (`merge_coresets`, the code every
run kind uses) to the size the centralized bank would have. Under differential privacy
the rows are the public centres and the noisy cluster means instead (`dp_rows`).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from fedpatch_app.model.embedding import FeatureSpec
from fedpatch_app.model.patchcore import Bank, merge_coresets
from fedpatch_app.model.row_store import RowStore

log = logging.getLogger(__name__)


class CoresetPart(Protocol):
    """One client's coreset of one category, as the server checked it."""

    features: np.ndarray
    n_patches: int
    n_images: int
    radius: float
    dp: dict[str, Any] | None


@dataclass
class MergedBank:
    """A category's global bank and the facts of its merge (results.json)."""

    bank: Bank
    info: dict[str, Any]
    #: Per bank row, the index of the part it came from (-1: the parent's rows); None
    #: under differential privacy (rows are noisy cluster means, of no one part).
    sources: np.ndarray | None = None


def content_digest(array: np.ndarray) -> str:
    """SHA-256 of an array's shape and bytes: a content order for the merge."""
    data = np.ascontiguousarray(array)
    return hashlib.sha256(repr(data.shape).encode() + data.tobytes()).hexdigest()


def stable_order(
    parts: Sequence[tuple[Any, CoresetPart]], partition_of: Callable[[Any], int | None]
) -> list[tuple[Any, CoresetPart]]:
    """The union's row order decides the greedy start: order the parts by what does not
    change with the engine, the node ids (random in a deployment), the order the replies
    arrived in or the last bits of the features (which differ with the thread count):
    the partition id, then the declared counts; the content only breaks remaining ties."""

    def key(item: tuple[Any, CoresetPart]) -> tuple:
        node, part = item
        pid = partition_of(node)
        known = pid is not None and pid >= 0
        counts = (part.n_patches, part.n_images, int(part.features.shape[0]))
        return (0 if known else 1, pid if known else 0, *counts, content_digest(part.features))

    return sorted(parts, key=key)


def dp_rows(parts: Sequence[CoresetPart]) -> tuple[np.ndarray, dict[str, Any]]:
    """Bank rows from the clients' DP releases (post-processing).

    Releases that share the public centres and clip (same digest) are summed, so their
    noise averages out; the rows are the public centres and the noisy means of the
    clusters whose summed noisy count passes the threshold. The clients of a run derive
    the centres the same way, so they share one digest; should they not, only the largest
    group is used (rows clipped to different norms cannot be searched with one query
    clip) and the others are counted as ignored.
    """
    from fedpatch_app.model.dp import noisy_means

    groups: dict[str, list[CoresetPart]] = {}
    for part in parts:
        groups.setdefault(part.dp["digest"], []).append(part)
    digest = min(groups, key=lambda d: (-len(groups[d]), d))
    members = groups[digest]
    if len(groups) > 1:
        log.warning(
            "DP releases with %d different public centres/clips: using the %d release(s) "
            "of the largest group, ignoring %d",
            len(groups),
            len(members),
            len(parts) - len(members),
        )
    rows, counts, threshold = noisy_means(
        [m.features for m in members],
        [m.dp["counts"] for m in members],
        [m.dp["sigma-counts"] for m in members],
        centres=members[0].dp["centres"],
    )
    return rows, {
        "groups": len(groups),
        "releases_ignored": len(parts) - len(members),
        "clusters_kept": int(counts.shape[0]),
        "public_centres": int(rows.shape[0] - counts.shape[0]),
        "clusters_sent": int(sum(p.features.shape[0] for p in parts)),
        "count_threshold": threshold,
        "clip": float(members[0].dp["clip"]),
    }


def merge_category(
    category: str,
    parts: Sequence[CoresetPart],
    k: int,
    spec: FeatureSpec,
    *,
    device: Any = "cpu",
    private: bool = False,
    parent: Bank | None = None,
    store: RowStore | None = None,
) -> MergedBank:
    """Greedy k-center over the union of `parts` (already in content order) to a bank of
    `k` rows; with a `parent` bank (a join), its rows are kept and count toward `k`, so a
    joined bank has the size a build with everyone has (at least one row is added). With
    a `store`, the union is memory-mapped from it (`merge_coresets`)."""
    t0 = time.perf_counter()
    dp_info: dict[str, Any] | None = None
    if private:
        rows, dp_info = dp_rows(parts)
        union = [rows]
    else:
        union = [p.features for p in parts]
    initial = None if parent is None else parent.features
    new_rows = k if parent is None else max(1, k - parent.size)
    merged, radius, sources = merge_coresets(
        union, new_rows, spec, device=device, initial=initial, store=store
    )
    total_patches = int(sum(p.n_patches for p in parts)) + (parent.n_patches if parent else 0)
    bank = Bank(
        features=merged,
        spec=spec,
        category=category,
        radius=float(radius),
        n_patches=total_patches,
        query_clip=float(dp_info["clip"]) if dp_info else 0.0,
    )
    info: dict[str, Any] = {
        "size": bank.size,
        "target_size": int(k),
        "covering_radius": float(radius),
        "union_rows": int(sum(u.shape[0] for u in union)),
        "total_patches": total_patches,
        "train_images": int(sum(p.n_images for p in parts)),
        "local_radius_max": float(max(p.radius for p in parts)),
        "parent_rows": 0 if parent is None else parent.size,
        "merge_seconds": round(time.perf_counter() - t0, 3),
    }
    if dp_info is not None:
        info["dp"] = dp_info
    log.info(
        "merge %s: %d clients, union %d rows -> bank of %d (radius %.4f)",
        category,
        len(parts),
        info["union_rows"],
        bank.size,
        radius,
    )
    return MergedBank(bank, info, None if private else sources)
