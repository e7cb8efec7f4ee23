"""The server's only contact with Flower's Grid: wait for nodes, send one instruction per
active node, collect the replies.

`GridLink.exchange` sends a phase's instruction (one RecordDict shared by every active
node, uploaded once) and hands the replies to the client registry
(`ClientRegistry.collect`: matched to the instructions by message id, error replies and
silent nodes dropped by name, bytes and seconds counted). Instructions whose replies are
not read (the release of a dropped node's maps) travel in the same push.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

from flwr.app import Message, RecordDict
from flwr.serverapp.grid import Grid

from fedpatch_app.federated.registry import ClientRegistry, ClientState, FederationError

log = logging.getLogger(__name__)

#: The one round of the one-shot protocol (the messages' group id).
ROUND = 1

Answered = list[tuple[ClientState, Message]]


def wait_for_clients(grid: Grid, min_clients: int, timeout: float, poll: float = 1.0) -> list[int]:
    """Poll the grid until `min_clients` nodes are connected; FederationError after `timeout`."""
    deadline = time.monotonic() + timeout
    last = -1
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= min_clients:
            log.info("%d client(s) connected (min-clients %d)", len(nodes), min_clients)
            return nodes
        if len(nodes) != last:
            log.info("waiting for clients: %d of %d connected", len(nodes), min_clients)
            last = len(nodes)
        if time.monotonic() >= deadline:
            raise FederationError(
                f"only {len(nodes)} client(s) connected within {timeout:.0f} s, min-clients is "
                f"{min_clients}: start more SuperNodes (in a simulation: "
                f'--federation-config "num-supernodes={min_clients}"), or lower min-clients'
            )
        time.sleep(min(poll, max(0.0, deadline - time.monotonic())) or 0.01)


class GridLink:
    """Sends the protocol's instructions over a Grid and collects the replies."""

    def __init__(self, grid: Grid, registry: ClientRegistry, timeout: float) -> None:
        self.grid = grid
        self.registry = registry
        self.timeout = float(timeout)

    def wait_for_clients(self, min_clients: int, timeout: float) -> list[int]:
        return wait_for_clients(self.grid, min_clients, timeout)

    def register(self) -> list[int]:
        """Every connected node in the client registry."""
        return self.registry.register(self.grid.get_node_ids())

    def nodes(self) -> Iterable[Any]:
        """The connected nodes with their authenticated public keys (`NodeInfo`)."""
        return self.grid.get_nodes()

    def exchange(
        self,
        phase: str,
        content: RecordDict,
        kind: str,
        unread: Sequence[tuple[int, RecordDict]] = (),
    ) -> Answered:
        """`content` to every active node as a `kind` message; the checked replies of the
        phase (`ClientRegistry.collect`). `unread`: (node, content) instructions sent in
        the same push whose replies are not waited for beyond it, nor read."""
        messages = [
            Message(content, client.node_id, kind, group_id=str(ROUND))
            for client in self.registry.active()
        ]
        self.registry.send(phase, messages)
        extra = [Message(c, node, kind, group_id=str(ROUND)) for node, c in unread]
        replies = list(self.grid.send_and_receive([*messages, *extra], timeout=self.timeout))
        ignored = {m.metadata.message_id for m in extra}
        replies = [r for r in replies if r.metadata.reply_to_message_id not in ignored]
        return self.registry.collect(phase, replies)
