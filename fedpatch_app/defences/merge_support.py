"""The robust merge on the server: each category's coresets checked for support before the
merge, the unsupported rows quarantined, the clients concerned flagged by name.

The geometry is in `defences.robust_merge` (pure); this module applies its verdicts to the
clients' checked replies and records them (results.json `federated.banks.<cat>.support`,
and a flag per client).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from fedpatch_app.defences.robust_merge import Verdict, check_support
from fedpatch_app.settings import RunSettings

if TYPE_CHECKING:  # the server's types; a defence does not load Flower
    from fedpatch_app.federated.codec_train import LocalCoreset
    from fedpatch_app.federated.registry import ClientRegistry

log = logging.getLogger(__name__)

Holders = list[tuple[int, "LocalCoreset"]]


def _flag(registry: ClientRegistry, node_id: int, cat: str, verdict: Verdict, threshold: float):
    what = f"{verdict.unsupported} of its {verdict.rows} {cat} coreset rows are unsupported "
    what += f"(no other client has rows within {threshold:.3g} of its row spacings of them)"
    if verdict.action == "quarantined":
        registry.flag(node_id, "merge", f"{what}: left out of the bank (quarantined)")
    elif verdict.action == "dropped":
        registry.flag(
            node_id,
            "merge",
            f"{what}: more than an honest tail gives, so ALL its {cat} rows were left out of "
            "the bank (its images are still evaluated)",
        )
    elif verdict.action == "kept-tail":
        # Not a flag: honest lines have such tails (the larger the line, the longer).
        log.info(
            "%s: %d of node %d's %d rows unsupported, within the honest tail of a holder "
            "%.2fx the size of the largest other: kept",
            cat,
            verdict.unsupported,
            node_id,
            verdict.rows,
            verdict.size_ratio,
        )
    elif verdict.action == "kept-mostly-unsupported":
        registry.flag(
            node_id,
            "merge",
            f"{what}: most of its rows, so its normal images differ from everyone else's or "
            "it sends made-up rows; its rows were KEPT unexamined (robust-merge = strict "
            "leaves them out)",
        )


def vet_category(
    registry: ClientRegistry,
    cat: str,
    holders: Holders,
    settings: RunSettings,
    *,
    parent: np.ndarray | None = None,
    device: Any = "cpu",
) -> tuple[Holders, dict[str, Any]]:
    """The holders of one category with their quarantined rows removed, and the facts."""
    if settings.dp.enabled:
        reason = "rows are noisy cluster sums under differential privacy: not comparable"
        return holders, {"checked": False, "reason": reason}
    support = check_support(
        [part.features for _, part in holders],
        z=settings.robust_merge_z,
        mode=settings.robust_merge,
        reference=parent,
        device=device,
    )
    facts = dict(support.facts)
    if not facts["checked"]:
        return holders, facts
    vetted: Holders = []
    facts["clients"] = {}
    for (node_id, part), verdict in zip(holders, support.verdicts, strict=True):
        facts["clients"][registry.clients[node_id].label] = verdict.to_dict()
        if verdict.action:
            _flag(registry, node_id, cat, verdict, facts["threshold_support"])
        keep = verdict.keep
        if keep.all():  # the same rows: no copy (they may be memory-mapped)
            vetted.append((node_id, part))
        else:
            vetted.append((node_id, dataclasses.replace(part, features=part.features[keep])))
    log.info(
        "%s: %d of %d coreset rows unsupported by any other client, %d quarantined",
        cat,
        facts["unsupported"],
        facts["rows"],
        facts["quarantined"],
    )
    return vetted, facts
