#!/usr/bin/env bash
# The README's test command: bootstrap the pinned environment, then lint, type-check, check the
# generated protobuf code, and run the whole test suite (unit + integration). Extra arguments go
# to pytest (e.g. `scripts/test.sh -m "not integration"`).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="$(python3 scripts/bootstrap.py)"
export PATH="$BIN:$PATH"
export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1 FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
export PYTHONDONTWRITEBYTECODE=1 OMP_NUM_THREADS=2

# Debian data the integration tests read (real Fashion-MNIST IDX files; a font for the glyph
# renderer's test). Best effort: without them those tests skip and say why.
missing=()
for pkg in dataset-fashion-mnist fonts-dejavu-core; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})) && [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
  echo "== installing Debian packages: ${missing[*]}"
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
    || echo "warning: could not install ${missing[*]}; the tests that need them will skip"
fi

echo "== ruff"; ruff check . && ruff format --check .
echo "== mypy"; mypy
if [[ -f scripts/gen_protos.py ]]; then echo "== protobuf drift"; python -m scripts.gen_protos --check; fi

echo "== pytest"
# Ray (Flower's simulation engine) binds every interface: when we may, run the suite in a private
# network namespace where only loopback exists, so nothing a test starts is reachable from outside.
if [[ "${FREEFED_NO_NETNS:-0}" != 1 ]] && unshare -n true 2>/dev/null; then
  exec unshare -n bash -c 'ip link set lo up && exec python -m pytest "$@"' pytest "$@"
else
  echo "(network namespaces unavailable: running on the host network; servers bind 127.0.0.1)"
  exec python -m pytest "$@"
fi
