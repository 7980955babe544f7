#!/usr/bin/env bash
# Load on the node agent from separate processes (wrk, curl), against a release build:
#   1. cached GET /v1/credentials through the agent (wrk -t2 -c32);
#   2. 1000 concurrent first requests for one (subject, role) on a cold agent and server: STS calls;
#   3. the agent's RSS holding 10 000 cached sessions.
# Chain: agent (plain http, loopback) -> rolegate serve (loopback) -> moto.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
out="$repo/target/bench"
mkdir -p "$out"
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >/dev/null; }
tests/peers/install.sh >/dev/null
cargo build --release --bin rolegate --quiet
bin=target/release/rolegate
venv="${ROLEGATE_PEERS:-$repo/.peers}/venv"
port() { "$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
wait_up() { for _ in $(seq 1 150); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.2; done; echo "not up: $1" >&2; exit 1; }

moto_port="$(port)"
"$venv/bin/moto_server" -H 127.0.0.1 -p "$moto_port" >"$out/moto.log" 2>&1 & pids+=($!)
start_chain() {
  local state rg_port agent_port
  state="$(mktemp -d)"; rg_port="$(port)"; agent_port="$(port)"
  AWS_ENDPOINT_URL="http://127.0.0.1:$moto_port" AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test \
    ROLEGATE_LOG=warn "$bin" serve --config examples/standalone --state-dir "$state" --listen "127.0.0.1:$rg_port" >"$out/serve.log" 2>&1 & pids+=($!)
  wait_up "http://127.0.0.1:$rg_port/readyz"
  ROLEGATE_LOG=warn taskset -c 0 "$bin" agent --threads "${AGENT_THREADS:-1}" --rate-limit-per-second 100000000 --rate-limit-burst 100000000 --listen "127.0.0.1:$agent_port" --server "http://127.0.0.1:$rg_port" >"$out/agent.log" 2>&1 & pids+=($!)
  agent_pid=$!
  wait_up "http://127.0.0.1:$agent_port/healthz"
  rg="http://127.0.0.1:$rg_port"; agent="http://127.0.0.1:$agent_port"
}
sts_calls() { curl -fs "$rg/metrics" | awk '/^rolegate_sts_calls_total/ {s += $2} END {print s + 0}'; }
mint() { "$bin" dev token --key examples/standalone/issuer/sa-signer.key --issuer https://kubernetes.default.svc.cluster.local \
  --subject system:serviceaccount:demo:app --out "$1"; }

echo "== 1. 1000 concurrent first requests, cold chain =="
start_chain
mint "$out/token"
wrk -t2 -c1000 -d3s -H "Authorization: $(cat "$out/token")" "$agent/v1/credentials" | tee "$out/wrk-cold.txt" | grep -E "Requests/sec|Non-2xx|Socket" || true
cold_sts="$(sts_calls)"
echo "STS calls: $cold_sts"

echo "== 2. cached fetches through the agent =="
# The agent (one worker thread) is pinned to CPU 0 and wrk to CPU 1, so that the load generator
# does not preempt the agent: 2a measures the agent. 2b lets wrk take both cores, as a
# contended node would, for comparison.
taskset -c 1 wrk -t1 -c32 -d15s --latency -H "Authorization: $(cat "$out/token")" "$agent/v1/credentials" | tee "$out/wrk-agent.txt"
rps="$(awk '/^Requests\/sec/ {print $2}' "$out/wrk-agent.txt")"
p99="$(awk '$1 == "99%" {print $2}' "$out/wrk-agent.txt")"
wrk -t2 -c32 -d15s --latency -H "Authorization: $(cat "$out/token")" "$agent/v1/credentials" | tee "$out/wrk-agent-contended.txt"
rps_c="$(awk '/^Requests\/sec/ {print $2}' "$out/wrk-agent-contended.txt")"
p99_c="$(awk '$1 == "99%" {print $2}' "$out/wrk-agent-contended.txt")"

echo "== 3. RSS with 10 000 cached sessions =="
rss_before="$(awk '/VmRSS/ {print $2}' /proc/$agent_pid/status)"
mkdir -p "$out/tokens"
# Distinct tokens (the lifetime differs) for the one service account: 10 000 agent sessions.
seq 1 10000 | xargs -P 2 -I{} sh -c '"$0" dev token --key examples/standalone/issuer/sa-signer.key \
  --issuer https://kubernetes.default.svc.cluster.local --subject system:serviceaccount:demo:app \
  --ttl $((3600 + {})) --out "$1/{}"' "$bin" "$out/tokens"
ls "$out/tokens" | xargs -P 8 -I{} sh -c 'curl -fs -o /dev/null -H "Authorization: $(cat "$1/{}")" "$0/v1/credentials"' \
  "$agent" "$out/tokens"
misses="$(curl -fs "$agent/metrics" | awk '/^rolegate_agent_cache_misses_total/ {print $2}')"
rss_after="$(awk '/VmRSS/ {print $2}' /proc/$agent_pid/status)"

cat <<MD

| measure | value |
|---|---|
| cached GET /v1/credentials through the agent (CPU 0), taskset -c 1 wrk -t1 -c32 -d15s | ${rps} req/s, p99 ${p99} |
| the same, wrk -t2 unpinned (sharing the agent's core) | ${rps_c} req/s, p99 ${p99_c} |
| STS calls after 1000 concurrent first requests (wrk -c1000, cold) | ${cold_sts} |
| agent sessions cached (misses forwarded) | ${misses} |
| agent RSS before / after 10 000 sessions | $((rss_before / 1024)) MiB / $((rss_after / 1024)) MiB |
MD
