#!/usr/bin/env bash
# Soak test (issue 16; not in CI): fjord under steady churn for 10-60 minutes with periodic
# snapshots. fjord-bench drives an open loop whose peers join ("started"), complete, stop and
# rejoin (its lifecycle events); with a short peer timeout and a population that announces
# less often than that, most peers also expire between their announces, so the cleaner frees
# swarms and peers all the time. Every SEGMENT seconds one fjord-bench run ends and the script
# prints a row: latency p50/p99/max of that segment, fjord's RSS, peers stored, the last clean
# cycle length (fjord_store_clean_cycle_seconds) and the snapshots written during it.
# At the end: RSS drift after the warm-up (target < 5 %), p99 of segments with and without a
# snapshot, and the clean cycle lengths seen. Finally fjord is stopped (final snapshot) and
# started again on the same state dir, and the peers restored are printed.
#
#   benches/soak.sh                         # 30 minutes, 4,000 requests/s
#   DURATION=600 RATE=2000 benches/soak.sh  # 10 minutes (bounded: at most 3600 s)
#   DURATION=60 SEGMENT=10 WARMUP=20 benches/soak.sh   # a one-minute try of the script itself
#
# The population (PEERS) announces less often than the peer timeout (PEER_TIMEOUT): about
# PEERS / (0.87 RATE) seconds between a peer's announces, 290 s at the defaults, against 120 s,
# so most peers expire and come back as new ones.
#
# Only loopback is used; fjord gets core 0 and fjord-bench core 1 when taskset exists; every
# process started here is stopped on exit. Prefix with `nice -n 10` on a shared machine.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DURATION="${DURATION:-1800}"
RATE="${RATE:-4000}"
SEGMENT="${SEGMENT:-30}"
WARMUP="${WARMUP:-300}"
SNAPSHOT_INTERVAL="${SNAPSHOT_INTERVAL:-90}"
PEERS="${PEERS:-1000000}"
SWARMS="${SWARMS:-100000}"
PEER_TIMEOUT="${PEER_TIMEOUT:-120}"
PORT="${PORT:-17969}"
if [ "$DURATION" -lt 60 ] || [ "$DURATION" -gt 3600 ]; then
  echo "DURATION must be 60-3600 seconds (got $DURATION)" >&2
  exit 2
fi
if [ "$WARMUP" -ge "$DURATION" ]; then
  echo "WARMUP ($WARMUP) must be shorter than DURATION ($DURATION)" >&2
  exit 2
fi
# FJORD, BENCH (release builds), pin_server, pin_bench, wait_for_metrics.
. benches/release-binaries.sh

work=$(mktemp -d)
fjord_pid=""
cleanup() {
  [ -n "$fjord_pid" ] && kill "$fjord_pid" 2>/dev/null && wait "$fjord_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/fjord.toml" <<EOF
workers = 1
log_level = "warn"
[network]
listen = ["127.0.0.1:$PORT"]
[metrics]
listen = "127.0.0.1:0"
[store]
peer_timeout_secs = $PEER_TIMEOUT
clean_interval_ms = 1000
clean_cycle_secs = 60
[state]
dir = "$work/state"
snapshot_interval_secs = $SNAPSHOT_INTERVAL
EOF

start_fjord() {
  "${pin_server[@]}" "$FJORD" -c "$work/fjord.toml" >"$work/stdout" 2>>"$work/stderr" &
  fjord_pid=$!
  wait_for_metrics "$fjord_pid" "$work/stdout" "$work/stderr"
}

# metric NAME_WITH_LABELS -> value (0 if absent)
metric() {
  curl -s "http://$metrics" | awk -v m="$1" '$1 == m { print $2; found = 1 } END { if (!found) print 0 }'
}
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$fjord_pid/status"; }

start_fjord
echo "soak: ${DURATION}s at $RATE requests/s, $PEERS peers over $SWARMS swarms, peer timeout ${PEER_TIMEOUT}s," \
  "snapshots every ${SNAPSHOT_INTERVAL}s, segments of ${SEGMENT}s, warm-up ${WARMUP}s; $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%6s %8s %8s %8s %10s %9s %9s %8s %10s\n' t_s p50_us p99_us max_us rss_kib peers clean_s snaps snap_s
: >"$work/rows"
elapsed=0
seed=1
while [ "$elapsed" -lt "$DURATION" ]; do
  writes_before=$(metric 'fjord_snapshot_writes_total{result="ok"}')
  json=$("${pin_bench[@]}" "$BENCH" "127.0.0.1:$PORT" --mode open --rate "$RATE" --duration "$SEGMENT" \
    --peers "$PEERS" --swarms "$SWARMS" --p-complete 0.05 --p-stop 0.05 --seed "$seed" \
    --threads 1 --json --quiet 2>/dev/null)
  elapsed=$((elapsed + SEGMENT))
  writes_after=$(metric 'fjord_snapshot_writes_total{result="ok"}')
  row=$(python3 -c '
import json, sys
d = json.loads(sys.argv[1]); l = d["latency"]
print(l["p50_us"], l["p99_us"], l["max_us"], d["loss"])' "$json")
  read -r p50 p99 max loss <<<"$row"
  peers=$(($(metric 'fjord_peers{ip_version="4",role="seeder"}' | cut -d. -f1) + $(metric 'fjord_peers{ip_version="4",role="leecher"}' | cut -d. -f1)))
  clean=$(metric fjord_store_clean_cycle_seconds)
  snaps=$((${writes_after%.*} - ${writes_before%.*}))
  snap_s=$(metric fjord_snapshot_write_duration_seconds)
  rss=$(rss_kib)
  printf '%6d %8d %8d %8d %10d %9d %9s %8d %10s\n' "$elapsed" "$p50" "$p99" "$max" "$rss" "$peers" "$clean" "$snaps" "$snap_s"
  echo "$elapsed $p50 $p99 $max $rss $peers $clean $snaps $snap_s $loss" >>"$work/rows"
  # A new seed each segment: other random choices, the same population (peer ids, swarms).
  seed=$((seed + 1))
done

python3 - "$work/rows" "$WARMUP" <<'EOF'
import sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1])]
warmup = float(sys.argv[2])
after = [r for r in rows if r[0] > warmup]
base = after[0][4]
rss = [r[4] for r in after]
drift_max = (max(rss) - base) / base * 100
drift_end = (rss[-1] - base) / base * 100
with_snap = [r[2] for r in rows if r[7] > 0]
without = [r[2] for r in rows if r[7] == 0]
cycles = sorted(r[6] for r in after)
print(f"\nRSS after warm-up: first {base/1024:.1f} MiB, last {rss[-1]/1024:.1f} MiB, max {max(rss)/1024:.1f} MiB:"
      f" drift {drift_end:+.2f} % (end), {drift_max:+.2f} % (max)  [target < 5 %]")
print(f"peers stored after warm-up: {min(r[5] for r in after):.0f} - {max(r[5] for r in after):.0f}")
def q(v): return f"median {sorted(v)[len(v)//2]:.0f} us, max {max(v):.0f} us" if v else "none"
print(f"p99 per segment: with a snapshot written ({len(with_snap)} segments) {q(with_snap)}; without ({len(without)}) {q(without)}")
print(f"p99 over all segments: min {min(r[2] for r in rows):.0f} us, max {max(r[2] for r in rows):.0f} us;"
      f" loss max {max(r[9] for r in rows)*100:.3f} %")
print(f"clean cycle after warm-up: {cycles[0]:.0f} - {cycles[-1]:.0f} s (median {cycles[len(cycles)//2]:.0f} s)")
print(f"snapshot write (last): {rows[-1][8]} s")
EOF

# Stop (final snapshot) and start again on the same state dir: the peers come back.
peers_before=$(($(metric 'fjord_peers{ip_version="4",role="seeder"}' | cut -d. -f1) + $(metric 'fjord_peers{ip_version="4",role="leecher"}' | cut -d. -f1)))
t0=$(date +%s.%N)
kill -TERM "$fjord_pid"
wait "$fjord_pid" || { echo "fjord did not exit 0 on SIGTERM" >&2; exit 1; }
start_fjord
t1=$(date +%s.%N)
restored=$(metric fjord_snapshot_restored_peers | cut -d. -f1)
echo "restart: $peers_before peers before SIGTERM, $restored restored; stop + start took $(python3 -c "print(f'{$t1 - $t0:.2f}')") s"
