#!/usr/bin/env bash
# Benchmarks, each beside a reference measured in the same run:
#   1. criterion: assertion build+sign vs. a bare RSA-2048 signature with the same key, and
#      `openssl speed rsa2048` sign/s;
#   2. wrk (a separate process): cached GET /v1/credentials against a release `rolegate serve`
#      in front of moto.
# Prints a Markdown summary for BENCHMARKS.md.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
out="$repo/target/bench"
mkdir -p "$out"

need() { command -v "$1" >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null; }; }
need openssl openssl
need wrk wrk
tests/peers/install.sh >/dev/null

echo "== openssl speed rsa2048 (reference) =="
openssl speed -seconds 5 rsa2048 2>/dev/null | tee "$out/openssl.txt" | tail -3
openssl_sign="$(awk '/^rsa 2048 bits/ {print $(NF-1)}' "$out/openssl.txt")"

echo "== criterion: assertion build+sign =="
cargo bench --bench assertion -- --warm-up-time 2 --measurement-time 10 2>&1 | tee "$out/criterion.txt" | grep -E "^saml/|time:|thrpt:"
# The middle estimate of "time: [low mid high]", which criterion prints on the name's line or
# the next one.
mid() { grep -A2 "^saml/$1" "$out/criterion.txt" | grep -m1 'time:' | sed -E 's/.*\[([^]]*)\].*/\1/' | awk '{print $3, $4}'; }
to_us() { awk -v v="$1" -v u="$2" 'BEGIN { f = (u == "ms") ? 1000 : (u == "ns") ? 0.001 : 1; printf "%.1f", v * f }'; }
read -r a_v a_u <<<"$(mid build_sign_assertion)"
read -r r_v r_u <<<"$(mid build_sign_response)"
read -r s_v s_u <<<"$(mid rsa2048_sign_only)"
assertion_us="$(to_us "$a_v" "$a_u")"; response_us="$(to_us "$r_v" "$r_u")"; sign_us="$(to_us "$s_v" "$s_u")"

echo "== wrk: cached GET /v1/credentials =="
cargo build --release --bin rolegate --quiet
venv="${ROLEGATE_PEERS:-$repo/.peers}/venv"
port() { "$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
moto_port="$(port)"; rg_port="$(port)"
"$venv/bin/moto_server" -H 127.0.0.1 -p "$moto_port" >"$out/moto.log" 2>&1 &
moto_pid=$!
state="$(mktemp -d)"
AWS_ENDPOINT_URL="http://127.0.0.1:$moto_port" AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test \
  ROLEGATE_LOG=warn target/release/rolegate serve --config examples/standalone --state-dir "$state" \
  --listen "127.0.0.1:$rg_port" >"$out/rolegate.log" 2>&1 &
rg_pid=$!
trap 'kill $rg_pid $moto_pid 2>/dev/null || true; rm -rf "$state"' EXIT
for _ in $(seq 1 150); do curl -fs "http://127.0.0.1:$rg_port/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
target/release/rolegate dev token --key examples/standalone/issuer/sa-signer.key \
  --issuer https://kubernetes.default.svc.cluster.local --subject system:serviceaccount:demo:app --out "$out/token"
curl -fsS -H "Authorization: $(cat "$out/token")" "http://127.0.0.1:$rg_port/v1/credentials" >/dev/null
wrk -t2 -c32 -d15s --latency -H "Authorization: $(cat "$out/token")" "http://127.0.0.1:$rg_port/v1/credentials" | tee "$out/wrk.txt"
rps="$(awk '/^Requests\/sec/ {print $2}' "$out/wrk.txt")"
p99="$(awk '$1 == "99%" {print $2}' "$out/wrk.txt")"
sts_calls="$(curl -fs "http://127.0.0.1:$rg_port/metrics" | awk '/^rolegate_sts_calls_total/ {s += $2} END {print s}')"

cat <<MD

| measure | value |
|---|---|
| openssl speed rsa2048, sign/s (reference) | $openssl_sign |
| RSA-2048 sign only, same key (criterion) | ${sign_us} µs |
| build+sign, Assertion signed (criterion) | ${assertion_us} µs |
| build+sign, Response signed (criterion) | ${response_us} µs |
| XML work on top of the RSA signature | $(awk -v a="$assertion_us" -v s="$sign_us" 'BEGIN { printf "%.1f %%", (a - s) / s * 100 }') |
| build+sign/s vs openssl sign/s | $(awk -v a="$assertion_us" -v o="$openssl_sign" 'BEGIN { printf "%.0f/s vs %s/s (%.0f %%)", 1e6 / a, o, 1e6 / a / o * 100 }') |
| cached GET /v1/credentials, wrk -t2 -c32 -d15s | ${rps} req/s, p99 ${p99} |
| STS calls during the wrk run | ${sts_calls} |
MD
