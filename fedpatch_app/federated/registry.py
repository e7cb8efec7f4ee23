"""The server's book of clients: who was asked what, who answered, who was dropped and why.

`ClientRegistry.send` remembers the instructions of a phase; `collect` matches the
replies to them (by message id: node ids of errors made by the SuperLink are not the
client's), drops error replies and silent nodes by name, and counts bytes and seconds.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from flwr.app import Message

from fedpatch_app.errors import FedpatchError
from fedpatch_app.federated.wire import message_bytes, record_bytes

log = logging.getLogger(__name__)

#: Flower's error codes (flwr.common.constant.ErrorCode) with readable names.
ERROR_NAMES = {
    0: "unknown error",
    1: "ClientApp could not be loaded",
    2: "ClientApp raised an exception",
    3: "message unavailable",
    4: "reply unavailable (TTL expired)",
    5: "node unavailable",
    6: "mod failed precondition",
    7: "invalid app bundle",
    8: "ClientApp crashed",
}

#: How a ClientApp names itself in its error text (see client.named_errors).
_CLAIMED_PARTITION = re.compile(r"\bpartition (-?\d+) \(node \d+\):")
_CLIENT_PREFIX = re.compile(r"partition [-?\d]+ \(node \d+\): ")
#: The longest text of a client's kept in the run's records (an error reason, a device
#: name, ...): a client cannot make results.json or the report large.
MAX_TEXT = 1000


def bounded(text: str, limit: int = MAX_TEXT) -> str:
    """`text` cut to `limit` characters, with a marker saying how much was cut."""
    text = str(text)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more characters cut]"


class FederationError(FedpatchError):
    """The federation cannot go on (too few clients left, nothing to merge)."""


@dataclass
class ClientState:
    """What the server knows about one node."""

    node_id: int
    partition_id: int | None = None
    status: str = "pending"  # pending -> trained -> evaluated, or dropped
    dropped_in: str | None = None
    reason: str | None = None
    categories: list[str] = field(default_factory=list)
    train_images: dict[str, int] = field(default_factory=dict)
    train_patches: dict[str, int] = field(default_factory=dict)
    coreset_rows: dict[str, int] = field(default_factory=dict)
    local_radius: dict[str, float] = field(default_factory=dict)
    test_images: dict[str, int] = field(default_factory=dict)
    bytes_up: dict[str, int] = field(default_factory=dict)
    bytes_down: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    device: str = ""
    local_metrics: dict[str, float] = field(default_factory=dict)
    #: What the server found suspicious without dropping the client (phase: reason).
    flags: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        pid = "?" if self.partition_id is None or self.partition_id < 0 else self.partition_id
        return f"node {self.node_id} (partition {pid})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ClientRegistry:
    """Every node of the run and the traffic of every phase."""

    def __init__(self, min_clients: int, timeout: float) -> None:
        self.min_clients = int(min_clients)
        self.timeout = float(timeout)
        self.clients: dict[int, ClientState] = {}
        self.seconds: dict[str, float] = {}
        self.bytes: dict[str, int] = {}
        #: Nodes that answered each phase (with a reply or an error).
        self.answered: dict[str, set[int]] = {}
        self._outbox: dict[str, list[Message]] = {}
        self._started: dict[str, float] = {}

    def register(self, node_ids: Iterable[int]) -> list[int]:
        nodes = sorted(node_ids)
        for node_id in nodes:
            self.clients.setdefault(node_id, ClientState(node_id))
        return nodes

    def data_order(
        self, nodes: Iterable[int], content: Callable[[int], Any] | None = None
    ) -> list[int]:
        """`nodes` in an order their data fixes: by the partition each client trains as,
        then (the nodes that name none, last) by `content(node)`, something of what the
        node sent that no other node sends alike; nodes that tie keep their order.

        Never by node id (a SuperLink draws them at random) nor by the order replies
        arrived in: whatever the server sums over clients in this order (pooled
        statistics, merged coresets) comes out the same, bit for bit, in every engine and
        deployment."""

        def key(node: int) -> tuple[int, int, Any]:
            pid = self.clients[node].partition_id
            if pid is not None and pid >= 0:
                return (0, pid, ())
            return (1, 0, () if content is None else content(node))

        return sorted(nodes, key=key)

    def active(self) -> list[ClientState]:
        return [c for c in self.clients.values() if c.status != "dropped"]

    def dropped(self) -> list[dict[str, Any]]:
        return [
            {
                "node_id": c.node_id,
                "partition_id": c.partition_id,
                "phase": c.dropped_in,
                "reason": c.reason,
            }
            for c in self.clients.values()
            if c.status == "dropped"
        ]

    def drop(self, node_id: int, phase: str, reason: str) -> None:
        client = self.clients.setdefault(node_id, ClientState(node_id))
        if client.status == "dropped":
            return
        client.status, client.dropped_in, client.reason = "dropped", phase, bounded(reason)
        log.warning("%s dropped in %s: %s", client.label, phase, client.reason)

    def flag(self, node_id: int, phase: str, reason: str) -> None:
        """Record something suspicious about a client that stays in the run."""
        client = self.clients.setdefault(node_id, ClientState(node_id))
        client.flags.append(f"{phase}: {bounded(reason)}")
        log.warning("%s flagged: %s", client.label, client.flags[-1])

    def flagged(self) -> list[dict[str, Any]]:
        return [
            {"node_id": c.node_id, "partition_id": c.partition_id, "flag": flag}
            for c in self.clients.values()
            for flag in c.flags
        ]

    def require(self, phase: str) -> None:
        """FederationError when fewer than min-clients clients remain; the reasons of the
        dropped clients are given once each, with the clients they apply to."""
        active = self.active()
        if len(active) >= self.min_clients:
            return
        reasons = "; ".join(
            f"{', '.join(labels)}: {reason}" for reason, labels in self.drop_reasons().items()
        )
        raise FederationError(
            f"{phase}: only {len(active)} client(s) remain, min-clients is "
            f"{self.min_clients}" + (f". Dropped: {reasons}" if reasons else "")
        )

    def drop_reasons(self) -> dict[str, list[str]]:
        """Each distinct reason (without the client's own name in it) and who it hit."""
        grouped: dict[str, list[str]] = {}
        for c in self.clients.values():
            if c.status == "dropped":
                reason = _CLIENT_PREFIX.sub("", f"{c.dropped_in}: {c.reason}")
                grouped.setdefault(reason, []).append(c.label)
        return grouped

    def send(self, phase: str, messages: list[Message]) -> list[Message]:
        """Remember what was sent (message ids are set when the grid pushes them)."""
        self._outbox[phase] = messages
        self._started[phase] = time.perf_counter()
        per_node = 0
        for msg in messages:
            size = record_bytes(msg.content)
            per_node = max(per_node, size)
            self.clients[msg.metadata.dst_node_id].bytes_down[phase] = size
        self.bytes[f"{phase}_down_per_node"] = per_node
        self.bytes[f"{phase}_down_total"] = message_bytes(messages)
        self.bytes[f"{phase}_down_uploaded"] = message_bytes(messages, broadcast=True)
        return messages

    def _error(self, client: ClientState, phase: str, reply: Message) -> None:
        claimed = _CLAIMED_PARTITION.search(reply.error.reason or "")
        if claimed and client.partition_id is None and len(claimed.group(1)) <= 4:
            client.partition_id = int(claimed.group(1))
        code = int(reply.error.code)
        name = ERROR_NAMES.get(code, "error")
        self.drop(
            client.node_id, phase, f"error {code} ({name}): {reply.error.reason or ''}".strip()
        )

    def collect(self, phase: str, replies: Iterable[Message]) -> list[tuple[ClientState, Message]]:
        """Match replies to the nodes they answer; error replies and silent nodes are dropped."""
        # The instructions are forgotten here: their content (the banks) is freed.
        sent = self._outbox.pop(phase, [])
        by_id = {m.metadata.message_id: m.metadata.dst_node_id for m in sent}
        started = self._started.get(phase, time.perf_counter())
        self.seconds[phase] = round(time.perf_counter() - started, 3)
        answered: set[int] = set()
        ok: list[tuple[ClientState, Message]] = []
        for reply in replies:
            node_id = by_id.get(reply.metadata.reply_to_message_id)
            if node_id is None or node_id in answered:
                log.warning(
                    "%s: ignoring a reply (from node %s) to %s message %r",
                    phase,
                    reply.metadata.src_node_id,
                    "an already answered" if node_id else "an unknown",
                    reply.metadata.reply_to_message_id,
                )
                continue
            answered.add(node_id)
            client = self.clients[node_id]
            if client.status == "dropped":
                continue
            if reply.has_error():
                self._error(client, phase, reply)
                continue
            client.bytes_up[phase] = record_bytes(reply.content)
            ok.append((client, reply))
        self.answered[phase] = answered
        for msg in sent:
            if msg.metadata.dst_node_id not in answered:
                self.drop(
                    msg.metadata.dst_node_id,
                    phase,
                    f"no reply within the timeout ({self.timeout:.0f} s)",
                )
        self.bytes[f"{phase}_up_total"] = sum(c.bytes_up.get(phase, 0) for c, _ in ok)
        return ok
