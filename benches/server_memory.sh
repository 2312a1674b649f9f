#!/usr/bin/env bash
# Bytes per stored peer measured from the running server (issue 12): fjord with one worker is
# filled by aquatic_udp_load_test (announce-heavy: every request an announce of a peer of its
# population) until the peers it reports storing stop growing; then its peak RSS (VmHWM) is
# divided by the peers it reports (`fjord_peers` summed over roles and families), not by the
# peers the generator simulated.
#
# Usage: benches/server_memory.sh            (PEERS=2000000 TORRENTS=1000000 DURATION=60)
#        PEERS=10000000 DURATION=120 benches/server_memory.sh
# Prints one line per sample (every 5 s) and the result; needs aquatic_udp_load_test on PATH
# (`cargo install aquatic_udp_load_test`) and a release build of fjord.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PEERS=${PEERS:-2000000}
TORRENTS=${TORRENTS:-1000000}
DURATION=${DURATION:-60}
FJORD=${FJORD:-target/release/fjord}
PORT=${PORT:-19700}
METRICS_PORT=${METRICS_PORT:-19701}
TRACKER_CPU=${TRACKER_CPU:-1}
BENCH_CPU=${BENCH_CPU:-0}

# WORK, PIDS, and their cleanup on exit.
source benches/processes.sh

taskset -c "$TRACKER_CPU" "$FJORD" --listen "127.0.0.1:$PORT" --workers 1 --config benches/load-test.toml \
  --metrics-listen "127.0.0.1:$METRICS_PORT" --log-level warn >"$WORK/fjord.log" 2>&1 &
fj=$!
PIDS+=("$fj")
metrics() { curl -sf "http://127.0.0.1:$METRICS_PORT/metrics"; }
for _ in $(seq 100); do metrics >/dev/null 2>&1 && break; sleep 0.1; done
idle_kb=$(awk '/^VmRSS:/ { print $2 }' "/proc/$fj/status")

aquatic_udp_load_test -p >"$WORK/lt.toml"
sed -i -e "s/^server_address = .*/server_address = \"127.0.0.1:$PORT\"/" \
  -e "s/^duration = .*/duration = $DURATION/" -e "s/^extra_statistics = .*/extra_statistics = false/" \
  -e "s/^number_of_torrents = .*/number_of_torrents = $TORRENTS/" \
  -e "s/^number_of_peers = .*/number_of_peers = $PEERS/" \
  -e "s/^weight_connect = .*/weight_connect = 0/" -e "s/^weight_announce = .*/weight_announce = 100/" \
  -e "s/^weight_scrape = .*/weight_scrape = 0/" "$WORK/lt.toml"
taskset -c "$BENCH_CPU" aquatic_udp_load_test -c "$WORK/lt.toml" >"$WORK/load.out" 2>&1 &
lt=$!
PIDS+=("$lt")

stored() { metrics | awk '/^fjord_peers\{/ { s += $2 } END { printf "%d\n", s }'; }
hwm_kb() { awk '/^VmHWM:/ { print $2 }' "/proc/$fj/status"; }
printf 'fjord idle RSS %d KiB; %d peers over %d torrents offered for %d s\n' "$idle_kb" "$PEERS" "$TORRENTS" "$DURATION"
t=0
while kill -0 "$lt" 2>/dev/null; do
  sleep 5
  t=$((t + 5))
  printf '  %4d s: %10d peers stored, peak RSS %8.1f MiB\n' "$t" "$(stored)" "$(awk -v k="$(hwm_kb)" 'BEGIN { print k / 1024 }')"
done
peers=$(stored)
swarms=$(metrics | awk '/^fjord_torrents\{/ { s += $2 } END { printf "%d\n", s }')
hwm=$(hwm_kb)
rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$fj/status")
awk -v p="$peers" -v n="$swarms" -v h="$hwm" -v r="$rss" -v i="$idle_kb" 'BEGIN {
  printf "stored %d peers in %d swarms (%.2f peers per swarm)\n", p, n, p / n
  printf "peak RSS %.1f MiB: %.2f bytes per stored peer (%.2f above the idle RSS of %.1f MiB)\n",
    h / 1024, h * 1024 / p, (h - i) * 1024 / p, i / 1024
  printf "RSS at the end %.1f MiB: %.2f bytes per stored peer\n", r / 1024, r * 1024 / p
}'
