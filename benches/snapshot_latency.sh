#!/usr/bin/env bash
# Worker latency while snapshots are written (issue 16; not in CI). Builds a snapshot of
# PEERS IPv4 peers (benches/examples/snapshot_10m.rs, Zipf swarms), then starts fjord on it
# ROUNDS times each way, alternating: with a snapshot every INTERVAL seconds, and without
# periodic snapshots; each time fjord-bench runs an open loop at RATE requests/s for SECONDS
# and the script prints its latency percentiles and the snapshots written meanwhile.
#
#   benches/snapshot_latency.sh                 # 10M peers, 2 rounds of 40 s each way
#   PEERS=2000000 ROUNDS=3 benches/snapshot_latency.sh
#
# fjord runs one worker; nothing is pinned (the maintenance thread that writes the snapshot
# may share the worker's core, as on a host with no spare core). Loopback only; every process
# started here is stopped on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PEERS="${PEERS:-10000000}"
SWARMS="${SWARMS:-1000000}"
ROUNDS="${ROUNDS:-2}"
SECONDS_PER_RUN="${SECONDS_PER_RUN:-40}"
RATE="${RATE:-20000}"
INTERVAL="${INTERVAL:-10}"
PORT="${PORT:-18969}"
# FJORD, BENCH (release builds), wait_for_metrics; the pinning variables are not used here.
. benches/release-binaries.sh
cargo build --release -q -p fjord-benches --example snapshot_10m
work=$(mktemp -d)
fjord_pid=""
cleanup() {
  [ -n "$fjord_pid" ] && kill "$fjord_pid" 2>/dev/null && wait "$fjord_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
"$target_dir/release/examples/snapshot_10m" "$PEERS" "$SWARMS" "$work/source"

run_once() { # run_once INTERVAL_SECS -> one result line
  local interval=$1 state="$work/state-$1"
  rm -rf "$state"
  mkdir -p "$state"
  cp "$work/source/snapshot.bin" "$state/"
  "$FJORD" --listen "127.0.0.1:$PORT" --metrics-listen 127.0.0.1:0 --workers 1 --log-level warn \
    --state-dir "$state" -c <(printf '[state]\nsnapshot_interval_secs = %d\n' "$interval") \
    >"$work/stdout" 2>"$work/stderr" &
  fjord_pid=$!
  wait_for_metrics "$fjord_pid" "$work/stdout" "$work/stderr"
  local json
  json=$("$BENCH" "127.0.0.1:$PORT" --mode open --rate "$RATE" --duration "$SECONDS_PER_RUN" \
    --threads 1 --json --quiet 2>"$work/bench.err") || {
    echo "fjord-bench failed (interval $interval):" >&2
    cat "$work/bench.err" >&2
    exit 1
  }
  local body
  body=$(curl -s "http://$metrics")
  kill -TERM "$fjord_pid"
  wait "$fjord_pid" || { echo "fjord exited $? on SIGTERM (interval $interval):" >&2; cat "$work/stderr" >&2; exit 1; }
  fjord_pid=""
  python3 - "$json" "$body" "$interval" <<'EOF'
import json, sys
d = json.loads(sys.argv[1])
lat = d["latency"]
m = {}
for line in sys.argv[2].splitlines():
    if line and not line.startswith("#"):
        k, v = line.rsplit(" ", 1)
        m[k] = float(v)
ok = m.get('fjord_snapshot_writes_total{result="ok"}', 0)
print(f"interval {sys.argv[3]:>3} s: p50 {lat['p50_us']:>5} us  p99 {lat['p99_us']:>6} us  "
      f"p99.9 {lat['p999_us']:>6} us  max {lat['max_us']:>7} us  loss {d['loss'] * 100:.3f} %  "
      f"replies/s {d['responses_per_second_total']:.0f}  "
      f"restored {m.get('fjord_snapshot_restored_peers', 0):.0f}  snapshots {ok:.0f} "
      f"(last {m.get('fjord_snapshot_write_duration_seconds', 0):.2f} s)")
EOF
}

echo "fjord-bench open loop $RATE req/s for ${SECONDS_PER_RUN}s against $PEERS restored peers; $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
for _ in $(seq "$ROUNDS"); do
  run_once "$INTERVAL"
  run_once 0
done
