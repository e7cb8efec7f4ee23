#!/usr/bin/env bash
# Generate a private CA and a SuperLink server certificate for TLS (openssl).
#
# Usage: scripts/make-certs.sh OUT_DIR NAME_OR_ADDRESS [NAME_OR_ADDRESS ...]
#
# Every host name or IP address the SuperNodes, SuperExecs and `flwr` use to reach
# the SuperLink must be listed: they become the certificate's subjectAltNames.
# 127.0.0.1 and localhost are always added (the SuperLink's own ServerApp process
# connects over loopback). Writes OUT_DIR/ca.crt, ca.key, server.crt, server.key
# (and server.csr, server.ext). Existing files are kept unless FORCE=1.
# Copy ca.crt (only) to every node and to the machine that runs `flwr run`.
set -euo pipefail

if [[ $# -lt 2 ]]; then
    echo "usage: $0 OUT_DIR NAME_OR_ADDRESS [NAME_OR_ADDRESS ...]" >&2
    exit 2
fi
command -v openssl >/dev/null || { echo "openssl is required" >&2; exit 1; }
out=$1
shift
days=${CERT_DAYS:-825}
mkdir -p "$out"
if [[ -f "$out/server.crt" && "${FORCE:-0}" != "1" ]]; then
    echo "$out/server.crt exists: keeping it (FORCE=1 regenerates)"
    exit 0
fi

declare -A seen=()
sans=()
for name in "$@" localhost 127.0.0.1; do
    [[ -n "$name" && -z "${seen[$name]:-}" ]] || continue
    seen[$name]=1
    if [[ "$name" =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ || "$name" == *:* ]]; then
        sans+=("IP:$name")
    else
        sans+=("DNS:$name")
    fi
done
san_line=$(IFS=,; echo "${sans[*]}")

umask 077
openssl genrsa -out "$out/ca.key" "${KEY_BITS:-3072}" 2>/dev/null
openssl req -x509 -new -key "$out/ca.key" -sha256 -days "$days" \
    -subj "/CN=fedpatch-ca" -out "$out/ca.crt"
openssl genrsa -out "$out/server.key" "${KEY_BITS:-3072}" 2>/dev/null
openssl req -new -key "$out/server.key" -subj "/CN=$1" -out "$out/server.csr"
cat >"$out/server.ext" <<EXT
basicConstraints = CA:FALSE
keyUsage = digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = $san_line
EXT
openssl x509 -req -in "$out/server.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" \
    -CAcreateserial -days "$days" -sha256 -extfile "$out/server.ext" -out "$out/server.crt" 2>/dev/null
# Certificates are public; keys stay private to the SuperLink's user.
chmod 644 "$out/ca.crt" "$out/server.crt"
chmod 600 "$out/ca.key" "$out/server.key"
echo "CA: $out/ca.crt  server: $out/server.crt (SANs: $san_line)"
