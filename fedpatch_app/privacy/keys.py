"""The federation's share key: a secret every client holds and the server never does.

It is provisioned like the SuperNodes' own keys (docs/deployment.md): made once by whoever
sets up the lines (`write_key`), copied to each SuperNode's machine beside its node key,
never to the SuperLink. The file holds one line, `fedpatch-share-key-v1 <64 hex digits>`.
Its public `key_id` (an HMAC of a fixed text) names it in errors and metadata, so a wrong
key is refused by name without revealing the key. Protections derive their own subkeys
from it (HKDF-SHA256, one `purpose` each).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedpatch_app.errors import ConfigError

HEADER = "fedpatch-share-key-v1"
KEY_BYTES = 32


@dataclass(frozen=True)
class ShareKey:
    secret: bytes
    source: str = "<memory>"

    def __post_init__(self) -> None:
        if len(self.secret) != KEY_BYTES:
            raise ConfigError(f"share key {self.source}: expected {KEY_BYTES} bytes")

    @property
    def key_id(self) -> str:
        """A public name of the key (16 hex digits)."""
        mac = hmac.new(self.secret, b"fedpatch share key id", hashlib.sha256)
        return mac.hexdigest()[:16]

    def derive(self, purpose: str, length: int = 32) -> bytes:
        """A subkey for one use (`purpose`), independent of every other purpose's."""
        kdf = HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=purpose.encode())
        return kdf.derive(self.secret)

    @classmethod
    def generate(cls) -> ShareKey:
        return cls(secrets.token_bytes(KEY_BYTES))

    @classmethod
    def for_audit(cls, seed: int) -> ShareKey:
        """The key a privacy audit uses when given none: derived from the audit's seed, so
        that the same command gives the same figures (the rotation and the ciphertexts
        depend on the key). Only for the audit's simulation, whose attackers never read
        it; a federation's key is `generate`d (`fedpatch keys`)."""
        digest = hashlib.sha256(f"fedpatch privacy audit key, seed {int(seed)}".encode()).digest()
        return cls(digest, f"<derived from the audit's seed {int(seed)}>")


def write_key(path: str | Path, key: ShareKey | None = None) -> ShareKey:
    """Write a new (or the given) share key to `path`, readable by its owner only."""
    key = key or ShareKey.generate()
    path = Path(path)
    if path.exists():
        raise ConfigError(f"share key file {path} exists already: not overwritten")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(f"{HEADER} {key.secret.hex()}\n")
    return ShareKey(key.secret, str(path))


def read_key(path: str | Path | None, setting: str = "--share-key") -> ShareKey:
    """The share key in `path`; a missing setting, a missing file or a malformed one is a
    ConfigError naming the setting and the file."""
    if path is None or str(path) == "":
        raise ConfigError(f"{setting} is not set: this share mode needs the federation's share key")
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{setting}: share key file {path} not found")
    parts = path.read_text(encoding="utf-8", errors="replace").split()
    if len(parts) != 2 or parts[0] != HEADER or len(parts[1]) != 2 * KEY_BYTES:
        raise ConfigError(f"{setting}: {path} is not a share key file ('{HEADER} <64 hex>')")
    try:
        secret = bytes.fromhex(parts[1])
    except ValueError:
        raise ConfigError(f"{setting}: {path} holds no hex key") from None
    return ShareKey(secret, str(path))
