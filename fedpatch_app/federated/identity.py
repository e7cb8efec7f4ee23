"""Which partition each node may speak for: partition ids bound to SuperNode keys.

A node names its partition in its train reply; anyone can write any number there. In a
deployment with SuperNode authentication, the SuperLink knows each node's public key
(the one registered with `flwr supernode register`). The `node-identities` setting names
a JSON file that binds partition ids to those keys:

    {"0": "keys/node1.pub", "1": "ecdsa-sha2-nistp384 AAAA... node2", ...}

(a value is an OpenSSH or PEM public key, or the path of a file holding one, relative to
the JSON file). The server then reads each connected node's key from the grid: a node
whose key is not bound is dropped, and a node that claims another partition than its
key's is dropped, by name; the honest owner keeps its partition.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fedpatch_app.errors import ConfigError

log = logging.getLogger(__name__)

#: Key texts are short: a longer value is taken for a path only.
_KEY_PREFIXES = ("ecdsa-", "ssh-", "-----BEGIN")


def key_fingerprint(key: bytes | str) -> str:
    """SHA-256 (hex) of a public key's DER SubjectPublicKeyInfo, from OpenSSH or PEM text:
    the same key gives the same fingerprint in either form. ValueError if not a key."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    data = key.encode() if isinstance(key, str) else bytes(key)
    text = data.strip()
    try:
        if text.startswith(b"-----BEGIN"):
            public = serialization.load_pem_public_key(text)
        else:
            public = serialization.load_ssh_public_key(text)
    except UnsupportedAlgorithm as exc:
        raise ValueError(str(exc)) from None
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def _key_text(value: str, folder: Path) -> str:
    """The key itself, or the content of the key file it names (ValueError if unreadable)."""
    if value.strip().startswith(_KEY_PREFIXES):
        return value
    path = Path(value).expanduser()
    path = path if path.is_absolute() else folder / path
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read the public key file {path}: {exc.strerror}") from None


def load_identities(path: str | Path) -> dict[str, int]:
    """{key fingerprint: partition id} from a node-identities file (ConfigError naming
    the file and entry at fault)."""
    path = Path(path)
    where = f"run config 'node-identities' ({path})"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{where}: cannot read it as JSON: {exc}") from None
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{where}: expected an object {{partition id: public key}}")
    out: dict[str, int] = {}
    for pid, value in raw.items():
        if not (isinstance(pid, str) and pid.isdigit()) or not isinstance(value, str):
            raise ConfigError(f"{where}: entry {pid!r}: a partition id and a key text or file")
        try:
            fingerprint = key_fingerprint(_key_text(value, path.parent))
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{where}: partition {pid}: {exc}") from None
        if fingerprint in out:
            raise ConfigError(f"{where}: partitions {out[fingerprint]} and {pid} share one key")
        out[fingerprint] = int(pid)
    return out


def bind_nodes(nodes: Iterable[Any], identities: dict[str, int]) -> dict[int, int | None]:
    """{node id: the partition its key is bound to, or None (no key, or a key not bound)}
    for the grid's nodes (`NodeInfo`: node_id, public_key)."""
    out: dict[int, int | None] = {}
    for node in nodes:
        key = getattr(node, "public_key", b"")
        partition = None
        if key:
            try:
                partition = identities.get(key_fingerprint(key))
            except (ValueError, TypeError):
                partition = None
        out[int(node.node_id)] = partition
    log.info("node identities: %s", ", ".join(f"node {n} -> {p}" for n, p in out.items()))
    return out
