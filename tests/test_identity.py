"""Partition ids bound to SuperNode keys: the identities file and the binding of nodes."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedpatch_app.errors import ConfigError
from fedpatch_app.federated.identity import bind_nodes, key_fingerprint, load_identities


def key_pair() -> tuple[bytes, bytes]:
    """(OpenSSH public key line, PEM SubjectPublicKeyInfo) of a new EC key."""
    public = ec.generate_private_key(ec.SECP384R1()).public_key()
    ssh = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return ssh, pem


def test_one_key_one_fingerprint_in_either_form() -> None:
    ssh, pem = key_pair()
    assert key_fingerprint(ssh) == key_fingerprint(pem) == key_fingerprint(ssh.decode())
    assert key_fingerprint(ssh) != key_fingerprint(key_pair()[0])
    with pytest.raises(ValueError):
        key_fingerprint(b"not a key")


def test_identities_from_key_texts_and_key_files(tmp_path: Path) -> None:
    (ssh0, pem0), (ssh1, pem1) = key_pair(), key_pair()
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "node1.pub").write_bytes(ssh1 + b" node1\n")
    path = tmp_path / "ids.json"
    path.write_text(json.dumps({"0": ssh0.decode(), "1": "keys/node1.pub"}))
    identities = load_identities(path)
    nodes = [
        SimpleNamespace(node_id=11, public_key=pem1),
        SimpleNamespace(node_id=12, public_key=pem0),
        SimpleNamespace(node_id=13, public_key=key_pair()[1]),  # registered, not bound
        SimpleNamespace(node_id=14, public_key=b""),  # no authentication
    ]
    assert bind_nodes(nodes, identities) == {11: 1, 12: 0, 13: None, 14: None}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "cannot read it as JSON"),
        ("[]", "expected an object"),
        ('{"zero": "x"}', "a partition id and a key"),
        ('{"0": "missing.pub"}', "cannot read the public key file"),
        ('{"0": "ssh-ed25519 AAAAgarbage"}', "partition 0: "),
    ],
)
def test_a_bad_identities_file_names_the_setting_and_the_entry(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "ids.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=f"node-identities.*{message}"):
        load_identities(path)


def test_one_key_cannot_speak_for_two_partitions(tmp_path: Path) -> None:
    ssh, _ = key_pair()
    path = tmp_path / "ids.json"
    path.write_text(json.dumps({"0": ssh.decode(), "1": ssh.decode()}))
    with pytest.raises(ConfigError, match="partitions 0 and 1 share one key"):
        load_identities(path)
