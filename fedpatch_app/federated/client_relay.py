"""A client's part of a relay run (`share-mode = relay`, docs/privacy.md).

The server never holds a row: each client seals its coresets with the federation's share
key (`codec_relay.seal_reply`), the server relays every ciphertext to every client, and
each client opens them all and runs the server's own merge rule (`RobustKCenter`: the
robust merge, then greedy k-center, in the same partition order), so every client holds
the bank a raw run's server would have made, bit for bit. The client writes that bank
into its own model folder (node config `model-dir`; marked incomplete until the server
sends the map scalings and thresholds in the run's last message) and scores with it,
rounded as the raw mode's broadcast would round it, so the metrics are the raw mode's too.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict

from fedpatch_app.errors import ModelError
from fedpatch_app.federated import messages as M
from fedpatch_app.federated.codec_relay import (
    KEY_ID,
    bank_facts_record,
    node_share_key,
    open_part,
    read_relayed,
)
from fedpatch_app.federated.codec_train import LocalCoreset
from fedpatch_app.federated.plan import known_names
from fedpatch_app.federated.registry import ClientRegistry
from fedpatch_app.federated.wire import TRANSPORT_DTYPES
from fedpatch_app.model.patchcore import Bank

log = logging.getLogger(__name__)

#: Node config key: the folder under which this node writes each relay run's model folder.
MODEL_DIR = "model-dir"
#: The same for nodes without one (a simulation's: `fedpatch run` sets it), one folder
#: per node under it.
MODEL_DIR_ENV = "FEDPATCH_MODEL_DIR"
#: The run's last message in relay mode: scalings and thresholds down, model folder written.
PHASE_MODEL = "model"


def model_folder(plan: M.Plan, context: Context) -> Path:
    """Where this node keeps the run's model folder: `<model-dir>/<run key>` (else
    `<FEDPATCH_MODEL_DIR>/<run key>/node-<id>`, else the same under the system's temporary
    folder)."""
    from fedpatch_app.federated.client import cache_dir

    cache_dir(plan, context)  # checks the run key is a safe folder name
    base = context.node_config.get(MODEL_DIR)
    if isinstance(base, str) and base:
        return Path(base) / plan.run_key
    shared = os.environ.get(MODEL_DIR_ENV) or str(Path(tempfile.gettempdir()) / "fedpatch-models")
    return Path(shared) / plan.run_key / f"node-{context.node_id}"


def _merge(
    msg: Message, plan: M.Plan, context: Context, device: Any
) -> tuple[dict, ClientRegistry]:
    """Open every relayed coreset and merge them as the raw mode's server does."""
    from fedpatch_app.federated.protocol.merge_rule import RobustKCenter
    from fedpatch_app.model.merge import stable_order

    key = node_share_key(context.node_config)
    config = msg.content.config_records[M.CONFIG]
    key_id = config.get(KEY_ID)
    if not isinstance(key_id, str):
        raise ModelError("evaluate instruction lacks the run's share key id (share-mode relay)")
    dim = int(plan.spec.embed_dim)
    relayed = read_relayed(msg.content, plan.categories, dim)
    registry = ClientRegistry(plan.settings.min_clients, plan.settings.round_timeout)
    held = {}
    for cat, parts in relayed.items():
        registry.register(p.node_id for p in parts)
        entries = []
        for p in parts:
            registry.clients[p.node_id].partition_id = p.partition_id
            rows = open_part(p, cat, dim, key, key_id)
            entries.append((p.node_id, LocalCoreset(rows, p.n_patches, p.n_images, p.radius)))
        held[cat] = stable_order(entries, lambda node: registry.clients[node].partition_id)
    rule = RobustKCenter(plan.settings, plan.spec, registry, None, device)
    return rule.merge(held), registry


def relay_banks(
    msg: Message, plan: M.Plan, context: Context, device: Any
) -> tuple[dict[str, Bank], ConfigRecord]:
    """The banks to score with (as the raw mode's broadcast delivers them) and the facts
    of the banks merged, for the server; the model folder written, marked incomplete."""
    from fedpatch_app.model.merge import content_digest

    merged, registry = _merge(msg, plan, context, device)
    dtype = TRANSPORT_DTYPES[plan.settings.transport_dtype]
    scoring = {}
    for cat, m in merged.items():
        rows = m.bank.features.astype(dtype).astype(np.float32)
        scoring[cat] = Bank(rows, plan.spec, cat, radius=0.0, n_patches=len(rows))
    flags: dict[int, list[str]] = {}
    for client in registry.clients.values():
        if client.flags:
            flags[client.node_id] = list(client.flags)
    facts = bank_facts_record(
        {cat: content_digest(m.bank.features) for cat, m in merged.items()},
        {cat: m.info.to_dict() for cat, m in merged.items()},
        flags,
    )
    banks = {cat: m.bank for cat, m in merged.items()}
    _write(plan, context, banks, {cat: m.info.train_images for cat, m in merged.items()})
    return scoring, facts


def _write(
    plan: M.Plan,
    context: Context,
    banks: Mapping[str, Bank],
    train: Mapping[str, int],
    scalings: Mapping[str, Any] | None = None,
    thresholds: Mapping[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
) -> Path:
    from fedpatch_app.inspection.model_folder import write_model
    from fedpatch_app.inspection.run_model import category_models
    from fedpatch_app.inspection.run_model import provenance as default_provenance
    from fedpatch_app.model.ann_index import built_index, search_params

    folder = model_folder(plan, context)
    incomplete = None
    if provenance is None:
        incomplete = (
            "written right after the merge, before evaluation: no map scaling or thresholds yet"
        )
        provenance = default_provenance(plan.run_key, "federated", plan.settings)
    cats = category_models(banks, scalings or {}, thresholds or {}, train, plan.sizes)
    for cat in cats.values():
        cat.index = built_index(cat.bank.features, search_params(plan.settings))
    write_model(folder, plan.spec, cats, provenance, incomplete=incomplete)
    log.info("relay: model folder %s written%s", folder, " (incomplete)" if incomplete else "")
    return folder


def handle_model(msg: Message, plan: M.Plan, context: Context) -> Message:
    """The run's last message: the map scalings, thresholds and provenance the server
    pooled; the node's model folder rewritten complete with its own banks."""
    import json

    from fedpatch_app.inspection.model_folder import load_model
    from fedpatch_app.metrics.map_scaling import MapScaling

    config = msg.content.config_records[M.CONFIG]
    scalings = {
        cat: MapScaling(*v) for cat, v in M.read_scalings(config, known_names(plan)).items()
    }
    text = config.get("relay-model")
    if not isinstance(text, str):
        raise ModelError("model instruction lacks its 'relay-model' facts")
    facts = json.loads(text)
    folder = model_folder(plan, context)
    model = load_model(folder, allow_incomplete=True)
    banks = {cat: entry.bank for cat, entry in model.categories.items()}
    train = {cat: entry.train_images for cat, entry in model.categories.items()}
    _write(plan, context, banks, train, scalings, facts.pop("thresholds"), facts)
    return Message(RecordDict(), reply_to=msg)
