#!/usr/bin/env bash
# One source floods fjord while another announces at a normal rate: the normal source's replies
# and latency with fjord's defaults (the per-source rate limiter and store admission on) and
# with both off (benches/load-test.toml), alternating, ROUNDS times each (docs/protocol.md,
# "Attacks"). Loopback only: the flooder is benches/examples/flood.rs from 127.0.0.2 (4 sockets,
# valid announces to random swarms and ports as fast as it can, or FLOOD_RATE in total, never
# waiting for replies), the normal source fjord-bench bound to 127.0.0.3 (open loop,
# VICTIM_RATE). fjord gets one worker on CPU 1, both generators CPU 0 (taskset, when there).
#
#   cargo build --release -p fjord-server -p fjord-bench
#   cargo build --release -p fjord-benches --example flood
#   benches/flood.sh
#   ROUNDS=5 FLOOD_RATE=200000 VICTIM_RATE=400 SECONDS_PER_RUN=8 benches/flood.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
FJORD="${FJORD:-target/release/fjord}"
BENCH="${BENCH:-target/release/fjord-bench}"
FLOOD="${FLOOD:-target/release/examples/flood}"
PORT="${PORT:-16991}"
ROUNDS="${ROUNDS:-3}"
FLOOD_RATE="${FLOOD_RATE:-0}"
VICTIM_RATE="${VICTIM_RATE:-400}"
SECONDS_PER_RUN="${SECONDS_PER_RUN:-8}"
# WORK, PIDS, pin_server / pin_bench, and the cleanup on exit.
source benches/processes.sh

# run LABEL [FJORD ARGS...] -> one line: the normal source's figures, then the flooder's
run() {
  local label=$1 out flood_out
  shift
  out=$(mktemp) flood_out=$(mktemp)
  "${pin_server[@]}" "$FJORD" --listen "127.0.0.1:$PORT" --workers 1 --log-level warn --no-metrics "$@" >"$out" 2>/dev/null &
  local fjord_pid=$!
  PIDS+=("$fjord_pid")
  for _ in $(seq 100); do grep -q "listening on udp" "$out" && break; sleep 0.05; done
  # The flood runs a second longer than the measurement on both sides.
  "${pin_bench[@]}" "$FLOOD" "127.0.0.1:$PORT" 127.0.0.2 4 "$((SECONDS_PER_RUN + 2))" "$FLOOD_RATE" \
    >"$flood_out" &
  local flood_pid=$!
  PIDS+=("$flood_pid")
  sleep 1 # the flood is under way
  "${pin_bench[@]}" "$BENCH" "127.0.0.1:$PORT" --bind 127.0.0.3 --mode open --rate "$VICTIM_RATE" \
    -d "$SECONDS_PER_RUN" --json -q 2>/dev/null \
    | python3 -c '
import json, sys
d = json.load(sys.stdin); l = d["latency"]
print("%s: normal source %d/%d replies (loss %.2f %%), p50 %.2f ms, p99 %.2f ms" % (sys.argv[1],
      d["responses_total"], d["sent_total"], 100 * d["loss"], l["p50_us"] / 1000, l["p99_us"] / 1000), end="")
' "$label"
  wait "$flood_pid" 2>/dev/null || true
  read -r _ _ flood_sent flood_answered <"$flood_out"
  echo "; flooder sent ${flood_sent}/s, answered ${flood_answered}/s"
  kill "$fjord_pid" 2>/dev/null || true
  wait "$fjord_pid" 2>/dev/null || true
  rm -f "$out" "$flood_out"
}

for round in $(seq "$ROUNDS"); do
  if ((round % 2)); then
    run "round $round, defaults"
    run "round $round, limits off" --config benches/load-test.toml
  else
    run "round $round, limits off" --config benches/load-test.toml
    run "round $round, defaults"
  fi
done
