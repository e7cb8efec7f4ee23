"""Equity across categories and clients: spread of the metrics, and bank budgets by need.

`fairness_block(results)` is the "fairness" block of every results.json: per metric
(AUC-sPRO@0.3, image AUROC) the spread across categories (worst category, best, max-min
gap, population standard deviation, mean) and, for federated runs, the same across the
clients' own local metrics (mean over the categories each client evaluated).

`bank_budget(patches, ratio, mode)` sizes each category's global memory bank:
"volume" (the default) = ratio x the category's patches (the centralized size);
"equal" = the same total split equally across categories; "sqrt" = the same total split
in proportion to the square root of the patch counts (the small categories gain, the
large ones lose, less than with "equal").
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from fedpatch_app.errors import ConfigError

#: (results key, label, how to read it from a category block, local-metric suffix).
METRICS = (
    (
        "auc_spro_0.3",
        "AUC-sPRO@0.3",
        lambda b: (b.get("auc_spro") or {}).get("0.3"),
        "auc_spro.0.3",
    ),
    (
        "image_auroc",
        "image AUROC",
        lambda b: (b.get("image_auroc") or {}).get("mean"),
        "image_auroc",
    ),
)
BUDGETS = ("volume", "equal", "sqrt")


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def spread(values: Mapping[str, Any]) -> dict[str, Any]:
    """Worst/best member, max-min gap, population std and mean of the finite values."""
    clean = {k: v for k, v in ((k, _finite(v)) for k, v in values.items()) if v is not None}
    if not clean:
        return {"n": 0, "worst": None, "worst_value": None, "best": None, "best_value": None,
                "gap": None, "std": None, "mean": None}  # fmt: skip
    worst = min(sorted(clean), key=lambda k: clean[k])
    best = max(sorted(clean), key=lambda k: clean[k])
    # Summed in the values' order, not the members': the same bits whatever order the
    # clients came in (a SuperLink's node ids are random).
    vals = sorted(clean.values())
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals))
    return {
        "n": len(vals),
        "worst": worst,
        "worst_value": clean[worst],
        "best": best,
        "best_value": clean[best],
        "gap": clean[best] - clean[worst],
        "std": std,
        "mean": mean,
    }


def client_means(clients: list[Mapping[str, Any]], suffix: str) -> dict[str, float]:
    """Per client (labelled `client <partition id>`), the mean of its local metric over
    the categories it evaluated (keys `<category>.<suffix>`)."""
    out: dict[str, float] = {}
    for client in clients:
        local = client.get("local_metrics") or {}
        if not isinstance(local, Mapping):
            continue
        vals = [
            v for k, v in local.items() if k.split(".", 1)[-1] == suffix and _finite(v) is not None
        ]
        if vals:
            pid = client.get("partition_id")
            # Nodes that name no partition (-1) are told apart by their node ids.
            known = isinstance(pid, int) and pid >= 0
            label = f"client {pid}" if known else f"node {client.get('node_id')}"
            out[label] = sum(float(v) for v in vals) / len(vals)
    return out


def fairness_block(results: Mapping[str, Any]) -> dict[str, Any]:
    """The "fairness" block of a results dict (see the module doc)."""
    cats = {c: b for c, b in (results.get("categories") or {}).items() if isinstance(b, Mapping)}
    out: dict[str, Any] = {"categories": {}, "clients": {}}
    for key, _, read, suffix in METRICS:
        out["categories"][key] = spread({c: read(b) for c, b in cats.items()})
        fed = results.get("federated")
        clients = fed.get("clients") if isinstance(fed, Mapping) else None
        if not isinstance(clients, list):
            clients = []
        per_client = client_means(
            [c for c in clients if isinstance(c, Mapping) and c.get("status") != "dropped"],
            suffix,
        )
        if per_client:
            out["clients"][key] = {**spread(per_client), "values": per_client}
    if not out["clients"]:
        out["clients"] = None
    return out


def bank_budget(patches: Mapping[str, int], ratio: float, mode: str = "volume") -> dict[str, int]:
    """Global bank size per category (see the module doc); every size is at least 1."""
    from fedpatch_app.model.patchcore import coreset_size

    if mode not in BUDGETS:
        raise ConfigError(
            f"run config 'bank-budget': expected one of {', '.join(BUDGETS)}, got {mode!r}"
        )
    volume = {c: coreset_size(int(n), ratio) for c, n in patches.items()}
    if mode == "volume" or len(volume) <= 1:
        return volume
    total = sum(volume.values())
    weights = {c: 1.0 if mode == "equal" else math.sqrt(float(patches[c])) for c in volume}
    wsum = sum(weights.values())
    raw = {c: total * w / wsum for c, w in weights.items()}
    # Largest remainder: the sizes add up to the same total as "volume".
    sizes = {c: int(math.floor(v)) for c, v in raw.items()}
    left = total - sum(sizes.values())
    for c in sorted(raw, key=lambda c: (-(raw[c] - sizes[c]), c))[:left]:
        sizes[c] += 1
    return {c: max(1, v) for c, v in sizes.items()}
