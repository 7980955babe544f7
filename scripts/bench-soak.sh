#!/usr/bin/env bash
# Soak (issue 12): the chain agent -> `rolegate serve` -> an STS stand-in that answers at once
# (examples/storm.rs `standin`), loaded from separate processes:
#   A. cached: the agent benchmark's cached load, `wrk -t2 -c32` for SECONDS (default 60) with
#      one token, every answer from the agent's cache;
#   B. first requests: for SECONDS, every request carries the token of a new pod (a session of
#      its own: an agent miss, one signature and one STS call at the server), 32 in flight
#      (examples/storm.rs `soak`).
# Zero errors expected. RSS and open file descriptors of the agent and the server are read from
# /proc every second; each phase reports start, peak and end.
# Needs release builds: `cargo build --release --bin rolegate --example storm`, and wrk.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
out="$repo/target/bench-soak"
rm -rf "$out"; mkdir -p "$out/config"
seconds="${SECONDS_PER_PHASE:-60}"
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >/dev/null; }
cargo build --release --bin rolegate --example storm --quiet
bin=target/release/rolegate
storm=target/release/examples/storm
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
wait_up() { for _ in $(seq 1 300); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.2; done; echo "not up: $1" >&2; exit 1; }

cp -r examples/standalone/. "$out/config/"
rm -f "$out/config/40-rolemapping.yaml" "$out/config/50-people.yaml"
cat >"$out/config/60-soak.yaml" <<'YAML'
apiVersion: v1
kind: Namespace
metadata:
  name: storm
  labels: {rolegate.dev/aws-access: "true"}
---
apiVersion: rolegate.dev/v1alpha1
kind: RoleMapping
metadata: {name: soak, namespace: storm}
spec:
  provider: demo-account
  roleArn: arn:aws:iam::123456789012:role/demo-soak
  subjects: [{kind: ServiceAccount, name: sa0}]
YAML

standin_port="$(port)"; rg_port="$(port)"; agent_port="$(port)"
"$storm" standin --listen "127.0.0.1:$standin_port" >"$out/standin.log" 2>&1 & pids+=($!)
state="$(mktemp -d)"
AWS_ENDPOINT_URL="http://127.0.0.1:$standin_port" AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test \
  ROLEGATE_LOG=warn "$bin" serve --config "$out/config" --state-dir "$state" --listen "127.0.0.1:$rg_port" \
  >"$out/serve.log" 2>&1 & pids+=($!)
serve_pid=$!
wait_up "http://127.0.0.1:$rg_port/readyz"
ROLEGATE_LOG=warn "$bin" agent --threads 1 --rate-limit-per-second 100000000 --rate-limit-burst 100000000 \
  --listen "127.0.0.1:$agent_port" --server "http://127.0.0.1:$rg_port" >"$out/agent.log" 2>&1 & pids+=($!)
agent_pid=$!
wait_up "http://127.0.0.1:$agent_port/healthz"
agent="http://127.0.0.1:$agent_port"
"$bin" dev token --key examples/standalone/issuer/sa-signer.key --issuer https://kubernetes.default.svc.cluster.local \
  --subject system:serviceaccount:storm:sa0 --out "$out/token"
token="$(cat "$out/token")"
curl -fs -H "Authorization: $token" "$agent/v1/credentials" -o /dev/null

echo idle >"$out/phase"
( while :; do
    printf '%s %s %s %s %s\n' "$(cat "$out/phase")" \
      "$(awk '/VmRSS/ {print $2}' /proc/$agent_pid/status)" "$(ls /proc/$agent_pid/fd | wc -l)" \
      "$(awk '/VmRSS/ {print $2}' /proc/$serve_pid/status)" "$(ls /proc/$serve_pid/fd | wc -l)"
    sleep 1
  done >"$out/samples.txt" 2>/dev/null ) & pids+=($!)
sleep 2

echo cached >"$out/phase"
wrk -t2 -c32 -d"${seconds}s" --latency -H "Authorization: $token" "$agent/v1/credentials" | tee "$out/wrk-cached.txt"
echo between >"$out/phase"
sleep 2
echo first >"$out/phase"
"$storm" soak --url "$agent" --key examples/standalone/issuer/sa-signer.key --namespace storm \
  --seconds "$seconds" --concurrency 32 | tee "$out/soak.json"
echo after >"$out/phase"
sleep 2
curl -fs "http://127.0.0.1:$rg_port/metrics" >"$out/serve-metrics.txt"
curl -fs "$agent/metrics" >"$out/agent-metrics.txt"

python3 - "$out" <<'PY' | tee "$out/result.md"
import json, re, sys
out = sys.argv[1]
rows = [l.split() for l in open(f"{out}/samples.txt") if len(l.split()) == 5]
wrk = open(f"{out}/wrk-cached.txt").read()
soak = json.load(open(f"{out}/soak.json"))
def num(pattern, text, default="0"):
    m = re.search(pattern, text)
    return m.group(1) if m else default
requests = num(r"(\d+) requests in", wrk)
rps = num(r"Requests/sec:\s+([\d.]+)", wrk)
p99 = num(r"99%\s+(\S+)", wrk, "?")
non2xx = int(num(r"Non-2xx or 3xx responses: (\d+)", wrk))
sockerr = num(r"Socket errors: (.*)", wrk, "none")
def stat(phase, col):
    vals = [int(r[col]) for r in rows if r[0] == phase]
    return vals
print()
print("| phase | requests | errors | agent RSS start / peak / end (MiB) | agent fds start / peak / end | server RSS start / peak / end (MiB) | server fds start / peak / end |")
print("|---|---|---|---|---|---|---|")
for phase, label, reqs, errs in (
    ("cached", f"A. cached, wrk -t2 -c32, {rps} req/s, p99 {p99}", requests, f"non-2xx {non2xx}, socket errors: {sockerr}"),
    ("first", f"B. first requests (a new pod each), 32 in flight, {soak['per_second']:.0f} req/s", soak["requests"],
     f"non-200 {soak['requests'] - soak['ok']}, transport {sum(soak['errors'].values())}"),
):
    cells = []
    for col, scale in ((1, 1024), (2, 1), (3, 1024), (4, 1)):
        v = stat(phase, col)
        cells.append(f"{v[0] // scale} / {max(v) // scale} / {v[-1] // scale}" if v else "-")
    print(f"| {label} | {reqs} | {errs} | " + " | ".join(cells) + " |")
m = lambda name, text: sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith(name))
serve = open(f"{out}/serve-metrics.txt").read()
print()
print(f"server: {m('rolegate_assertions_signed_total', serve):.0f} assertions signed, "
      f"{m('rolegate_sts_calls_total', serve):.0f} STS calls, "
      f"{m('rolegate_credential_cache_entries', serve):.0f} sessions cached at the end")
if non2xx or sockerr != "none" or soak["ok"] != soak["requests"]:
    sys.exit("errors during the soak")
PY
