#!/usr/bin/env bash
# Cold-start storm (issue 12): COUNT distinct service accounts (default 10 000) ask
# `rolegate serve` for their first credentials at once, CONCURRENCY in flight, against an STS
# stand-in that answers instantly (examples/storm.rs `standin`), from a separate load process
# (examples/storm.rs `load`, which mints the tokens before the clock starts). Every first
# request costs one RSA-2048 signature, so the limit is COUNT / (cores × `openssl speed rsa2048`
# sign rate), measured in the same run. Records the time to serve all, answers by status,
# errors (must be none), STS calls, and the server's RSS before and at its peak (VmHWM).
# Needs release builds: `cargo build --release --bin rolegate --example storm`.
#
# Pinned mode: SERVER_CPUS=0 LOAD_CPUS=1 runs the server under `taskset -c $SERVER_CPUS` and the
# load and the stand-in under `taskset -c $LOAD_CPUS`, and `openssl speed` pinned like the
# server, so the limit is COUNT / (the server's cores × that sign rate). In every mode the result
# also gives the server's CPU-seconds per first request (from /proc/PID/stat) against one
# signature's cost, the ratio that does not depend on the machine.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
out="$repo/target/bench-storm"
rm -rf "$out"; mkdir -p "$out/config"
count="${COUNT:-10000}"
concurrency="${CONCURRENCY:-256}"
per_mapping=100
cargo build --release --bin rolegate --example storm --quiet
bin=target/release/rolegate
storm=target/release/examples/storm
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
wait_up() { for _ in $(seq 1 300); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.2; done; echo "not up: $1" >&2; exit 1; }

# The standalone example, plus a namespace `storm` with COUNT service accounts mapped to a role,
# PER_MAPPING per RoleMapping.
cp -r examples/standalone/. "$out/config/"
rm -f "$out/config/40-rolemapping.yaml" "$out/config/50-people.yaml"
python3 - "$out/config/60-storm.yaml" "$count" "$per_mapping" <<'PY'
import sys
path, count, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
docs = ["apiVersion: v1\nkind: Namespace\nmetadata:\n  name: storm\n  labels: {rolegate.dev/aws-access: \"true\"}\n"]
for m in range(0, count, per):
    subjects = ", ".join(f"{{kind: ServiceAccount, name: sa{i}}}" for i in range(m, min(m + per, count)))
    docs.append(f"apiVersion: rolegate.dev/v1alpha1\nkind: RoleMapping\nmetadata: {{name: storm-{m // per}, namespace: storm}}\n"
                f"spec:\n  provider: demo-account\n  roleArn: arn:aws:iam::123456789012:role/demo-storm\n  subjects: [{subjects}]\n")
open(path, "w").write("---\n".join(docs))
PY

server_pin=(); load_pin=()
if [ -n "${SERVER_CPUS:-}" ]; then server_pin=(taskset -c "$SERVER_CPUS"); fi
if [ -n "${LOAD_CPUS:-}" ]; then load_pin=(taskset -c "$LOAD_CPUS"); fi
# The server's cores: the ones it is pinned to, else the machine's.
cores="$("${server_pin[@]}" nproc)"
"${server_pin[@]}" openssl speed -seconds 3 rsa2048 2>/dev/null | tee "$out/openssl.txt" >/dev/null
sign_rate="$(awk '/^rsa 2048 bits/ {print $6}' "$out/openssl.txt")"

standin_port="$(port)"; rg_port="$(port)"
"${load_pin[@]}" "$storm" standin --listen "127.0.0.1:$standin_port" >"$out/standin.log" 2>&1 & pids+=($!)
standin_pid=$!
state="$(mktemp -d)"
# IAM registration at start reaches the stand-in too, which refuses it (logged); serving does
# not depend on it.
AWS_ENDPOINT_URL="http://127.0.0.1:$standin_port" AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test \
  ROLEGATE_LOG=warn "${server_pin[@]}" "$bin" serve --config "$out/config" --state-dir "$state" --listen "127.0.0.1:$rg_port" \
  >"$out/serve.log" 2>&1 & pids+=($!)
serve_pid=$!
wait_up "http://127.0.0.1:$rg_port/readyz"
rss_before="$(awk '/VmRSS/ {print $2}' /proc/$serve_pid/status)"
fds_before="$(ls /proc/$serve_pid/fd | wc -l)"

# PERF=1: profile the server during the storm (perf record -g, in target/bench-storm/perf.data).
if [ -n "${PERF:-}" ]; then
  perf record -F 199 --call-graph dwarf,16384 -p "$serve_pid" -o "$out/perf.data" >"$out/perf.log" 2>&1 & perf_pid=$!
  sleep 1
fi
cpu() { awk -v t="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / t}' "/proc/$1/stat"; }
serve_cpu_before="$(cpu "$serve_pid")"; standin_cpu_before="$(cpu "$standin_pid")"
# The load's own CPU time is its rusage, read by the python that runs it.
"${load_pin[@]}" python3 - "$out/load-cpu.txt" "$storm" load --url "http://127.0.0.1:$rg_port" --key examples/standalone/issuer/sa-signer.key \
  --namespace storm --count "$count" --concurrency "$concurrency" <<'PY' | tee "$out/load.json"
import resource, subprocess, sys
subprocess.run(sys.argv[2:], check=True)
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], "w").write(f"{ru.ru_utime + ru.ru_stime:.2f}")
PY
serve_cpu="$(awk -v a="$(cpu "$serve_pid")" -v b="$serve_cpu_before" 'BEGIN {print a - b}')"
standin_cpu="$(awk -v a="$(cpu "$standin_pid")" -v b="$standin_cpu_before" 'BEGIN {print a - b}')"
load_cpu="$(cat "$out/load-cpu.txt")"

if [ -n "${PERF:-}" ]; then kill -INT "$perf_pid"; wait "$perf_pid" || true; fi
rss_peak="$(awk '/VmHWM/ {print $2}' /proc/$serve_pid/status)"
rss_after="$(awk '/VmRSS/ {print $2}' /proc/$serve_pid/status)"
fds_after="$(ls /proc/$serve_pid/fd | wc -l)"
standin_calls="$(curl -fs "http://127.0.0.1:$standin_port/calls")"
curl -fs "http://127.0.0.1:$rg_port/metrics" >"$out/metrics.txt"
sts_calls="$(awk '/^rolegate_sts_calls_total/ {s += $2} END {print s + 0}' "$out/metrics.txt")"
signed="$(awk '/^rolegate_assertions_signed_total/ {s += $2} END {print s + 0}' "$out/metrics.txt")"

python3 - "$out/load.json" "$count" "$cores" "$sign_rate" "$rss_before" "$rss_peak" "$rss_after" \
  "$standin_calls" "$sts_calls" "$signed" "$fds_before" "$fds_after" "$serve_cpu" "$standin_cpu" "$load_cpu" \
  "$(cat /proc/loadavg)" "${SERVER_CPUS:-}" "${LOAD_CPUS:-}" <<'PY' | tee "$out/result.md"
import json, sys
load = json.load(open(sys.argv[1]))
count, cores, rate = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
before, peak, after = (int(x) // 1024 for x in sys.argv[5:8])
standin, sts, signed, fds_before, fds_after = sys.argv[8:13]
serve_cpu, standin_cpu, load_cpu = (float(x) for x in sys.argv[13:16])
loadavg = sys.argv[16]
server_cpus, load_cpus = sys.argv[17], sys.argv[18]
had = "the server's cores" if server_cpus else "the machine"
signing_cpu = count / rate
limit = count / (cores * rate)
ratio = load["seconds"] / limit
errors = sum(load["errors"].values())
print()
print("| measure | value |")
print("|---|---|")
if server_cpus:
    print(f"| pinned | server on CPU {server_cpus} (and `openssl speed`), load and stand-in on CPU {load_cpus or 'any'} |")
else:
    print("| pinned | no: server, load and stand-in share every core |")
print(f"| first requests, distinct service accounts | {count} ({load['concurrency']} in flight) |")
print(f"| time to serve all | **{load['seconds']:.2f} s** ({load['per_second']:.0f}/s) |")
print(f"| signing limit, same run: {count} / ({cores} cores × {rate:.0f} sign/s `openssl speed rsa2048`) | {limit:.2f} s |")
print(f"| ratio to the limit (target ≤ 1.5) | **{ratio:.2f}×** |")
print(f"| answers | {load['statuses']} |")
print(f"| transport errors (must be none) | {errors} {load['errors'] if errors else ''} |")
print(f"| assertions signed / STS calls (server) / answered by the stand-in | {signed} / {sts} / {standin} |")
print(f"| server RSS before / peak (VmHWM) / after | {before} MiB / {peak} MiB / {after} MiB |")
print(f"| server open fds before / after | {fds_before} / {fds_after} |")
print(f"| CPU seconds: server / STS stand-in / load process (with minting the tokens before the clock starts) | {serve_cpu:.2f} / {standin_cpu:.2f} / {load_cpu:.2f} ({had} had {cores * load['seconds']:.1f}) |")
print(f"| of which the signatures alone ({count} / {rate:.0f} per s) | {signing_cpu:.2f} s, {100 * signing_cpu / serve_cpu:.0f} % of the server's |")
print(f"| server CPU per first request / one signature (1 / {rate:.0f} s) | {1e6 * serve_cpu / count:.0f} µs / {1e6 / rate:.0f} µs = **{serve_cpu * rate / count:.2f}×** |")
print(f"| load average after | {loadavg} |")
if errors or load["ok"] != count:
    sys.exit("not every request was answered 200")
PY
