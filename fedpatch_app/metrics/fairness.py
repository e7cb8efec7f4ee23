"""Equity across categories and clients: the spread of the metrics.

`fairness_block(results)` is the "fairness" block of every results.json: per metric
(AUC-sPRO@0.3, image AUROC) the spread across categories (worst category, best, max-min
gap, population standard deviation, mean) and, for federated runs, the same across the
clients' own local metrics (mean over the categories each client evaluated).

How each category's bank is sized (`bank-budget`) is in `defences.bank_size`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

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


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def spread(values: Mapping[str, Any]) -> dict[str, Any]:
    """Worst/best member, max-min gap, population std and mean of the finite values."""
    clean = {k: v for k, v in ((k, _finite(v)) for k, v in values.items()) if v is not None}
    if not clean:
        return {
            "n": 0,
            "worst": None,
            "worst_value": None,
            "best": None,
            "best_value": None,
            "gap": None,
            "std": None,
            "mean": None,
        }
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
