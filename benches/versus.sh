#!/usr/bin/env bash
# fjord against aquatic_udp and the canned-reply floor (benches/examples/floor.rs), under both
# load generators (aquatic_udp_load_test and fjord-bench) and both request mixes, one worker
# each, pinned, in alternating rounds. Figure of merit: responses per server CPU second (the
# server's utime + stime from /proc over the measured window), so that a load generator that
# cannot saturate the server still measures the server's cost per response.
#
#   announce-heavy  connect 0 / announce 100 / scrape 1   (every request touches the store)
#   client-like     connect 50 / announce 50 / scrape 1   (aquatic_udp_load_test's default)
#
# Population: aquatic_udp_load_test's defaults (1M torrents, 2M peers, 30 peers wanted, 75 %
# seeders); fjord-bench --profile aquatic is the same population. With PEERS and TORRENTS
# set, both generators use those instead (e.g. PEERS=10000000 for the 10M figure).
#
# Prints every run (never only the best) and the ratios per mix and generator: fjord /
# aquatic_udp and fjord / floor, from the means over all rounds; then each server's CPU per
# response split into user and kernel time (stime / (utime + stime) over the same window), which
# separates the tracker's own work from the kernel's UDP path that the floor spends too.
#
# Usage: benches/versus.sh
# Environment (defaults):
#   ROUNDS=2  DURATION=20  WARMUP=5 (seconds left out at the start: the store fills)
#   TRACKERS="fjord aquatic_udp floor"   MIXES="announce-heavy client-like"
#   LOADGENS="aquatic_udp_load_test fjord-bench"
#   TRACKER_CPU=1  BENCH_CPU=0   PEERS=2000000  TORRENTS=1000000
#   WORKERS=1 (fjord --workers, aquatic_udp socket_workers; give TRACKER_CPU a list, e.g. 0,1)
#   FJORD=target/release/fjord (also BENCH, FLOOR)   SKIP_BUILD=0   RESULTS= (append here)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-20}
WARMUP=${WARMUP:-5}
TRACKERS=${TRACKERS:-"fjord aquatic_udp floor"}
MIXES=${MIXES:-"announce-heavy client-like"}
LOADGENS=${LOADGENS:-"aquatic_udp_load_test fjord-bench"}
TRACKER_CPU=${TRACKER_CPU:-1}
WORKERS=${WORKERS:-1}
BENCH_CPU=${BENCH_CPU:-0}
PEERS=${PEERS:-2000000}
TORRENTS=${TORRENTS:-1000000}
FJORD=${FJORD:-target/release/fjord}
BENCH=${BENCH:-target/release/fjord-bench}
FLOOR=${FLOOR:-target/release/examples/floor}
SKIP_BUILD=${SKIP_BUILD:-0}
RESULTS=${RESULTS:-}
PORT=${PORT:-19000}

# WORK, PIDS, and their cleanup on exit.
source benches/processes.sh
trap 'exit 130' INT TERM
log() { printf '%s\n' "$*" >&2; }

if [ "$SKIP_BUILD" != 1 ]; then
  log "==> building fjord, fjord-bench and the floor (release)"
  timeout 1800 cargo build --release -p fjord-server -p fjord-bench >&2
  timeout 1800 cargo build --release -p fjord-benches --example floor >&2
fi
for t in $TRACKERS; do
  case $t in
    aquatic_udp) command -v aquatic_udp >/dev/null || { log "aquatic_udp not on PATH (cargo install aquatic_udp)"; exit 1; } ;;
  esac
done
for g in $LOADGENS; do
  case $g in
    aquatic_udp_load_test) command -v aquatic_udp_load_test >/dev/null || { log "aquatic_udp_load_test not on PATH"; exit 1; } ;;
  esac
done

weights() { # mix -> "connect announce scrape"
  case $1 in
    announce-heavy) echo "0 100 1" ;;
    client-like) echo "50 50 1" ;;
    *) log "unknown mix $1"; exit 1 ;;
  esac
}

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
stime_ticks() { awk '{ print $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
rss_kb() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

start_tracker() { # name port -> TRACKER_PID
  local addr="127.0.0.1:$2"
  case $1 in
    fjord)
      taskset -c "$TRACKER_CPU" "$FJORD" --listen "$addr" --workers "$WORKERS" --no-metrics \
        --config benches/load-test.toml --log-level warn >"$WORK/tracker.log" 2>&1 &
      ;;
    aquatic_udp)
      aquatic_udp -p >"$WORK/aquatic.toml"
      sed -i -e "s/^socket_workers = .*/socket_workers = $WORKERS/" \
        -e "s/^address = .*/address = \"$addr\"/" "$WORK/aquatic.toml"
      taskset -c "$TRACKER_CPU" aquatic_udp -c "$WORK/aquatic.toml" >"$WORK/tracker.log" 2>&1 &
      ;;
    floor)
      taskset -c "$TRACKER_CPU" "$FLOOR" "$addr" 30 >"$WORK/tracker.log" 2>&1 &
      ;;
  esac
  TRACKER_PID=$!
  PIDS+=("$TRACKER_PID")
  sleep 1
  kill -0 "$TRACKER_PID" 2>/dev/null || { log "$1 did not start:"; cat "$WORK/tracker.log" >&2; exit 1; }
}

stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# Runs one load generator against the tracker on $port; prints "responses/s server-cpu-s".
# The server's CPU is sampled over the same window the generator's figure covers: the last
# DURATION - WARMUP seconds.
run_load() { # loadgen mix port tracker_pid
  local w c a s
  read -r c a s < <(weights "$2")
  local window=$((DURATION - WARMUP))
  case $1 in
    aquatic_udp_load_test)
      aquatic_udp_load_test -p >"$WORK/lt.toml"
      sed -i -e "s/^server_address = .*/server_address = \"127.0.0.1:$3\"/" \
        -e "s/^duration = .*/duration = $DURATION/" -e "s/^summarize_last = .*/summarize_last = $window/" \
        -e "s/^extra_statistics = .*/extra_statistics = false/" \
        -e "s/^number_of_torrents = .*/number_of_torrents = $TORRENTS/" \
        -e "s/^number_of_peers = .*/number_of_peers = $PEERS/" \
        -e "s/^weight_connect = .*/weight_connect = $c/" -e "s/^weight_announce = .*/weight_announce = $a/" \
        -e "s/^weight_scrape = .*/weight_scrape = $s/" "$WORK/lt.toml"
      taskset -c "$BENCH_CPU" aquatic_udp_load_test -c "$WORK/lt.toml" >"$WORK/load.out" 2>&1 &
      ;;
    fjord-bench)
      taskset -c "$BENCH_CPU" "$BENCH" "127.0.0.1:$3" --profile aquatic --peers "$PEERS" \
        --swarms "$TORRENTS" --weight-connect "$c" --weight-announce "$a" --weight-scrape "$s" \
        -d "$DURATION" --server-pid "$4" --json -q >"$WORK/load.out" 2>&1 &
      ;;
  esac
  local lp=$!
  PIDS+=("$lp")
  sleep "$WARMUP"
  local c0 c1 k0 k1
  c0=$(cpu_ticks "$4")
  k0=$(stime_ticks "$4")
  local t0=$SECONDS
  # Until the generator exits (it stops at DURATION; fjord-bench then waits for stragglers).
  local waited=0
  # (`waited` counts 0.2 s naps: at most DURATION + 60 seconds.)
  while kill -0 "$lp" 2>/dev/null && [ "$waited" -lt $(((DURATION + 60) * 5)) ]; do
    if [ $((SECONDS - t0)) -ge "$window" ] && [ -z "${c1:-}" ]; then
      c1=$(cpu_ticks "$4")
      k1=$(stime_ticks "$4")
    fi
    sleep 0.2
    waited=$((waited + 1))
  done
  c1=${c1:-$(cpu_ticks "$4")}
  k1=${k1:-$(stime_ticks "$4")}
  stop "$lp"
  # The kernel's share of the server's CPU over the window (stime / (utime + stime), /proc).
  local ksh
  ksh=$(awk -v k=$((k1 - k0)) -v c=$((c1 - c0)) 'BEGIN { print (c > 0 ? k / c : 0) }')
  local rps cpu
  case $1 in
    aquatic_udp_load_test)
      rps=$(sed -n 's/^Average responses per second: \([0-9.]*\)$/\1/p' "$WORK/load.out" | tail -n 1)
      cpu=$(awk -v c=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" 'BEGIN { print c / hz }')
      ;;
    fjord-bench)
      # fjord-bench's own figures cover its whole run: its responses/s and the server CPU it
      # measured (--server-pid), scaled to the window so the ratio below is per CPU second.
      rps=$(sed -n 's/^  "responses_per_second_total": \([0-9.e+]*\),\{0,1\}$/\1/p' "$WORK/load.out" | head -n 1)
      local el scpu
      el=$(sed -n 's/^  "elapsed_seconds": \([0-9.e+]*\),\{0,1\}$/\1/p' "$WORK/load.out" | head -n 1)
      scpu=$(awk '/"server": \{/ { inside = 1 } inside && /"cpu_seconds":/ { v = $2; sub(/,$/, "", v); print v; exit }' "$WORK/load.out")
      cpu=$(awk -v s="${scpu:-0}" -v e="${el:-1}" -v w="$window" 'BEGIN { print (e > 0 ? s * w / e : 0) }')
      ;;
  esac
  echo "${rps:-0} ${cpu:-0} $ksh"
}

rows="$WORK/rows"
: >"$rows"
log "==> $ROUNDS round(s) of ${DURATION}s (first ${WARMUP}s left out); trackers on CPU $TRACKER_CPU, load on CPU $BENCH_CPU; $PEERS peers over $TORRENTS torrents"
for round in $(seq 1 "$ROUNDS"); do
  for mix in $MIXES; do
    for gen in $LOADGENS; do
      for t in $TRACKERS; do
        PORT=$((PORT + 1))
        start_tracker "$t" "$PORT"
        read -r rps cpu ksh < <(run_load "$gen" "$mix" "$PORT" "$TRACKER_PID")
        rss=$(rss_kb "$TRACKER_PID")
        stop "$TRACKER_PID"
        # responses per server CPU second over the window: rps * window / cpu
        per=$(awk -v r="$rps" -v c="$cpu" -v w=$((DURATION - WARMUP)) 'BEGIN { print (c > 0 ? r * w / c : 0) }')
        line=$(printf '%-15s %-22s %-12s round %d: %10.0f responses/s, server CPU %6.2f s (kernel %4.1f %%), %10.0f per server CPU s, peak RSS %6.1f MiB' \
          "$mix" "$gen" "$t" "$round" "$rps" "$cpu" "$(awk -v k="$ksh" 'BEGIN { print k * 100 }')" "$per" \
          "$(awk -v k="$rss" 'BEGIN { print k / 1024 }')")
        if awk -v r="$rps" 'BEGIN { exit !(r > 0) }'; then
          log "$line"
          echo "$mix $gen $t $round $rps $cpu $per $rss $ksh" >>"$rows"
        else
          # A generator that reports no responses failed (it printed no summary): say so, show
          # its output, and keep the run out of the means rather than count it as zero.
          log "$line  FAILED: the load generator reported no responses; the end of its output:"
          tail -n 5 "$WORK/load.out" >&2 || true
          echo "$mix $gen $t $round failed" >>"$WORK/failed"
        fi
      done
    done
  done
done

{
  echo "# $(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null || echo '?') $(uname -srm), $(nproc) CPUs; ROUNDS=$ROUNDS DURATION=$DURATION WARMUP=$WARMUP PEERS=$PEERS TORRENTS=$TORRENTS WORKERS=$WORKERS TRACKER_CPU=$TRACKER_CPU BENCH_CPU=$BENCH_CPU; load $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "## every run: mix generator tracker round responses/s server-cpu-s per-server-cpu-s peak-rss-kB kernel-share"
  sed 's/^/  /' "$rows"
  [ -s "$WORK/failed" ] && { echo "## failed runs (left out of the means)"; sed 's/^/  /' "$WORK/failed"; }
  echo "## responses per server CPU second, mean over rounds, and the ratios"
  awk '{ k = $1 " " $2; resp[k, $3] += $5 * 1; cpu[k, $3] += $6; per[k, $3] += $7; n[k, $3]++; keys[k] = 1 }
    END {
      for (k in keys) {
        f = n[k, "fjord"] ? per[k, "fjord"] / n[k, "fjord"] : 0
        a = n[k, "aquatic_udp"] ? per[k, "aquatic_udp"] / n[k, "aquatic_udp"] : 0
        fl = n[k, "floor"] ? per[k, "floor"] / n[k, "floor"] : 0
        printf "%-38s fjord %9.0f  aquatic_udp %9.0f  floor %9.0f", k, f, a, fl
        if (a > 0) printf "  fjord/aquatic %.2f", f / a
        if (fl > 0) printf "  fjord/floor %.2f", f / fl
        printf "\n"
      }
    }' "$rows"
  echo "## server CPU per response (mean over rounds, from the per-CPU-second figure): user + kernel"
  awk '{ k = $1 " " $2 " " $3; us = 1e6 / $7; u[k] += us * (1 - $9); s[k] += us * $9; n[k]++ }
    END { for (k in n) printf "%-50s %6.3f us = user %6.3f + kernel %6.3f\n", k, (u[k] + s[k]) / n[k], u[k] / n[k], s[k] / n[k] }' "$rows" | sort
} | tee -a "${RESULTS:-/dev/null}"
