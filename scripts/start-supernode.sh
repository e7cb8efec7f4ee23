#!/usr/bin/env bash
# Start one SuperNode on a client host: TLS, its authentication key, its own data.
#
# Usage: scripts/start-supernode.sh SUPERLINK_ADDRESS CA_CERT NODE_KEY DATA_ROOT [CATEGORIES] [extra flags]
#   SUPERLINK_ADDRESS: host:port of the SuperLink (a name or address in its certificate)
#   CA_CERT: ca.crt of scripts/make-certs.sh
#   NODE_KEY: this node's private key (scripts/make-node-keys.sh; its .pub registered)
#   DATA_ROOT: this client's AutoVI folder (one sub-folder per category it holds)
#   CATEGORIES: comma-separated categories it holds (default: every one under DATA_ROOT)
# Environment: NODE_DEVICE (auto, cpu, cuda, cuda:N), NODE_CACHE_DIR, NODE_MAPS_DIR,
#   NODE_EXTRA_CONFIG (more node-config entries, TOML), ISOLATION (subprocess by
#   default; process: run scripts/start-superexec.sh clientapp 127.0.0.1:9094 yourself),
#   RUNTIME_PORT (9094), INSECURE=1 (no TLS, no key).
set -euo pipefail

if [[ $# -lt 4 ]]; then
    echo "usage: $0 SUPERLINK_ADDRESS CA_CERT NODE_KEY DATA_ROOT [CATEGORIES] [extra flags]" >&2
    exit 2
fi
superlink=$1
ca=$2
key=$3
data_root=$4
categories=${5:-}
shift $(( $# >= 5 ? 5 : 4 ))

node_config="data-root=\"$data_root\""
[[ -n "$categories" ]] && node_config+=" categories=\"$categories\""
[[ -n "${NODE_DEVICE:-}" ]] && node_config+=" device=\"$NODE_DEVICE\""
[[ -n "${NODE_CACHE_DIR:-}" ]] && node_config+=" cache-dir=\"$NODE_CACHE_DIR\""
[[ -n "${NODE_MAPS_DIR:-}" ]] && node_config+=" maps-dir=\"$NODE_MAPS_DIR\""
[[ -n "${NODE_EXTRA_CONFIG:-}" ]] && node_config+=" $NODE_EXTRA_CONFIG"

args=(
    --superlink "$superlink"
    --node-config "$node_config"
    --isolation "${ISOLATION:-subprocess}"
    --port "${RUNTIME_PORT:-9094}"
)
if [[ "${ISOLATION:-subprocess}" == "process" ]]; then
    args+=(--host "${RUNTIME_HOST:-127.0.0.1}")
fi
if [[ "${INSECURE:-0}" == "1" ]]; then
    args+=(--insecure)
else
    args+=(--root-certificates "$ca" --auth-supernode-private-key "$key")
fi
exec flower-supernode "${args[@]}" "$@"
