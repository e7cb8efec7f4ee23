"""Rows encrypted end to end between the clients; the server only relays them.

Each client seals its coreset of a category with AES-256-GCM under a subkey of the share
key; the associated data binds the sender, the category and the shape, so a ciphertext
cannot be replayed as another client's or another category's. The server forwards every
ciphertext to every client; each client opens them all and runs the same merge
(`model.merge.merge_category`, deterministic), so every client holds the same bank. The
server sees the ciphertexts (random bytes) and their sizes, nothing else of the rows.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fedpatch_app.errors import ConfigError
from fedpatch_app.privacy.keys import ShareKey

PURPOSE = "fedpatch relay v1"


@dataclass(frozen=True)
class Sealed:
    """What the server relays: sender, category, row shape, key id, nonce, ciphertext."""

    client: str
    category: str
    shape: tuple[int, int]
    key_id: str
    nonce: bytes
    ciphertext: bytes

    def server_rows(self) -> np.ndarray:
        """The ciphertext read as the float32 rows a server would take it for (the bytes
        that encrypt row r are row r; non-finite values set to 0)."""
        n, d = self.shape
        raw = np.frombuffer(self.ciphertext[: n * d * 4], dtype=np.float32).reshape(n, d)
        return np.nan_to_num(raw.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)


def _aad(client: str, category: str, shape: tuple[int, int]) -> bytes:
    return f"{client}|{category}|{shape[0]}x{shape[1]}".encode()


def seal(rows: np.ndarray, key: ShareKey, client: str, category: str) -> Sealed:
    data = np.ascontiguousarray(rows, dtype=np.float32)
    shape = (int(data.shape[0]), int(data.shape[1]))
    nonce = os.urandom(12)
    box = AESGCM(key.derive(PURPOSE))
    ciphertext = box.encrypt(nonce, data.tobytes(), _aad(client, category, shape))
    return Sealed(client, category, shape, key.key_id, nonce, ciphertext)


def open_rows(sealed: Sealed, key: ShareKey | None) -> np.ndarray:
    """The rows of a relayed ciphertext; a missing or wrong key, or any alteration, is a
    ConfigError naming the sender, the category and the keys."""
    what = f"the rows of {sealed.client} for {sealed.category}"
    if key is None:
        raise ConfigError(
            f"{what} are sealed with share key {sealed.key_id}, and no share key was given "
            "(--share-key)"
        )
    if key.key_id != sealed.key_id:
        raise ConfigError(
            f"{what} are sealed with share key {sealed.key_id}, but the share key given "
            f"({key.source}) is {key.key_id}"
        )
    box = AESGCM(key.derive(PURPOSE))
    try:
        plain = box.decrypt(
            sealed.nonce, sealed.ciphertext, _aad(sealed.client, sealed.category, sealed.shape)
        )
    except InvalidTag:
        raise ConfigError(f"{what} fail their authentication: altered in transit") from None
    return np.frombuffer(plain, dtype=np.float32).reshape(sealed.shape).copy()
