#!/usr/bin/env bash
# Runs a command with a moto server (the AWS emulator from the peers venv, with the IAM SAML
# provider tag calls it lacks added by tests/peers/moto_server.py) on a free loopback
# port, exported as ROLEGATE_TEST_MOTO, and stops moto afterwards whatever happens.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${ROLEGATE_PEERS:-$repo/.peers}/venv"
port="$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
log="${TMPDIR:-/tmp}/rolegate-moto-$port.log"
# ROLEGATE_MOTO_HOST=0.0.0.0 also serves a cluster's pods (make e2e); loopback by default.
"$venv/bin/python" "$repo/tests/peers/moto_server.py" -H "${ROLEGATE_MOTO_HOST:-127.0.0.1}" -p "$port" >"$log" 2>&1 &
moto_pid=$!
trap 'kill "$moto_pid" 2>/dev/null || true; wait "$moto_pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  if "$venv/bin/python" -c "import urllib.request, sys; urllib.request.urlopen(sys.argv[1], timeout=1)" \
    "http://127.0.0.1:$port/moto-api/" 2>/dev/null; then break; fi
  if ! kill -0 "$moto_pid" 2>/dev/null; then cat "$log" >&2; echo "moto failed to start" >&2; exit 1; fi
  sleep 0.2
done
export ROLEGATE_TEST_MOTO="http://127.0.0.1:$port"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
export AWS_REGION="${AWS_REGION:-us-east-1}"
echo "moto: $ROLEGATE_TEST_MOTO (log $log)"
"$@"
