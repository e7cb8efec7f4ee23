"""A Flower `Grid` that runs the ClientApp in this process: no Ray, no SuperLink.

It drives the real ServerApp and ClientApp code message by message, which makes the
whole federated logic testable in seconds and lets one debug it with plain Python tools.
Each node has its own node config (e.g. `partition-id`, `num-partitions`) and a fresh
`Context` per message, as with Flower's default subprocess isolation, so nothing a
client keeps in memory survives from one message to the next.

The ClientApp is any callable `(Message, Context) -> Message`, e.g. a Flower `ClientApp`
with mods that change what a node sends. `offline` nodes get the SuperLink's "node
unavailable" error (source node 1, as the real SuperLink sends it), and a ClientApp
exception becomes error code 2 with the exception text. `public_keys` gives nodes the
keys an authenticating SuperLink would report. A SuperLink draws node ids at random and
hands replies over as they arrive: `node_ids` sets each node's id and `reply_seed`
shuffles the replies, so that tests can check that nothing the run computes depends on
either.
"""

from __future__ import annotations

import itertools
import logging
import random
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any
from uuid import uuid4

from flwr.app import Context, Error, Message, RecordDict
from flwr.serverapp.grid import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

log = logging.getLogger(__name__)

#: The node id the SuperLink uses as the source of the errors it makes.
SUPERLINK_NODE_ID = 1
#: Flower's error codes used here (flwr.common.constant.ErrorCode).
CLIENT_APP_RAISED_EXCEPTION = 2
NODE_UNAVAILABLE = 5

#: What the grid calls for each instruction to a node (a Flower `ClientApp` is one).
ClientAppCall = Callable[[Message, Context], Message]


def set_task_identity(run_id: int = 1, node_id: int = SUPERLINK_NODE_ID, task_id: int = 1) -> None:
    """Messages can only be built once Flower knows the current run/node/task."""
    TaskIdentity.run_id = run_id
    TaskIdentity.node_id = node_id
    TaskIdentity.task_id = task_id


class InProcessGrid(Grid):
    """Grid whose nodes are in-process calls of `client_app` (any `ClientApp`)."""

    def __init__(
        self,
        client_app: ClientAppCall,
        node_configs: Iterable[Mapping[str, Any]],
        run_config: Mapping[str, Any],
        *,
        run_id: int = 1,
        offline: Iterable[int] = (),
        first_node_id: int = 1001,
        public_keys: Mapping[int, bytes] | None = None,
        node_ids: Sequence[int] | None = None,
        reply_seed: int | None = None,
    ) -> None:
        self.client_app = client_app
        self.run_config = dict(run_config)
        configs = [dict(cfg) for cfg in node_configs]
        ids = (
            list(node_ids)
            if node_ids is not None
            else [first_node_id + i for i in range(len(configs))]
        )
        if len(ids) != len(configs) or len(set(ids)) != len(ids):
            raise ValueError(f"node_ids must give {len(configs)} distinct ids, got {ids}")
        self.nodes: dict[int, dict[str, Any]] = dict(zip(ids, configs, strict=True))
        #: Replies handed back in a random order (None: in the order of the instructions).
        self._shuffle = None if reply_seed is None else random.Random(reply_seed)
        self.offline = set(offline)
        #: The nodes' authenticated public keys (PEM), as a SuperLink with SuperNode
        #: authentication reports them in `get_nodes`.
        self.public_keys = dict(public_keys or {})
        self._run = Run.create_empty(run_id)
        self._run_id = run_id
        self._pending: dict[str, Message] = {}
        self._counter = itertools.count(1)
        #: Every (instruction, reply) pair seen, for tests and debugging.
        self.history: list[tuple[Message, Message]] = []
        set_task_identity(run_id=run_id)

    # -- Grid API ---------------------------------------------------------------------

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.nodes)

    def get_nodes(self) -> Iterable[Any]:
        from flwr.proto.node_pb2 import NodeInfo

        return [
            NodeInfo(node_id=node, public_key=self.public_keys.get(node, b""))
            for node in self.nodes
        ]

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            msg_id = uuid4().hex
            msg.metadata.__dict__["_message_id"] = msg_id
            self._pending[msg_id] = msg
            ids.append(msg_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = []
        for msg_id in list(message_ids):
            msg = self._pending.pop(msg_id, None)
            if msg is None:
                continue
            replies.append(self._deliver(msg))
        if self._shuffle is not None:
            self._shuffle.shuffle(replies)
        return replies

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))

    # -- delivery ---------------------------------------------------------------------

    def _deliver(self, msg: Message) -> Message:
        node_id = msg.metadata.dst_node_id
        if node_id in self.offline or node_id not in self.nodes:
            reply = Message(Error(NODE_UNAVAILABLE, "Node is offline"), reply_to=msg)
            reply.metadata.__dict__["_src_node_id"] = SUPERLINK_NODE_ID
        else:
            context = Context(
                run_id=self._run_id,
                node_id=node_id,
                node_config=dict(self.nodes[node_id]),
                state=RecordDict(),
                run_config=dict(self.run_config),
            )
            start = time.perf_counter()
            try:
                reply = self.client_app(msg, context)
            except Exception as exc:  # noqa: BLE001 - the runtime turns any exception into an error reply
                log.debug("node %s raised:\n%s", node_id, traceback.format_exc())
                reason = f"{type(exc).__name__}: {exc}"
                reply = Message(Error(CLIENT_APP_RAISED_EXCEPTION, reason), reply_to=msg)
            log.debug(
                "node %s handled %s in %.2fs",
                node_id,
                msg.metadata.message_type,
                time.perf_counter() - start,
            )
        reply.metadata.__dict__["_message_id"] = f"reply-{next(self._counter)}"
        # The reply must point back to the instruction (as the SuperLink guarantees).
        reply.metadata.__dict__["_reply_to_message_id"] = msg.metadata.message_id
        self.history.append((msg, reply))
        return reply


def run_inprocess(
    run_config: Mapping[str, Any],
    *,
    node_configs: Iterable[Mapping[str, Any]] | None = None,
    run_id: int = 1,
) -> Any:
    """A whole federated run in this process (no Ray, no SuperLink): `num-clients` nodes
    with `partition-id`/`num-partitions`, unless `node_configs` are given. Returns the
    server's `ServerOutcome` (run folder, results dict, strategy)."""
    from client_app import app as client
    from fedpatch_app.federated.protocol.server import run_server
    from fedpatch_app.settings import from_run_config

    settings = from_run_config(dict(run_config))
    if node_configs is None:
        n = settings.num_clients
        node_configs = [{"partition-id": i, "num-partitions": n} for i in range(n)]
    grid = InProcessGrid(client, node_configs, run_config, run_id=run_id)
    context = Context(
        run_id=run_id,
        node_id=SUPERLINK_NODE_ID,
        node_config={},
        state=RecordDict(),
        run_config=dict(run_config),
    )
    return run_server(grid, context)
