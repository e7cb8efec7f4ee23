"""How a federation agrees on each category's size (and so on its patch grid).

Every client scores a category's images at one size, so that all give the same patch
grid and every pixel count and map adds up. The server fixes that size before the run
when it sees the data (each category's first training image, `data.layouts`); a client
whose own images differ resizes them to it. When the server does not see the data, each
client declares in its train reply the size it used (its category's first training
image), and the size most clients declare is the run's (a tie goes to the larger, then
wider size): a client that declared another has its rows of that category left out,
named in the log, and scores at the agreed size in the evaluate phases.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

log = logging.getLogger(__name__)


def _winner(votes: Counter[tuple[int, int]]) -> tuple[int, int]:
    return max(votes, key=lambda s: (votes[s], s[0] * s[1], s[0]))


def agree_sizes(
    replies: Mapping[int, Any],
    planned: Mapping[str, tuple[int, int]],
    registry: Any,
) -> dict[str, tuple[int, int]]:
    """The agreed size of every category in `replies` (TrainReply by node id); rows of a
    category declared at another size are taken out of that reply."""
    votes: dict[str, Counter[tuple[int, int]]] = {}
    for reply in replies.values():
        for cat, size in reply.sizes.items():
            votes.setdefault(cat, Counter())[tuple(size)] += 1
    agreed = {cat: tuple(planned.get(cat) or _winner(v)) for cat, v in votes.items()}
    for node, reply in replies.items():
        for cat, size in list(reply.sizes.items()):
            if tuple(size) != agreed[cat]:
                log.warning(
                    "%s: %s scored its images at %dx%d, the run's size is %dx%d: its rows of "
                    "%s are left out",
                    cat,
                    registry.clients[node].label,
                    size[0],
                    size[1],
                    *agreed[cat],
                    cat,
                )
                reply.coresets.pop(cat, None)
    return {**dict(planned), **agreed}


def agreed_plan(plan: Any, replies: Mapping[int, Any], registry: Any) -> Any:
    """The plan with the categories the replies hold (when it named none) and their
    agreed sizes: what the evaluate phases send to every client."""
    sizes = agree_sizes(replies, plan.sizes, registry)
    held = sorted({c for r in replies.values() for c in r.coresets})
    return replace(plan, categories=tuple(plan.categories or held), sizes=sizes)
