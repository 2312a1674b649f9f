#!/usr/bin/env bash
# The capacity curve of fjord on this machine, as docs/benchmarks.md shows it.
#
# Builds fjord and fjord-bench (release), starts fjord on loopback pinned to TRACKER_CPUS, and
# runs `fjord-bench --mode capacity` pinned to BENCH_CPUS against it (with --server-pid, so each
# step also reports fjord's CPU time). Writes to OUT: capacity.json (the whole search, every
# step's report and series), capacity-curve.csv, capacity-series.csv, capacity.svg, and the
# step lines (stderr) in capacity.log. Extra arguments go to fjord-bench.
#
# Environment (defaults): TRACKER_CPUS=1 BENCH_CPUS=0 WORKERS=1 PORT=16979 OUT=target/capacity
# SKIP_BUILD=0.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
TRACKER_CPUS=${TRACKER_CPUS:-1}
BENCH_CPUS=${BENCH_CPUS:-0}
WORKERS=${WORKERS:-1}
PORT=${PORT:-16979}
OUT=${OUT:-target/capacity}
BIN=${CARGO_TARGET_DIR:-target}/release
[ "${SKIP_BUILD:-0}" = 1 ] || cargo build -q --release -p fjord-server -p fjord-bench
mkdir -p "$OUT"

taskset -c "$TRACKER_CPUS" "$BIN/fjord" --config benches/load-test.toml --no-metrics --workers "$WORKERS" \
  --listen "127.0.0.1:$PORT" >"$OUT/fjord.log" 2>&1 &
fjord_pid=$!
trap 'kill "$fjord_pid" 2>/dev/null; wait "$fjord_pid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do # until fjord answers (at most 10 s)
  "$BIN/fjord-bench" "127.0.0.1:$PORT" -q -n 1 --timeout-ms 100 >/dev/null 2>&1 && break
  kill -0 "$fjord_pid" 2>/dev/null || { cat "$OUT/fjord.log" >&2; exit 1; }
  sleep 0.1
done

echo "$(date -u '+%F %T') UTC, load average: $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$OUT/conditions.txt"
rc=0
taskset -c "$BENCH_CPUS" timeout 900 "$BIN/fjord-bench" "udp://127.0.0.1:$PORT/announce" \
  --mode capacity --server-pid "$fjord_pid" --json \
  --curve-csv "$OUT/capacity-curve.csv" --csv "$OUT/capacity-series.csv" \
  --plot "$OUT/capacity.svg" "$@" >"$OUT/capacity.json" 2> >(tee "$OUT/capacity.log" | grep -v '^\[' >&2) || rc=$?
echo "after: load average $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/conditions.txt"
exit "$rc"
