"""Fault injection for deployment drills: a Flower ClientApp mod, switched on per SuperNode.

`fault_mod` sits around the product's handlers in the drill ClientApp
(`fedpatch_drills.client_app:app`); the product's ClientApp never has it. A SuperNode of a
drill deployment started with `--node-config '... fault="<name>"'` misbehaves on purpose:

- `crash-on-train`: the ClientApp process kills itself (SIGKILL) as the train instruction
  arrives, as if the machine crashed; the SuperNode reports the ClientApp as crashed and
  the server drops the client.
- `malformed-coreset`: the train reply's first coreset is replaced by an array of the
  wrong width (and a NaN), which the server's checks must reject without stopping the run.

Without the key the mod passes every message through unchanged. The server never reads
it: a fault is a property of the node, not of the run.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Mapping
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MessageType, RecordDict
from flwr.clientapp.typing import ClientAppCallable

from fedpatch_app.errors import ConfigError
from fedpatch_app.federated import messages as M

log = logging.getLogger(__name__)

CRASH_ON_TRAIN = "crash-on-train"
MALFORMED_CORESET = "malformed-coreset"
FAULTS = (CRASH_ON_TRAIN, MALFORMED_CORESET)


def fault_of(node_config: Mapping[str, Any]) -> str:
    """The node's `fault` setting ("" when none); an unknown name is a ConfigError."""
    value = node_config.get("fault", "")
    name = value.strip() if isinstance(value, str) else ""
    if name and name not in FAULTS:
        raise ConfigError(f"node config 'fault': unknown fault {name!r}, choose among {FAULTS}")
    return name


def crash() -> None:
    """End this process at once, as a machine that loses power (no handler runs)."""
    log.warning("fault injection: the ClientApp kills itself on the train instruction")
    os.kill(os.getpid(), signal.SIGKILL)


def corrupt_train_reply(content: RecordDict) -> RecordDict:
    """The train reply with its first coreset (by name) malformed: shape (3, 7), a NaN."""
    record = content.array_records.get(M.CORESETS)
    if record is None or not list(record.keys()):
        return content
    key = sorted(record.keys())[0]
    bad = np.zeros((3, 7), dtype=np.float32)
    bad[0, 0] = np.nan
    log.warning("fault injection: sending a malformed coreset for %s", key)
    patched = ArrayRecord({name: record[name] for name in record.keys()})
    patched[key] = Array(bad)
    content.array_records[M.CORESETS] = patched
    return content


def fault_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower ClientApp mod: the node's fault (`fault_of`) applied to its train exchange;
    every other message, and every message of a node without a fault, passes unchanged."""
    fault = fault_of(context.node_config)
    if not fault or msg.metadata.message_type != MessageType.TRAIN:
        return call_next(msg, context)
    if fault == CRASH_ON_TRAIN:
        crash()
    reply = call_next(msg, context)
    if fault == MALFORMED_CORESET and not reply.has_error():
        corrupt_train_reply(reply.content)
    return reply
