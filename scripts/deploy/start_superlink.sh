#!/usr/bin/env bash
# Start a Flower SuperLink with TLS and SuperNode authentication (foreground; Ctrl-C stops it).
# Usage: scripts/deploy/start_superlink.sh CERT_DIR [HOST] [PORT]
#   CERT_DIR from `python -m scripts.deploy.make_certs CERT_DIR --hosts <host> ...`.
# Then register each SuperNode's public key:  flwr supernode register CERT_DIR/supernode-0.pub <conn>
set -euo pipefail
CERTS="${1:?usage: start_superlink.sh CERT_DIR [HOST] [PORT]}"; HOST="${2:-127.0.0.1}"; PORT="${3:-9093}"
export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1 FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
exec flower-superlink \
  --ssl-ca-certfile "$CERTS/ca.crt" --ssl-certfile "$CERTS/server.pem" --ssl-keyfile "$CERTS/server.key" \
  --enable-supernode-auth --host "$HOST" --port "$PORT" \
  --database "${FREEFED_SUPERLINK_DB:-superlink.db}" --isolation subprocess \
  --disable-runtime-dependency-installation
