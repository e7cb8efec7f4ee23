#!/usr/bin/env bash
# Register SuperNode public keys on a SuperLink started with --enable-supernode-auth.
#
# Usage: scripts/register-nodes.sh CONNECTION KEY.pub [KEY.pub ...]
#   CONNECTION: a SuperLink connection of $FLWR_HOME/config.toml (see docs/deployment.md).
#   With SUPERLINK_ADDRESS (host:port) and SUPERLINK_CA (ca.crt) set, the connection is
#   written first (into $FLWR_HOME, default ~/.flwr): handy in a one-shot container.
# Keys already registered are reported and skipped. With a state database (--database)
# registrations survive a SuperLink restart.
set -euo pipefail

if [[ $# -lt 2 ]]; then
    echo "usage: $0 CONNECTION KEY.pub [KEY.pub ...]" >&2
    exit 2
fi
connection=$1
shift
if [[ -n "${SUPERLINK_ADDRESS:-}" ]]; then
    home=${FLWR_HOME:-$HOME/.flwr}
    mkdir -p "$home"
    cat >"$home/config.toml" <<TOML
[superlink]
default = "$connection"

[superlink.$connection]
address = "$SUPERLINK_ADDRESS"
root-certificates = "${SUPERLINK_CA:?SUPERLINK_CA must name the CA certificate}"
TOML
fi
for pub in "$@"; do
    if ! out=$(flwr supernode register "$pub" "$connection" 2>&1); then
        if grep -qi "already" <<<"$out"; then
            echo "$pub: already registered"
            continue
        fi
        echo "$out" >&2
        exit 1
    fi
    echo "$out"
done
flwr supernode list "$connection"
