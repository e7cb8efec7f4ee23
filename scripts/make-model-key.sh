#!/usr/bin/env bash
# Generate the Ed25519 key pair that signs model folders (PEM, for `fedpatch` and openssl).
#
# Usage: scripts/make-model-key.sh OUT_DIR [NAME]
#   e.g. scripts/make-model-key.sh keys model-signing
#
# Writes OUT_DIR/NAME.key (private key, mode 600: keep it on the machine that builds the
# models only: the SuperLink/ServerApp host, or the machine of a centralized run) and
# OUT_DIR/NAME.pub (public key: copy it to every line PC, for `--trusted-key`).
# An existing key is kept. See docs/deployment.md, "Signed models".
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 ]]; then
    echo "usage: $0 OUT_DIR [NAME]" >&2
    exit 2
fi
command -v openssl >/dev/null || {
    echo "openssl is required (Debian/Ubuntu: apt-get install -y openssl)" >&2
    exit 1
}
out=$1
name=${2:-model-signing}
mkdir -p "$out"
if [[ -f "$out/$name.key" ]]; then
    echo "$out/$name.key exists: keeping it"
    exit 0
fi
(umask 077 && openssl genpkey -algorithm ed25519 -out "$out/$name.key")
openssl pkey -in "$out/$name.key" -pubout -out "$out/$name.pub"
echo "signing key: $out/$name.key (public: $out/$name.pub)"
