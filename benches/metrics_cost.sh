#!/usr/bin/env bash
# What do Prometheus metrics cost? Runs fjord with metrics off and on (scraped every second, as a
# Prometheus server would) under the same fjord-bench closed-loop load, alternating ROUNDS times,
# and prints for each the server's replies per CPU-second (the cost measure: CPU the server
# spends per reply, from /proc via fjord-bench --server-pid) and replies per second (noisier: on
# a shared 2-core VM closed-loop throughput also moves with the load generator and the host).
#
#   benches/metrics_cost.sh            # 3 rounds of 10 s each way
#   ROUNDS=5 SECONDS_PER_RUN=20 benches/metrics_cost.sh
#
# fjord gets core 0 and fjord-bench core 1 when taskset exists, so the two do not steal each
# other's core. Only loopback is used. Every process is stopped on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROUNDS="${ROUNDS:-3}"
SECONDS_PER_RUN="${SECONDS_PER_RUN:-10}"
PORT="${PORT:-16969}"
# FJORD, BENCH (release builds), pin_server, pin_bench.
. benches/release-binaries.sh

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# run_once on|off -> prints "replies_per_server_cpu_second replies_per_second"
run_once() {
  local mode=$1 out
  out=$(mktemp)
  local args=(--listen "127.0.0.1:$PORT" --workers 1 --config benches/load-test.toml --log-level warn)
  if [ "$mode" = on ]; then args+=(--metrics-listen 127.0.0.1:0); else args+=(--no-metrics); fi
  "${pin_server[@]}" "$FJORD" "${args[@]}" >"$out" 2>/dev/null &
  local fjord_pid=$!
  pids+=("$fjord_pid")
  # Wait (bounded) for the "listening" line instead of sleeping.
  for _ in $(seq 100); do grep -q "listening on udp" "$out" && break; sleep 0.05; done
  local scraper_pid=""
  if [ "$mode" = on ]; then
    local metrics_url
    metrics_url=$(for _ in $(seq 100); do grep -o 'http://[^ ]*/metrics' "$out" && break; sleep 0.05; done | head -n 1)
    ( while kill -0 "$fjord_pid" 2>/dev/null; do curl -s -o /dev/null "$metrics_url" || true; sleep 1; done ) &
    scraper_pid=$!
    pids+=("$scraper_pid")
  fi
  "${pin_bench[@]}" "$BENCH" "127.0.0.1:$PORT" --duration "$SECONDS_PER_RUN" --threads 1 --json --quiet \
    --server-pid "$fjord_pid" 2>/dev/null \
    | python3 -c 'import json,sys; d=json.load(sys.stdin); print(round(d["server"]["responses_per_cpu_second"]), round(d["responses_per_second_total"]))'
  kill "$fjord_pid" 2>/dev/null || true
  [ -n "$scraper_pid" ] && kill "$scraper_pid" 2>/dev/null || true
  wait "$fjord_pid" 2>/dev/null || true
  rm -f "$out"
}

on=() off=()
for round in $(seq "$ROUNDS"); do
  # Alternate which mode goes first, so drift over the run does not favour one.
  if ((round % 2)); then
    off+=("$(run_once off)")
    on+=("$(run_once on)")
  else
    on+=("$(run_once on)")
    off+=("$(run_once off)")
  fi
  echo "round $round (replies per server CPU-second, replies per second): off ${off[-1]}; on ${on[-1]}" >&2
done
python3 - "${off[*]}" "${on[*]}" <<'EOF'
import statistics, sys
def pairs(arg):
    v = [int(x) for x in arg.split()]
    return v[0::2], v[1::2]
(off_eff, off_tp), (on_eff, on_tp) = pairs(sys.argv[1]), pairs(sys.argv[2])
for label, off, on in (("replies per server CPU-second", off_eff, on_eff), ("replies per second", off_tp, on_tp)):
    mo, mn = statistics.median(off), statistics.median(on)
    print(f"{label}:")
    print(f"  metrics off: median {mo:,.0f}  (runs: {', '.join(f'{x:,}' for x in off)})")
    print(f"  metrics on:  median {mn:,.0f}  (runs: {', '.join(f'{x:,}' for x in on)})")
    print(f"  on/off = {mn / mo:.3f}  (cost {100 * (1 - mn / mo):+.1f} %)")
EOF
