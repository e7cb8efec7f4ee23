#!/usr/bin/env bash
# Generate one ECDSA key pair per SuperNode (OpenSSH format, for SuperNode authentication).
#
# Usage: scripts/make-node-keys.sh OUT_DIR NAME [NAME ...]
#   e.g. scripts/make-node-keys.sh keys supernode-1 supernode-2 supernode-3
#
# Writes OUT_DIR/NAME (private key: copy it to that node only) and OUT_DIR/NAME.pub
# (register it on the SuperLink: scripts/register-nodes.sh, or
# `flwr supernode register OUT_DIR/NAME.pub <connection>`). Existing keys are kept.
set -euo pipefail

if [[ $# -lt 2 ]]; then
    echo "usage: $0 OUT_DIR NAME [NAME ...]" >&2
    exit 2
fi
command -v ssh-keygen >/dev/null || {
    echo "ssh-keygen is required (Debian/Ubuntu: apt-get install -y openssh-client)" >&2
    exit 1
}
out=$1
shift
mkdir -p "$out"
for name in "$@"; do
    if [[ -f "$out/$name" ]]; then
        echo "$out/$name exists: keeping it"
        continue
    fi
    ssh-keygen -q -t ecdsa -b 384 -N "" -C "$name" -f "$out/$name"
    echo "key of $name: $out/$name (public: $out/$name.pub)"
done
