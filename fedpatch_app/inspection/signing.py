"""Signed model folders: Ed25519 over model.json, which holds every bank file's SHA-256.

Whoever builds a model signs it: `model.json.sig` beside model.json holds the signature of
model.json's exact bytes, the SHA-256 of those bytes and the signing key's id (the first
16 hex digits of the SHA-256 of the raw public key). Since model.json records the SHA-256
of every bank file (and each bank its own category, fingerprint and rows, checked against
model.json at load) and of every ONNX backbone file `fedpatch export` added (checked before
onnxruntime opens it), a valid signature covers the whole folder: a changed byte anywhere
is refused. model.json itself is not changed by signing.

The private key comes from the side that builds the model and nowhere else:

- `fedpatch centralized` / `fedpatch experiment` (and so the local-only runs):
  `--signing-key FILE`;
- the federated ServerApp: the environment variable `FEDPATCH_MODEL_SIGNING_KEY`
  (the key file's path) of the process that runs the ServerApp. It is never part of the
  run config, which Flower sends to every client.

`fedpatch predict` and `fedpatch serve` given `--trusted-key` (public keys, PEM) refuse a
model folder that is unsigned, signed by another key, or changed since it was signed.
Key pairs: `scripts/make-model-key.sh`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fedpatch_app.errors import ConfigError, ModelError

log = logging.getLogger(__name__)

SIGNATURE_FILE = "model.json.sig"
SIGNATURE_FORMAT = "fedpatch-model-signature/1"
ENV_KEY = "FEDPATCH_MODEL_SIGNING_KEY"
SIGNED_FILE = "model.json"

#: The key given on the command line of this process (`use_signing_key`), if any.
_given_key: Ed25519PrivateKey | None = None


def read_private_key(path: str | Path, what: str = "--signing-key") -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM file; ConfigError naming the file otherwise."""
    path = Path(path)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(
            f"{what} {path}: not a readable unencrypted PEM private key: {exc}"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{what} {path}: an Ed25519 key is needed, got {type(key).__name__}")
    return key


def read_public_keys(paths: Sequence[str | Path]) -> tuple[Ed25519PublicKey, ...]:
    """Ed25519 public keys from PEM files; ConfigError naming the file at fault."""
    keys = []
    for path in map(Path, paths):
        try:
            key = serialization.load_pem_public_key(path.read_bytes())
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(
                f"--trusted-key {path}: not a readable PEM public key: {exc}"
            ) from None
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError(
                f"--trusted-key {path}: an Ed25519 key is needed, got {type(key).__name__}"
            )
        keys.append(key)
    return tuple(keys)


def key_id(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def use_signing_key(path: str | Path | None) -> None:
    """Sign every model folder this process writes with the key in `path` (read now, so
    a bad key stops a run before any work); None: back to the environment's key."""
    global _given_key
    _given_key = None if path is None else read_private_key(path)


def signing_key() -> Ed25519PrivateKey | None:
    """The key to sign with: the one given to this process, else the one named by
    $FEDPATCH_MODEL_SIGNING_KEY, else None (the model stays unsigned)."""
    if _given_key is not None:
        return _given_key
    named = os.environ.get(ENV_KEY, "").strip()
    return read_private_key(named, f"${ENV_KEY}") if named else None


def sign_folder(folder: Path, key: Ed25519PrivateKey) -> Path:
    """Write `model.json.sig` for the folder's model.json as it is now."""
    data = (folder / SIGNED_FILE).read_bytes()
    record = {
        "format": SIGNATURE_FORMAT,
        "algorithm": "ed25519",
        "signed_file": SIGNED_FILE,
        "sha256": hashlib.sha256(data).hexdigest(),
        "key_id": key_id(key.public_key()),
        "signature": base64.b64encode(key.sign(data)).decode("ascii"),
    }
    path = folder / SIGNATURE_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def sign_or_unsign(folder: Path) -> Path | None:
    """After model.json was (re)written: sign it when a key is configured, otherwise
    remove a signature of an earlier model.json (it would no longer match)."""
    key = signing_key()
    if key is None:
        (folder / SIGNATURE_FILE).unlink(missing_ok=True)
        return None
    path = sign_folder(folder, key)
    log.info("model folder %s signed with key %s", folder, key_id(key.public_key()))
    return path


def _signature_record(folder: Path) -> dict[str, Any]:
    path = folder / SIGNATURE_FILE
    if not path.is_file():
        raise ModelError(
            f"{folder} is not signed ({SIGNATURE_FILE} is missing) and trusted keys are "
            "given: refusing it"
        )
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: not a readable signature: {exc}") from None
    if not isinstance(record, dict) or record.get("format") != SIGNATURE_FORMAT:
        raise ModelError(f"{path}: unknown signature format (this reads {SIGNATURE_FORMAT})")
    if record.get("algorithm") != "ed25519" or record.get("signed_file") != SIGNED_FILE:
        raise ModelError(f"{path}: field 'algorithm' or 'signed_file' is not ed25519 / model.json")
    return record


def verified_manifest_bytes(folder: Path, trusted: Sequence[Ed25519PublicKey]) -> bytes:
    """model.json's bytes, once its signature is checked against the trusted keys (read
    once: what is verified is what is used); ModelError saying what is wrong."""
    record = _signature_record(folder)
    path = folder / SIGNATURE_FILE
    keys = {key_id(k): k for k in trusted}
    signer = keys.get(str(record.get("key_id")))
    if signer is None:
        raise ModelError(
            f"{path}: signed by key {record.get('key_id')!r}, which is not a trusted key "
            f"(trusted: {', '.join(sorted(keys))})"
        )
    try:
        data = (folder / SIGNED_FILE).read_bytes()
        signature = base64.b64decode(str(record.get("signature", "")), validate=True)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: cannot check the signature: {exc}") from None
    try:
        signer.verify(signature, data)
    except InvalidSignature:
        raise ModelError(
            f"{folder / SIGNED_FILE} has changed since it was signed (or the signature is "
            "damaged): refusing it"
        ) from None
    return data
