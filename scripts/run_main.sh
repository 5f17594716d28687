#!/usr/bin/env bash
# The README's first command: a simulated federation of data owners (mixed architectures) on the
# embedded glyph benchmark, end to end with Flower's Simulation Engine: local training ->
# validated, signed submissions -> model pool -> FREE -> meta-test (FREE vs Random vs Average)
# -> report + export.
#
# Usage: scripts/run_main.sh [extra `flwr run` options, e.g. --run-config "fed.num-rounds=2"]
#   The icon benchmark instead of the glyphs:
#   scripts/run_main.sh --run-config 'data.train="icons" data.val="icons" data.test="icons"'
#   (keys and data sources: free_common/run_config.py, server/README.md)
# Environment:
#   FREEFED_OWNERS   simulated data owners (default 20)
#   FREEFED_RUN_DIR  run directory (default runs/main-<UTC time>)
#   FREEFED_BIN      venv bin directory to use instead of `python3 scripts/bootstrap.py`
#   FREEFED_NO_NETNS=1  do not isolate the run in a private network namespace
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

if [[ "${1:-}" != "__inner__" ]]; then
  BIN="${FREEFED_BIN:-$(python3 scripts/bootstrap.py)}"
  export PATH="$BIN:$PATH"
  export FREEFED_RUN_DIR="${FREEFED_RUN_DIR:-$ROOT/runs/main-$(date -u +%Y%m%dT%H%M%SZ)}"
  mkdir -p "$FREEFED_RUN_DIR"
  export FREEFED_RUN_DIR="$(cd "$FREEFED_RUN_DIR" && pwd)"
  export FLWR_HOME="$FREEFED_RUN_DIR/flwr-home"
  export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1
  export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 PYTHONDONTWRITEBYTECODE=1
  # Ray folds log lines that differ only in their numbers into one "[repeated Nx across
  # cluster]" line, which hid all but one owner's training line: print every owner's.
  export RAY_DEDUP_LOGS="${RAY_DEDUP_LOGS:-0}"
  # glibc malloc: keep freed memory instead of returning it to the kernel after every large
  # tensor (mallopt(3) thresholds, 256 MiB); the CPU kernels otherwise spend their time on
  # fresh zeroed pages (python -m scripts.bench.allocator; a user's own setting wins).
  export MALLOC_MMAP_THRESHOLD_="${MALLOC_MMAP_THRESHOLD_:-268435456}"
  export MALLOC_TRIM_THRESHOLD_="${MALLOC_TRIM_THRESHOLD_:-268435456}"
  echo "[run_main] run directory: $FREEFED_RUN_DIR"
  # Ray binds every interface: run everything in a private network namespace with only loopback.
  if [[ "${FREEFED_NO_NETNS:-0}" != 1 ]] && unshare -n true 2>/dev/null; then
    echo "[run_main] isolating the simulation in a private network namespace (loopback only)"
    exec unshare -n bash "$0" __inner__ "$@"
  fi
  echo "[run_main] WARNING: network namespaces unavailable (need root or user namespaces);" \
    "Ray will listen on all interfaces of this host during the run" >&2
  exec bash "$0" __inner__ "$@"
fi
shift  # __inner__

ip link set lo up 2>/dev/null || true
OWNERS="${FREEFED_OWNERS:-20}"
OUT="$FREEFED_RUN_DIR/out"
SL_DIR="$FLWR_HOME/local-superlink"
mkdir -p "$SL_DIR"
# Pick free ports (in a private namespace the defaults are always free).
read -r HTTP_PORT CTRL_PORT < <(python - <<'EOF'
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
EOF
)
export FLWR_LOCAL_SUPERLINK_HTTP_API_PORT="$HTTP_PORT" FLWR_LOCAL_CONTROL_API_PORT="$CTRL_PORT"
# `flwr run` ships the app without the embedded .npz archives: pass their folder.
ASSETS="$(python -c 'from free_common.data.sources import ASSETS_DIR; print(ASSETS_DIR)')"

# Start the local SuperLink ourselves (what `flwr run` would start detached) to own its PID.
setsid flower-superlink --insecure --simulation --isolation subprocess \
  --host 127.0.0.1 --port "$HTTP_PORT" --control-api-address "127.0.0.1:$CTRL_PORT" \
  --database "$SL_DIR/state.db" --log-file "$SL_DIR/superlink.log" \
  --disable-runtime-dependency-installation >"$SL_DIR/stdout.log" 2>&1 &
SL_PID=$!
FLWR_PID=""
stop_all() {
  echo "[run_main] stopping the local SuperLink (PID $SL_PID) and everything below it${FLWR_PID:+, and flwr run (PID $FLWR_PID)}"
  python -m scripts.deploy.proctree $SL_PID $FLWR_PID || kill -KILL $SL_PID $FLWR_PID 2>/dev/null || true
}
trap stop_all EXIT
trap 'echo "[run_main] interrupted" >&2; exit 130' INT TERM

echo "[run_main] local SuperLink PID $SL_PID on 127.0.0.1:$HTTP_PORT; waiting for it"
for _ in $(seq 1 60); do
  python -c "import httpx,sys; sys.exit(0 if httpx.get('http://127.0.0.1:$HTTP_PORT/health', timeout=1).is_success else 1)" \
    2>/dev/null && break
  kill -0 "$SL_PID" 2>/dev/null || { echo "SuperLink exited; see $SL_DIR" >&2; exit 1; }
  sleep 1
done

# flwr merges several --run-config options table by table (a later data.* key drops every
# data.* key of an earlier option), so ours and the user's go into one, the user's winning.
USER_RUN_CONFIG=(); OTHER_ARGS=(); ARGS=("$@")
for ((i = 0; i < ${#ARGS[@]}; i++)); do
  case "${ARGS[i]}" in
    --run-config) USER_RUN_CONFIG+=("${ARGS[i + 1]:-}"); i=$((i + 1)) ;;
    --run-config=*) USER_RUN_CONFIG+=("${ARGS[i]#--run-config=}") ;;
    *) OTHER_ARGS+=("${ARGS[i]}") ;;
  esac
done
RUN_CONFIG="$(python -m scripts.merge_run_config \
  "data.assets-dir=\"$ASSETS\" out.dir=\"$OUT\" fed.min-nodes=$OWNERS" \
  ${USER_RUN_CONFIG[@]+"${USER_RUN_CONFIG[@]}"})"

echo "[run_main] flwr run: $OWNERS simulated data owners (mixed conv4/resnet10/resnet18)"
START=$(date +%s)
# In the background + `wait`, so that INT/TERM reach the trap at once.
flwr run . --stream \
  --federation-config "num-supernodes=$OWNERS client-resources-num-cpus=1" \
  --run-config "$RUN_CONFIG" ${OTHER_ARGS[@]+"${OTHER_ARGS[@]}"} &
FLWR_PID=$!
set +e
wait "$FLWR_PID"
RC=$?
set -e
FLWR_PID=""
ELAPSED=$(( $(date +%s) - START ))
echo "[run_main] flwr run finished in $ELAPSED s (exit code $RC)"
# Machine-readable timing for `python -m scripts.record_main_job` (the README's figures).
python - "$OUT/timing.json" "$ELAPSED" "$RC" "$OWNERS" "$@" <<'EOF' || true
import json, os, shlex, sys
path, seconds, rc, owners = sys.argv[1:5]
extra = shlex.join(sys.argv[5:])  # quoted as typed, so the recorded command can be pasted
os.makedirs(os.path.dirname(path), exist_ok=True)
with open(path, "w") as f:
    json.dump({"flwr_run_s": int(seconds), "exit_code": int(rc), "owners": int(owners),
               "extra_args": extra, "cpus": os.cpu_count(),
               "load_average_end": os.getloadavg()[0]}, f, indent=2)
EOF
if [[ -f "$OUT/RESULT.txt" ]]; then
  cat "$OUT/RESULT.txt"
else
  echo "[run_main] no results: see the log above and $SL_DIR/superlink.log" >&2
  [[ $RC -ne 0 ]] || RC=1
fi
exit "$RC"
