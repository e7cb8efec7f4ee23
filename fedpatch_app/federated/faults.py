"""Fault injection for deployment tests and drills, switched on per SuperNode.

A SuperNode started with `--node-config '... fault="<name>"'` misbehaves on purpose:

- `exit-during-extraction`: the ClientApp process kills itself (SIGKILL) while it
  extracts the features of its first category, as if the machine crashed; the SuperNode
  reports the ClientApp as crashed and the server drops the client.
- `malformed-coreset`: the train reply's first coreset is replaced by an array of the
  wrong width (and a NaN), which the server's checks must reject without stopping the run.

Without the key nothing changes. The server never reads it: a fault is a property of
the node, not of the run.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Mapping
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, RecordDict

from fedpatch_app.errors import ConfigError

log = logging.getLogger(__name__)

EXIT_DURING_EXTRACTION = "exit-during-extraction"
MALFORMED_CORESET = "malformed-coreset"
FAULTS = (EXIT_DURING_EXTRACTION, MALFORMED_CORESET)


def fault_of(node_config: Mapping[str, Any]) -> str:
    """The node's `fault` setting ("" when none); an unknown name is a ConfigError."""
    value = node_config.get("fault", "")
    name = value.strip() if isinstance(value, str) else ""
    if name and name not in FAULTS:
        raise ConfigError(f"node config 'fault': unknown fault {name!r}, choose among {FAULTS}")
    return name


def during_extraction(node_config: Mapping[str, Any]) -> None:
    """Called as feature extraction starts: dies here under `exit-during-extraction`."""
    if fault_of(node_config) == EXIT_DURING_EXTRACTION:
        log.warning("fault injection: the ClientApp kills itself during feature extraction")
        os.kill(os.getpid(), signal.SIGKILL)


def corrupt_train_reply(node_config: Mapping[str, Any], content: RecordDict) -> RecordDict:
    """The train reply, with its first coreset malformed under `malformed-coreset`."""
    if fault_of(node_config) != MALFORMED_CORESET:
        return content
    from fedpatch_app.federated import messages as M

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
