#!/usr/bin/env bash
# Start the SuperLink: TLS, SuperNode authentication, a state database.
#
# Usage: scripts/start-superlink.sh CERT_DIR STATE_DIR [extra flower-superlink flags]
#   CERT_DIR: ca.crt, server.crt, server.key (scripts/make-certs.sh)
#   STATE_DIR: holds state.db (runs, registered SuperNodes, app bundles)
# Environment: SUPERLINK_HOST (default 0.0.0.0), SUPERLINK_PORT (default 8000),
#   ISOLATION (subprocess, the default: the SuperLink starts `flower-superexec` for
#   the ServerApp itself; process: run scripts/start-superexec.sh serverapp yourself),
#   INSECURE=1 (no TLS and no authentication: trusted test networks only).
# Runtime dependency installation is off: the app's dependencies must be installed
# where the ServerApp and ClientApps run (pip install . in the same environment).
set -euo pipefail

if [[ $# -lt 2 ]]; then
    echo "usage: $0 CERT_DIR STATE_DIR [extra flower-superlink flags]" >&2
    exit 2
fi
certs=$1
state=$2
shift 2
mkdir -p "$state"
args=(
    --host "${SUPERLINK_HOST:-0.0.0.0}"
    --port "${SUPERLINK_PORT:-8000}"
    --isolation "${ISOLATION:-subprocess}"
    --database "$state/state.db"
    --disable-runtime-dependency-installation
)
if [[ "${INSECURE:-0}" == "1" ]]; then
    args+=(--insecure)
else
    for f in ca.crt server.crt server.key; do
        [[ -r "$certs/$f" ]] || { echo "missing $certs/$f (scripts/make-certs.sh)" >&2; exit 1; }
    done
    args+=(
        --ssl-ca-certfile "$certs/ca.crt"
        --ssl-certfile "$certs/server.crt"
        --ssl-keyfile "$certs/server.key"
        --enable-supernode-auth
    )
fi
exec flower-superlink "${args[@]}" "$@"
