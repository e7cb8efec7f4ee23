#!/usr/bin/env python3
"""TLS certificates and SuperNode keys without openssl or ssh-keygen (Python `cryptography`).

The same files as scripts/make-certs.sh and scripts/make-node-keys.sh, for machines and
images that lack those tools (the compose file's one-shot `credentials` service uses it):

    python scripts/make_credentials.py --certs DIR --san superlink --san 10.0.0.5 \
        --keys DIR --node supernode-1 --node supernode-2 [--owner 49999]

Writes DIR/ca.crt, ca.key, server.crt, server.key (SANs: every --san plus localhost and
127.0.0.1) and, per node, KEYS/NAME (ECDSA P-384 private key, OpenSSH format) and
KEYS/NAME.pub. Existing files are kept. --owner chowns everything to that uid (the
Flower images run as uid 49999) while keeping private keys mode 600.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _write(path: Path, data: bytes, mode: int, owner: int | None) -> None:
    path.write_bytes(data)
    os.chmod(path, mode)
    if owner is not None:
        os.chown(path, owner, owner)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def make_certs(out: Path, names: list[str], days: int = 825, owner: int | None = None) -> None:
    """A private CA and a server certificate for `names` (+ localhost, 127.0.0.1)."""
    out.mkdir(parents=True, exist_ok=True)
    if (out / "server.crt").is_file():
        print(f"{out / 'server.crt'} exists: keeping it")
        return
    sans = list(dict.fromkeys([*names, "localhost", "127.0.0.1"]))
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedpatch-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP384R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, sans[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([_san(n) for n in sans]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    _write(out / "ca.key", _pem_key(ca_key), 0o600, owner)
    _write(out / "ca.crt", ca.public_bytes(pem), 0o644, owner)
    _write(out / "server.key", _pem_key(key), 0o600, owner)
    _write(out / "server.crt", cert.public_bytes(pem), 0o644, owner)
    print(f"CA: {out / 'ca.crt'}  server: {out / 'server.crt'} (SANs: {', '.join(sans)})")


def make_node_key(out: Path, name: str, owner: int | None = None) -> None:
    """An ECDSA P-384 key pair in the OpenSSH format (as `ssh-keygen -t ecdsa -b 384`)."""
    out.mkdir(parents=True, exist_ok=True)
    if (out / name).is_file():
        print(f"{out / name} exists: keeping it")
        return
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    _write(out / name, private, 0o600, owner)
    _write(out / f"{name}.pub", public + f" {name}\n".encode(), 0o644, owner)
    print(f"key of {name}: {out / name} (public: {out / name}.pub)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--certs", type=Path, help="folder of the CA and server certificate")
    parser.add_argument("--san", action="append", default=[], help="host name or IP address")
    parser.add_argument("--keys", type=Path, help="folder of the SuperNode keys")
    parser.add_argument("--node", action="append", default=[], help="SuperNode name")
    parser.add_argument("--days", type=int, default=825)
    parser.add_argument("--owner", type=int, default=None, help="chown files to this uid")
    args = parser.parse_args(argv)
    if args.certs is None and args.keys is None:
        parser.error("give --certs and/or --keys")
    if args.certs is not None:
        if not args.san:
            parser.error("--certs needs at least one --san")
        make_certs(args.certs, args.san, args.days, args.owner)
    if args.keys is not None:
        for name in args.node:
            make_node_key(args.keys, name, args.owner)
    for folder in (args.certs, args.keys):
        if folder is not None and args.owner is not None:
            os.chown(folder, args.owner, args.owner)
    return 0


if __name__ == "__main__":
    sys.exit(main())
