"""The facts of a federated run that results.json keeps: the "federated" block (clients,
drops, flags, banks, scalings, bytes, seconds) and the "privacy" block, read from the
strategy after the run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fedpatch_app.federated.protocol.federation import PatchCoreStrategy


def privacy_facts(strategy: PatchCoreStrategy) -> dict[str, Any]:
    """The "privacy" block of results.json: settings and the budget actually spent."""
    from fedpatch_app.model.dp import run_privacy

    releases = {
        f"{strategy.registry.clients[node].label} {cat}": part.dp
        for node, reply in strategy.train_replies.items()
        for cat, part in reply.coresets.items()
        if part.dp is not None
    }
    return run_privacy(strategy.settings.dp, releases)


def federated_facts(strategy: PatchCoreStrategy) -> dict[str, Any]:
    """The "federated" block of results.json."""
    s = strategy.settings
    clients = sorted(strategy.registry.clients.values(), key=lambda c: c.node_id)
    return {
        "partition": {
            "scheme": s.partition,
            "num_clients": s.num_clients,
            "dirichlet_alpha": s.dirichlet_alpha if s.partition == "dirichlet" else None,
        },
        "min_clients": s.min_clients,
        "fingerprint": strategy.plan.fingerprint,
        "clients": [c.to_dict() for c in clients],
        "dropped": strategy.dropped(),
        "banks": strategy.bank_info,
        "map_scaling": {
            c: {"low": m.low, "high": m.high, **strategy.scaling_facts.get(c, {})}
            for c, m in strategy.scalings.items()
        },
        "flagged": strategy.registry.flagged(),
        "excluded_test_images": {
            cat: {"count": len(paths), "examples": sorted(paths)[:10]}
            for cat, paths in strategy.excluded.items()
        },
        "bytes": strategy.registry.bytes,
        "seconds": strategy.registry.seconds,
    }
