#!/usr/bin/env bash
# Register SuperNode public keys on a SuperLink started with --enable-supernode-auth.
#
# Usage: scripts/register-nodes.sh CONNECTION KEY.pub [KEY.pub ...]
#   CONNECTION: a SuperLink connection of $FLWR_HOME/config.toml (see docs/deployment.md).
#   With SUPERLINK_ADDRESS (host:port) and SUPERLINK_CA (ca.crt) set, the connection is
#   written first (into $FLWR_HOME, default ~/.flwr): handy in a one-shot container.
# Keys already registered are reported and skipped. With a state database (--database)
# registrations survive a SuperLink restart. The SuperLink may still be starting: the
# script waits up to REGISTER_WAIT seconds (default 180) for it to answer, so it can run
# as soon as the SuperLink's container starts (compose runners that ignore health
# conditions, e.g. podman-compose on podman < 4.6).
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
deadline=$((SECONDS + ${REGISTER_WAIT:-180}))
until flwr supernode list "$connection" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
        echo "the SuperLink of connection $connection did not answer within ${REGISTER_WAIT:-180} s" >&2
        flwr supernode list "$connection" >&2 || true
        exit 1
    fi
    sleep 2
done
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
