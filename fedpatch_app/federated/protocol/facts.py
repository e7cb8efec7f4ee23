"""The facts of a federated run that results.json keeps: the "federated" block (clients,
drops, flags, banks, scalings, bytes, seconds) and the "privacy" block, read from the
phases' results (`results.FederationState`)."""

from __future__ import annotations

from typing import Any

from fedpatch_app.federated.protocol.results import FederationState


def privacy_facts(state: FederationState) -> dict[str, Any]:
    """The "privacy" block of results.json: settings and the budget actually spent."""
    from fedpatch_app.model.dp import run_privacy

    releases = {
        f"{state.registry.clients[node].label} {cat}": part.dp
        for node, reply in state.trained.replies.items()
        for cat, part in reply.coresets.items()
        if part.dp is not None
    }
    return run_privacy(state.plan.settings.dp, releases)


def federated_facts(state: FederationState) -> dict[str, Any]:
    """The "federated" block of results.json."""
    s = state.plan.settings
    registry = state.registry
    clients = sorted(registry.clients.values(), key=lambda c: c.node_id)
    facts = {} if state.scaled is None else state.scaled.facts
    return {
        "partition": {
            "scheme": s.partition,
            "num_clients": s.num_clients,
            "dirichlet_alpha": s.dirichlet_alpha if s.partition == "dirichlet" else None,
        },
        "min_clients": s.min_clients,
        "fingerprint": state.plan.fingerprint,
        "clients": [c.to_dict() for c in clients],
        "dropped": registry.dropped(),
        "banks": {cat: info.to_dict() for cat, info in state.merged.infos.items()},
        "map_scaling": {
            c: {"low": m.low, "high": m.high, **facts.get(c, {})} for c, m in state.scalings.items()
        },
        "flagged": registry.flagged(),
        "excluded_test_images": {
            cat: {"count": len(paths), "examples": sorted(paths)[:10]}
            for cat, paths in state.excluded.items()
        },
        "bytes": registry.bytes,
        "seconds": registry.seconds,
    }
