#!/usr/bin/env bash
# Start one data owner's Flower SuperNode (foreground; Ctrl-C stops it and its ClientApps).
# Usage: scripts/deploy/start_supernode.sh SUPERLINK_HOST:PORT CA_CERT AUTH_KEY LOCAL_PORT NODE_CONFIG
#   AUTH_KEY: the SuperNode's EC key (OpenSSH), registered on the SuperLink beforehand.
#   NODE_CONFIG, e.g. 'data-path="/data/my-images" owner-id="hospital-a" signing-key="/keys/a.pem"'
#   (an ImageFolder of the owner's images), or 'partition-id=0 num-partitions=3' for glyphs.
set -euo pipefail
LINK="${1:?superlink host:port}"; CA="${2:?CA certificate}"; KEY="${3:?SuperNode auth key}"
PORT="${4:?local ClientApp IO port}"; NODE_CONFIG="${5:?node config}"
export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1
exec flower-supernode --superlink "$LINK" --root-certificates "$CA" \
  --auth-supernode-private-key "$KEY" --host 127.0.0.1 --port "$PORT" \
  --isolation subprocess --node-config "$NODE_CONFIG"
