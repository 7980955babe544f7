#!/usr/bin/env bash
# A flame graph (SVG) from a perf.data file that the bench scripts' PERF mode records:
#   scripts/flamegraph.sh target/bench-loopback/perf-agent-1.data docs/bench/agent-cached.svg [TITLE]
# Uses inferno (crates.io), installed into target/tools on first use, and Debian's linux-perf.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data="$1"; svg="$2"; title="${3:-$(basename "$data" .data)}"
tools="$repo/target/tools"
if ! [ -x "$tools/bin/inferno-flamegraph" ]; then
  cargo install --quiet --locked inferno --version 0.12.8 --root "$tools"
fi
command -v perf >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends linux-perf >/dev/null; }
mkdir -p "$(dirname "$svg")"
folded="${data%.data}.folded"
perf script -i "$data" 2>/dev/null | "$tools/bin/inferno-collapse-perf" >"$folded"
"$tools/bin/inferno-flamegraph" --title "$title" --width 1400 <"$folded" >"$svg"
echo "$svg ($(wc -l <"$folded") distinct stacks; folded stacks in $folded)"
