#!/usr/bin/env bash
# Side-by-side throughput of fjord and aquatic_udp under the same fjord-bench load.
#
# Builds fjord and fjord-bench in release mode, then for each tracker (fjord, and aquatic_udp
# when it is on PATH): starts it on loopback pinned to TRACKER_CPUS, drives it with fjord-bench
# pinned to BENCH_CPUS for DURATION seconds, and records responses/s, loss, p99 latency and the
# tracker's CPU seconds and peak RSS (fjord-bench --server-pid). Prints one line per tracker and
# the ratio fjord / aquatic_udp. With ROUNDS > 1 the trackers alternate and each line is the
# mean of its rounds.
#
# With LOADGEN=1 and aquatic_udp_load_test on PATH it also drives each tracker with
# aquatic_udp_load_test (same pinning and duration) and compares the two load generators'
# responses/s and responses per load-generator CPU second.
#
# Every process it starts is stopped on exit (trap), and every step is bounded by `timeout`.
#
# Usage: benches/compare.sh [extra fjord-bench options...]
# Environment (defaults):
#   DURATION=10        seconds of load per run
#   ROUNDS=1           alternating rounds per tracker
#   WORKERS=1          tracker worker threads (fjord --workers, aquatic socket_workers)
#   BENCH_THREADS=1    fjord-bench --threads
#   TRACKER_CPUS=1     taskset CPU list for the trackers
#   BENCH_CPUS=0       taskset CPU list for the load generators
#   PROFILE=aquatic    fjord-bench --profile (aquatic = aquatic_udp_load_test's population)
#   FJORD_PORT=16969   AQUATIC_PORT=13000
#   LOADGEN=0          also compare against aquatic_udp_load_test
#   SKIP_BUILD=0       use already built binaries in $CARGO_TARGET_DIR (or ./target)
#   RESULTS=           file to append the result lines to (optional)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-1}
WORKERS=${WORKERS:-1}
BENCH_THREADS=${BENCH_THREADS:-1}
TRACKER_CPUS=${TRACKER_CPUS:-1}
BENCH_CPUS=${BENCH_CPUS:-0}
PROFILE=${PROFILE:-aquatic}
FJORD_PORT=${FJORD_PORT:-16969}
AQUATIC_PORT=${AQUATIC_PORT:-13000}
LOADGEN=${LOADGEN:-0}
SKIP_BUILD=${SKIP_BUILD:-0}
RESULTS=${RESULTS:-}
EXTRA=("$@")
TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN="$TARGET_DIR/release"
# Longest any single step may take: the run, plus setup of up to 2M simulated peers, plus drain.
STEP_LIMIT=$((DURATION + 60))

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]:-}"; do
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]:-}"; do
    [ -n "$pid" ] && wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

forget_pid() { # pid: no longer ours to kill
  local kept=() p
  for p in "${PIDS[@]:-}"; do
    [ -n "$p" ] && [ "$p" != "$1" ] && kept+=("$p")
  done
  PIDS=("${kept[@]:-}")
}

# Runs a command in the background and waits for it, so that a signal interrupts the wait and
# the EXIT trap stops the command at once (a foreground command would delay the trap).
run_waited() {
  "$@" &
  local pid=$! rc=0
  PIDS+=("$pid")
  wait "$pid" || rc=$?
  forget_pid "$pid"
  return "$rc"
}

# Command prefixes that pin to a CPU list (taskset execs the command, so $! is its pid).
TRACKER_PIN=()
BENCH_PIN=()
if command -v taskset >/dev/null 2>&1; then
  TRACKER_PIN=(taskset -c "$TRACKER_CPUS")
  BENCH_PIN=(taskset -c "$BENCH_CPUS")
fi

log() { printf '%s\n' "$*" >&2; }

if [ "$SKIP_BUILD" != 1 ]; then
  log "==> building fjord and fjord-bench (release)"
  timeout 1800 cargo build --release -p fjord-server -p fjord-bench >&2
fi
[ -x "$BIN/fjord" ] && [ -x "$BIN/fjord-bench" ] || { log "binaries missing in $BIN"; exit 1; }

HAVE_AQUATIC=0
command -v aquatic_udp >/dev/null 2>&1 && HAVE_AQUATIC=1
HAVE_LOADTEST=0
command -v aquatic_udp_load_test >/dev/null 2>&1 && HAVE_LOADTEST=1
[ "$HAVE_AQUATIC" = 1 ] || log "aquatic_udp not on PATH (cargo install aquatic_udp): measuring fjord only"

start_tracker() { # name -> sets TRACKER_PID and TRACKER_ADDR
  case "$1" in
    fjord)
      TRACKER_ADDR="127.0.0.1:$FJORD_PORT"
      "${TRACKER_PIN[@]}" "$BIN/fjord" --listen "$TRACKER_ADDR" --workers "$WORKERS" \
        --config benches/load-test.toml --log-level warn >"$WORK/fjord.log" 2>&1 &
      ;;
    aquatic_udp)
      TRACKER_ADDR="127.0.0.1:$AQUATIC_PORT"
      aquatic_udp -p >"$WORK/aquatic.toml"
      sed -i -e "s/^socket_workers = .*/socket_workers = $WORKERS/" \
        -e "s/^address = .*/address = \"$TRACKER_ADDR\"/" "$WORK/aquatic.toml"
      "${TRACKER_PIN[@]}" aquatic_udp -c "$WORK/aquatic.toml" >"$WORK/aquatic.log" 2>&1 &
      ;;
  esac
  TRACKER_PID=$!
  PIDS+=("$TRACKER_PID")
  sleep 1
  kill -0 "$TRACKER_PID" 2>/dev/null || { log "$1 did not start:"; cat "$WORK"/*.log >&2; exit 1; }
}

stop_tracker() {
  kill "$TRACKER_PID" 2>/dev/null || true
  wait "$TRACKER_PID" 2>/dev/null || true
  forget_pid "$TRACKER_PID"
}

# Top-level number from fjord-bench's pretty JSON (keys at two spaces of indent).
json_num() { # file key
  sed -n "s/^  \"$2\": \([-0-9.e+]*\),\{0,1\}$/\1/p" "$1" | head -n 1
}
# A number inside a top-level object such as "server" or "latency" (four spaces of indent).
json_nested() { # file object key
  awk -v obj="\"$2\": {" -v key="\"$3\":" '
    index($0, obj) == 3 { inside = 1; next }
    inside && /^  }/ { inside = 0 }
    inside && index($0, key) == 5 { v = $2; sub(/,$/, "", v); print v; exit }' "$1"
}

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }

# Row: tracker responses/s loss p99_us server_cpu_s peak_rss_bytes responses/s-per-generator-core
run_fjord_bench() { # tracker round
  local out="$WORK/$1.$2.json"
  start_tracker "$1"
  run_waited timeout "$STEP_LIMIT" "${BENCH_PIN[@]}" "$BIN/fjord-bench" "$TRACKER_ADDR" --profile "$PROFILE" \
    --threads "$BENCH_THREADS" -d "$DURATION" --server-pid "$TRACKER_PID" --json -q \
    "${EXTRA[@]}" >"$out" || log "fjord-bench against $1 exited with $?"
  stop_tracker
  local rps cli_cpu elapsed
  rps=$(json_num "$out" responses_per_second_total)
  cli_cpu=$(json_num "$out" client_cpu_seconds)
  elapsed=$(json_num "$out" elapsed_seconds)
  echo "$1 ${rps:-0} $(json_num "$out" loss) $(json_nested "$out" latency p99_us)" \
    "$(json_nested "$out" server cpu_seconds) $(json_nested "$out" server peak_rss_bytes)" \
    "$(awk -v r="${rps:-0}" -v c="${cli_cpu:-0}" -v e="${elapsed:-0}" 'BEGIN { print (c > 0 ? r * e / c : 0) }')" \
    >>"$WORK/fjord-bench.rows"
}

# Row: tracker responses/s responses/s-per-generator-core. The generator's CPU use is sampled
# from /proc between 30% and 90% of the run, after its setup (building its peers).
run_loadtest() { # tracker round
  local cfg="$WORK/loadtest.toml" out="$WORK/$1.$2.loadtest"
  start_tracker "$1"
  aquatic_udp_load_test -p >"$cfg"
  sed -i -e "s/^server_address = .*/server_address = \"$TRACKER_ADDR\"/" \
    -e "s/^duration = .*/duration = $DURATION/" -e "s/^workers = .*/workers = $BENCH_THREADS/" \
    -e "s/^extra_statistics = .*/extra_statistics = false/" "$cfg"
  # aquatic_udp_load_test runs for DURATION seconds and exits by itself; the trap and the
  # kill below bound it anyway.
  "${BENCH_PIN[@]}" aquatic_udp_load_test -c "$cfg" >"$out" 2>&1 &
  local lt=$! child
  PIDS+=("$lt")
  child=$lt
  sleep "$(awk -v d="$DURATION" 'BEGIN { print d * 0.3 }')"
  local t0 c0 t1 c1
  t0=$(date +%s.%N)
  c0=$(cpu_ticks "$child")
  sleep "$(awk -v d="$DURATION" 'BEGIN { print d * 0.6 }')"
  t1=$(date +%s.%N)
  c1=$(cpu_ticks "$child")
  local waited=0
  while kill -0 "$lt" 2>/dev/null && [ "$waited" -lt "$STEP_LIMIT" ]; do
    sleep 1
    waited=$((waited + 1))
  done
  kill "$lt" 2>/dev/null || true
  wait "$lt" 2>/dev/null || true
  forget_pid "$lt"
  stop_tracker
  local rps
  rps=$(sed -n 's/^Average responses per second: \([0-9.]*\)$/\1/p' "$out" | tail -n 1)
  echo "$1 ${rps:-0} $(awk -v r="${rps:-0}" -v c=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" \
    -v w="$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" \
    'BEGIN { cores = c / hz / w; print (cores > 0 ? r / cores : 0) }')" >>"$WORK/loadtest.rows"
}

TRACKERS=(fjord)
[ "$HAVE_AQUATIC" = 1 ] && TRACKERS+=(aquatic_udp)

log "==> ${#TRACKERS[@]} tracker(s), $ROUNDS round(s) of ${DURATION}s, trackers on CPUs $TRACKER_CPUS, load on CPUs $BENCH_CPUS"
for round in $(seq 1 "$ROUNDS"); do
  for t in "${TRACKERS[@]}"; do
    log "--> round $round: fjord-bench -> $t"
    run_fjord_bench "$t" "$round"
    if [ "$LOADGEN" = 1 ] && [ "$HAVE_LOADTEST" = 1 ]; then
      log "--> round $round: aquatic_udp_load_test -> $t"
      run_loadtest "$t" "$round"
    fi
  done
done

{
  echo "# $(date -u +%FT%TZ) $(uname -srm), $(nproc) CPUs; DURATION=$DURATION ROUNDS=$ROUNDS WORKERS=$WORKERS BENCH_THREADS=$BENCH_THREADS PROFILE=$PROFILE TRACKER_CPUS=$TRACKER_CPUS BENCH_CPUS=$BENCH_CPUS ${EXTRA[*]}"
  echo "## trackers under the same fjord-bench load (mean of rounds)"
  awk '{ n[$1]++; rps[$1] += $2; loss[$1] += $3; p99[$1] += $4; cpu[$1] += $5; rss[$1] += $6 }
    END {
      printf "%-12s %12s %9s %9s %13s %13s\n", "tracker", "responses/s", "loss %", "p99 us", "server CPU s", "peak RSS MiB"
      for (t in n)
        printf "%-12s %12.0f %9.4f %9.0f %13.2f %13.1f\n", t, rps[t] / n[t], 100 * loss[t] / n[t], p99[t] / n[t], cpu[t] / n[t], rss[t] / n[t] / 1048576
      if (n["fjord"] && n["aquatic_udp"])
        printf "ratio fjord / aquatic_udp (responses/s): %.2f\n", (rps["fjord"] / n["fjord"]) / (rps["aquatic_udp"] / n["aquatic_udp"])
    }' "$WORK/fjord-bench.rows"
  echo "## raw rows: tracker responses/s loss p99_us server_cpu_s peak_rss_bytes responses/s-per-fjord-bench-core"
  sed 's/^/  /' "$WORK/fjord-bench.rows"
  if [ -f "$WORK/loadtest.rows" ]; then
    echo "## raw rows: tracker responses/s-of-aquatic_udp_load_test per-core"
    sed 's/^/  /' "$WORK/loadtest.rows"
    echo "## load generators on the same tracker (mean of rounds; per core = responses/s / cores the generator used)"
    awk 'FNR == NR { n[$1]++; rps[$1] += $2; pc[$1] += $7; next }
      { m[$1]++; lrps[$1] += $2; lpc[$1] += $3 }
      END {
        printf "%-12s %-22s %12s %16s\n", "tracker", "load generator", "responses/s", "per gen. core"
        for (t in n) {
          printf "%-12s %-22s %12.0f %16.0f\n", t, "fjord-bench", rps[t] / n[t], pc[t] / n[t]
          if (m[t]) printf "%-12s %-22s %12.0f %16.0f\n", t, "aquatic_udp_load_test", lrps[t] / m[t], lpc[t] / m[t]
        }
      }' "$WORK/fjord-bench.rows" "$WORK/loadtest.rows"
  fi
} | tee -a "${RESULTS:-/dev/null}"
