"""The relay share mode on the wire (`share-mode = relay`): sealed coresets up, relayed
ciphertexts down, the bank each client merged described up.

train, up:     ArrayRecord "sealed" = {category: uint8 nonce + AES-256-GCM ciphertext of
               the (M, D) float32 coreset (`privacy.relay`)}; the info record adds
               "rows.<cat>" (M) and "share-key-id" (the key's public name). The server
               checks the sizes (nonce + M * D * 4 + tag bytes, M within the allowed
               coreset size) and the key id; it never sees a row.
evaluate, down: ArrayRecord "relay" = {"<cat>.<i>": every holder's ciphertext, in the
               server's data order}; config "relay-nodes.<cat>", "relay-partitions.<cat>",
               "relay-counts.<cat>" (patches, images, rows per holder), "relay-radii.<cat>".
evaluate, up:  ConfigRecord "relay-banks" = per category "digest.<cat>" (SHA-256 of the
               merged bank) and "info.<cat>" (its facts as results.json keeps them, JSON),
               and "flags" (the robust merge's flags per node, JSON).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from fedpatch_app.errors import ConfigError, ModelError
from fedpatch_app.federated.wire import (
    CORESETS,
    INFO,
    InvalidReply,
    array_of,
    check_declared,
    decode_array,
    typed,
)
from fedpatch_app.privacy import relay
from fedpatch_app.privacy.keys import ShareKey, read_key

#: Record keys of the relay mode.
SEALED = "sealed"
RELAY = "relay"
RELAY_BANKS = "relay-banks"
KEY_ID = "share-key-id"
#: The node config key naming this node's share key file.
NODE_KEY = "share-key"
#: Where a node without that key looks (a simulation's nodes, which have no node config
#: of their own: `fedpatch run --share-key` sets it).
KEY_ENV = "FEDPATCH_SHARE_KEY"
#: AES-GCM's nonce and tag sizes.
NONCE = 12
TAG = 16
#: The longest JSON text of a bank's facts a client may send.
MAX_FACTS_TEXT = 1_000_000
_KEY_ID = re.compile(r"^[0-9a-f]{16}$")


def sender(partition_id: int) -> str:
    """Who sealed a ciphertext, as its associated data names it."""
    return f"partition {int(partition_id)}"


def node_share_key(node_config: Mapping[str, Any]) -> ShareKey:
    """This node's share key (node config `share-key`: a key file; else the file the
    environment's FEDPATCH_SHARE_KEY names); a ConfigError naming the node config key when
    it is missing or not a share key file."""
    value = node_config.get(NODE_KEY)
    if isinstance(value, str) and value:
        return read_key(value, setting=f"node config '{NODE_KEY}' (share-mode relay)")
    where = f"node config '{NODE_KEY}' (share-mode relay; or {KEY_ENV} in a simulation)"
    return read_key(os.environ.get(KEY_ENV) or None, setting=where)


# --------------------------------------------------------------------------- train


def seal_reply(content: RecordDict, key: ShareKey, partition_id: int) -> None:
    """Replace a train reply's coreset arrays by their ciphertexts. The rows sealed are
    the rows the server would decode in raw mode (float16 on the wire: rounded the same)."""
    arrays = content.array_records.pop(CORESETS)
    info = content.config_records[INFO]
    sealed = ArrayRecord()
    for cat in list(arrays.keys()):
        rows = arrays[cat].numpy().astype(np.float32)
        box = relay.seal(rows, key, sender(partition_id), cat)
        sealed[cat] = array_of(np.frombuffer(box.nonce + box.ciphertext, dtype=np.uint8))
        info[f"rows.{cat}"] = int(rows.shape[0])
    info[KEY_ID] = key.key_id
    content.array_records[SEALED] = sealed


def sealed_size(rows: int, dim: int) -> int:
    return NONCE + rows * dim * 4 + TAG


def decode_sealed(
    content: RecordDict, info: ConfigRecord, cat: str, max_rows: int, dim: int
) -> tuple[np.ndarray, bytes]:
    """One category's ciphertext, checked for what the server can check: its row count
    within the allowed coreset size and its length exactly that of M float32 rows. Returns
    a zero-width stand-in for the rows (M, 0) and the sealed bytes."""
    arrays = content.array_records.get(SEALED)
    if arrays is None or cat not in arrays:
        raise InvalidReply(f"{cat}: listed but no sealed coreset sent (share-mode relay)")
    try:
        rows = typed(info, f"rows.{cat}", int)
    except (KeyError, TypeError) as exc:
        raise InvalidReply(f"{cat}: {exc}") from None
    if not 1 <= rows <= max_rows:
        raise InvalidReply(f"{cat}: sealed coreset of {rows} rows, allowed 1..{max_rows}")
    size = sealed_size(rows, dim)
    check_declared(
        arrays[cat], f"{cat} sealed coreset", dtypes=["uint8"], ndim=1, max_elements=size
    )
    data = decode_array(
        arrays[cat], f"{cat} sealed coreset", dtypes=["uint8"], ndim=1, max_elements=size
    )
    if data.shape[0] != size:
        raise InvalidReply(
            f"{cat}: sealed coreset of {data.shape[0]} bytes, {rows} rows of {dim} float32 "
            f"values make {size}"
        )
    return np.zeros((rows, 0), dtype=np.float32), data.tobytes()


def decode_key_id(info: ConfigRecord) -> str:
    try:
        key_id = typed(info, KEY_ID, str)
    except (KeyError, TypeError) as exc:
        raise InvalidReply(f"reply info: {exc} (share-mode relay)") from None
    if not _KEY_ID.match(key_id):
        raise InvalidReply(f"reply info: share key id {key_id[:40]!r} is not 16 hex digits")
    return key_id


# --------------------------------------------------------------------------- evaluate


@dataclass(frozen=True)
class RelayedPart:
    """One holder's relayed coreset of a category, as the server describes it."""

    node_id: int
    partition_id: int
    n_patches: int
    n_images: int
    radius: float
    rows: int
    sealed: bytes
    #: The partition its sender named when sealing (the associated data).
    sealed_as: int


def relay_record(
    parts: Mapping[str, Sequence[RelayedPart]],
) -> tuple[ArrayRecord, dict[str, Any]]:
    """The evaluate instruction's ciphertexts and their config entries."""
    arrays = ArrayRecord()
    config: dict[str, Any] = {}
    for cat, holders in parts.items():
        for i, part in enumerate(holders):
            arrays[f"{cat}.{i}"] = array_of(np.frombuffer(part.sealed, dtype=np.uint8))
        config[f"relay-nodes.{cat}"] = [p.node_id for p in holders]
        config[f"relay-partitions.{cat}"] = [p.partition_id for p in holders]
        config[f"relay-counts.{cat}"] = [
            v for p in holders for v in (p.n_patches, p.n_images, p.rows)
        ]
        config[f"relay-radii.{cat}"] = [float(p.radius) for p in holders]
        config[f"relay-senders.{cat}"] = [p.sealed_as for p in holders]
    return arrays, config


def _ints(config: ConfigRecord, key: str) -> list[int]:
    value = config.get(key)
    if not isinstance(value, list) or not all(isinstance(v, int) for v in value):
        raise ModelError(f"relayed coresets: '{key}' missing or not a list of integers")
    return [int(v) for v in value]


def read_relayed(
    content: RecordDict, categories: Sequence[str], dim: int
) -> dict[str, list[RelayedPart]]:
    """The relayed coresets of an evaluate instruction (client side), checked for form."""
    arrays = content.array_records.get(RELAY)
    config = content.config_records.get("config")
    if arrays is None or config is None:
        raise ModelError("evaluate instruction lacks the relayed coresets (share-mode relay)")
    out: dict[str, list[RelayedPart]] = {}
    for cat in categories:
        if f"relay-nodes.{cat}" not in config:
            continue
        nodes = _ints(config, f"relay-nodes.{cat}")
        pids = _ints(config, f"relay-partitions.{cat}")
        senders = _ints(config, f"relay-senders.{cat}")
        counts = _ints(config, f"relay-counts.{cat}")
        radii = config.get(f"relay-radii.{cat}")
        if (
            len(pids) != len(nodes)
            or len(senders) != len(nodes)
            or len(counts) != 3 * len(nodes)
            or not isinstance(radii, list)
        ):
            raise ModelError(f"relayed coresets of {cat}: holder lists of different lengths")
        parts = []
        for i, node in enumerate(nodes):
            n_patches, n_images, rows = counts[3 * i : 3 * i + 3]
            size = sealed_size(rows, dim)
            data = decode_array(
                arrays[f"{cat}.{i}"],
                f"relayed {cat}.{i}",
                dtypes=["uint8"],
                ndim=1,
                max_elements=size,
            )
            if data.shape[0] != size:
                raise ModelError(f"relayed {cat}.{i}: {data.shape[0]} bytes, expected {size}")
            parts.append(
                RelayedPart(
                    node,
                    pids[i],
                    n_patches,
                    n_images,
                    float(radii[i]),
                    rows,
                    data.tobytes(),
                    senders[i],
                )
            )
        out[cat] = parts
    return out


def open_part(part: RelayedPart, cat: str, dim: int, key: ShareKey, key_id: str) -> np.ndarray:
    """The rows of a relayed coreset (`privacy.relay.open_rows`: a wrong key or an altered
    ciphertext is a ConfigError naming the sender, the category and the keys)."""
    sealed = relay.Sealed(
        sender(part.sealed_as),
        cat,
        (part.rows, dim),
        key_id,
        part.sealed[:NONCE],
        part.sealed[NONCE:],
    )
    try:
        return relay.open_rows(sealed, key)
    except ConfigError as exc:
        raise ConfigError(f"node config '{NODE_KEY}': {exc}") from None


# --------------------------------------------------------------------------- bank facts


def bank_facts_record(
    digests: Mapping[str, str], infos: Mapping[str, dict[str, Any]], flags: Mapping[int, list[str]]
) -> ConfigRecord:
    record = ConfigRecord({"flags": json.dumps({str(n): r for n, r in flags.items()})})
    for cat, digest in digests.items():
        record[f"digest.{cat}"] = digest
        record[f"info.{cat}"] = json.dumps(infos[cat], sort_keys=True)
    return record


@dataclass(frozen=True)
class BankReport:
    """What one client says of the banks it merged."""

    digests: dict[str, str]
    infos: dict[str, dict[str, Any]]
    flags: dict[int, list[str]]


def _json(record: ConfigRecord, key: str) -> Any:
    text = record.get(key)
    if not isinstance(text, str) or len(text) > MAX_FACTS_TEXT:
        raise InvalidReply(
            f"bank facts: '{key}' missing or longer than {MAX_FACTS_TEXT} characters"
        )
    try:
        return json.loads(text)
    except ValueError:
        raise InvalidReply(f"bank facts: '{key}' is not JSON") from None


def _check_info(cat: str, info: Any) -> dict[str, Any]:
    if not isinstance(info, dict):
        raise InvalidReply(f"bank facts of {cat}: not an object")
    size, radius = info.get("size"), info.get("covering_radius")
    if not isinstance(size, int) or size < 1:
        raise InvalidReply(f"bank facts of {cat}: size {size!r}")
    if not isinstance(radius, int | float) or not math.isfinite(radius) or radius < 0:
        raise InvalidReply(f"bank facts of {cat}: covering radius {radius!r}")
    if not isinstance(info.get("train_images"), int) or not isinstance(info.get("clients"), list):
        raise InvalidReply(f"bank facts of {cat}: train images or clients missing")
    return info


def read_bank_facts(content: RecordDict, categories: Sequence[str]) -> BankReport:
    """A score reply's bank facts (server side): one digest and info per category."""
    record = content.config_records.get(RELAY_BANKS)
    if record is None:
        raise InvalidReply(f"reply lacks the '{RELAY_BANKS}' record (share-mode relay)")
    digests, infos = {}, {}
    for cat in categories:
        digest = record.get(f"digest.{cat}")
        if not isinstance(digest, str) or not re.match(r"^[0-9a-f]{64}$", digest):
            raise InvalidReply(f"bank facts: no digest of the bank of {cat}")
        digests[cat] = digest
        infos[cat] = _check_info(cat, _json(record, f"info.{cat}"))
    flags = _json(record, "flags")
    if not isinstance(flags, dict) or not all(
        k.isdigit() and isinstance(v, list) and all(isinstance(r, str) for r in v)
        for k, v in flags.items()
    ):
        raise InvalidReply("bank facts: 'flags' is not {node: [reasons]}")
    return BankReport(digests, infos, {int(k): v for k, v in flags.items()})
