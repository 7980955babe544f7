#!/usr/bin/env bash
# Cached answers at the loopback limit (issue 15), one run, alternating:
#   nginx      one worker pinned to CPU 0, serving the agent's own answer as a static file;
#   agent      `rolegate agent --threads 1` pinned to CPU 0, cached;
#   serve      `rolegate serve` cached path (token verified, policy run per request), on CPU 0.
# wrk is pinned to CPU 1: `taskset -c 1 wrk -t1 -c32 -d10s --latency`. Each target is measured
# ROUNDS times (default 2), in the order nginx, agent, serve, nginx, agent, serve, ...
# PERF=agent (or serve, nginx) records a perf profile of that process during its runs
# (target/bench-loopback/perf-NAME-ROUND.data); scripts/flamegraph.sh turns one into an SVG.
# Needs a release build (`cargo build --release --bin rolegate`), wrk and nginx (Debian).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
out="$repo/target/bench-loopback"
rm -rf "$out"; mkdir -p "$out"
for tool in wrk nginx; do
  command -v "$tool" >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk nginx >/dev/null; }
done
tests/peers/install.sh >/dev/null
[ -x target/release/rolegate ] || cargo build --release --bin rolegate --quiet
bin=target/release/rolegate
venv="${ROLEGATE_PEERS:-$repo/.peers}/venv"
rounds="${ROUNDS:-2}"
duration="${DURATION:-10s}"
port() { "$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
wait_up() { for _ in $(seq 1 150); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.2; done; echo "not up: $1" >&2; exit 1; }

moto_port="$(port)"; rg_port="$(port)"; agent_port="$(port)"; nginx_port="$(port)"
"$venv/bin/moto_server" -H 127.0.0.1 -p "$moto_port" >"$out/moto.log" 2>&1 & pids+=($!)
state="$(mktemp -d)"
AWS_ENDPOINT_URL="http://127.0.0.1:$moto_port" AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test \
  ROLEGATE_LOG=warn taskset -c 0 "$bin" serve --config examples/standalone --state-dir "$state" --listen "127.0.0.1:$rg_port" \
  >"$out/serve.log" 2>&1 & pids+=($!)
serve_pid=$!
wait_up "http://127.0.0.1:$rg_port/readyz"
# The rate limit stays on (its check runs on every request) at a rate wrk cannot reach.
ROLEGATE_LOG=warn taskset -c 0 "$bin" agent --threads 1 --rate-limit-per-second 100000000 --rate-limit-burst 100000000 \
  --listen "127.0.0.1:$agent_port" --server "http://127.0.0.1:$rg_port" >"$out/agent.log" 2>&1 & pids+=($!)
agent_pid=$!
wait_up "http://127.0.0.1:$agent_port/healthz"
"$bin" dev token --key examples/standalone/issuer/sa-signer.key --issuer https://kubernetes.default.svc.cluster.local \
  --subject system:serviceaccount:demo:app --out "$out/token"
token="$(cat "$out/token")"
agent="http://127.0.0.1:$agent_port/v1/credentials"
serve="http://127.0.0.1:$rg_port/v1/credentials"
# The agent's answer, byte for byte, is nginx's file.
mkdir -p "$out/www/v1"
curl -fs -H "Authorization: $token" "$agent" -o "$out/www/v1/credentials"
curl -fs -H "Authorization: $token" "$serve" -o /dev/null
body_bytes="$(wc -c <"$out/www/v1/credentials")"
cat >"$out/nginx.conf" <<NGINX
worker_processes 1;
worker_cpu_affinity 01;
pid $out/nginx.pid;
error_log $out/nginx-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  default_type application/json;
  keepalive_requests 1000000;
  client_body_temp_path $out/tmp; proxy_temp_path $out/tmp; fastcgi_temp_path $out/tmp;
  uwsgi_temp_path $out/tmp; scgi_temp_path $out/tmp;
  server { listen 127.0.0.1:$nginx_port; root $out/www; location = /v1/credentials { } }
}
NGINX
mkdir -p "$out/tmp"
nginx -c "$out/nginx.conf" -p "$out" -g 'daemon off;' >"$out/nginx.log" 2>&1 & pids+=($!)
nginx_url="http://127.0.0.1:$nginx_port/v1/credentials"
wait_up "$nginx_url"
cmp <(curl -fs "$nginx_url") "$out/www/v1/credentials"

# What was measured, so a row can be traced to its build and tools.
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
  echo "binary: $(stat -c %y "$bin")"
  echo "nginx: $(nginx -v 2>&1)"
  echo "wrk: $(wrk -v 2>&1 | head -n1)"
  echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$out/setup.txt"

run() { # name url
  local perf_pid=""
  # PERF=name: profile that target's process during its runs (perf record, dwarf call graphs).
  if [ "${PERF:-}" = "$1" ]; then
    local pid; pid="$(target_pid "$1")"
    perf record -F 499 --call-graph dwarf -p "$pid" -o "$out/perf-$1-$r.data" >/dev/null 2>&1 & perf_pid=$!
    sleep 0.5
  fi
  taskset -c 1 wrk -t1 -c32 -d"$duration" --latency -H "Authorization: $token" "$2" >"$out/wrk-$1-$r.txt"
  if [ -n "$perf_pid" ]; then kill -INT "$perf_pid"; wait "$perf_pid" || true; fi
  local rps p99 errors socket
  rps="$(awk '/^Requests\/sec/ {print $2}' "$out/wrk-$1-$r.txt")"
  p99="$(awk '$1 == "99%" {print $2}' "$out/wrk-$1-$r.txt")"
  errors="$(awk '/Non-2xx/ {print $NF}' "$out/wrk-$1-$r.txt")"
  # connect, read, write and timeout errors, summed ("Socket errors: connect 0, read 0, ...").
  socket="$(awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}' "$out/wrk-$1-$r.txt")"
  echo "$1 $r $rps $p99 $(( ${errors:-0} + ${socket:-0} ))" | tee -a "$out/results.txt"
}
target_pid() { case "$1" in nginx) pgrep -f "nginx: worker" | head -n1 ;; agent) echo "$agent_pid" ;; serve) echo "$serve_pid" ;; esac; }
for r in $(seq 1 "$rounds"); do
  run nginx "$nginx_url"
  run agent "$agent"
  run serve "$serve"
done
echo "body: $body_bytes bytes"
"$venv/bin/python" - "$out/results.txt" <<'PY'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1])]
def ms(v):
    return float(v[:-2]) if v.endswith("ms") else float(v[:-2]) / 1000 if v.endswith("us") else float(v[:-1]) * 1000
by = {}
for name, r, rps, p99, errors in rows:
    by.setdefault(name, []).append((float(rps), ms(p99), int(errors)))
print("| what | req/s (each round) | p99 ms (each round) | errors (non-2xx + socket) |")
print("|---|---|---|---|")
for name in ("nginx", "agent", "serve"):
    v = by[name]
    print(f"| {name} | {' / '.join(f'{x[0]/1000:.1f}k' for x in v)} | {' / '.join(f'{x[1]:.2f}' for x in v)} | {sum(x[2] for x in v)} |")
med = {n: statistics.median(x[0] for x in v) for n, v in by.items()}
p99 = {n: statistics.median(x[1] for x in v) for n, v in by.items()}
print()
print(f"agent / nginx: {med['agent']/med['nginx']:.2f} of the rate, p99 {p99['agent']/p99['nginx']:.2f}x")
print(f"serve / agent: {med['serve']/med['agent']:.2f} of the rate")
PY
