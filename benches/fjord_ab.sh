#!/usr/bin/env bash
# Two fjord binaries side by side under the same fjord-bench load: e.g. a build of main (the
# baseline) and a build of a branch. Runs each ROUNDS times, alternating which goes first, and
# prints for each the replies per second and the replies per server CPU-second (CPU the tracker
# spends per reply, from /proc via fjord-bench --server-pid: the steadier measure on a shared
# machine).
#
#   BASELINE=/tmp/base/release/fjord NEW=target/release/fjord benches/fjord_ab.sh
#   ROUNDS=6 SECONDS_PER_RUN=5 BENCH_ARGS="--profile aquatic" BASELINE=... NEW=... benches/fjord_ab.sh
#   BASELINE_ARGS="--config a.toml" NEW_ARGS="--config b.toml": extra fjord arguments of each
#   (one binary in two configurations: BASELINE=NEW=target/release/fjord).
#
# One worker each; fjord gets CPU 1 and fjord-bench CPU 0 when taskset exists. fjord-bench is
# this tree's (build it first: cargo build --release -p fjord-bench). Only loopback is used.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
: "${BASELINE:?path of the baseline fjord binary}" "${NEW:?path of the new fjord binary}"
ROUNDS="${ROUNDS:-4}"
SECONDS_PER_RUN="${SECONDS_PER_RUN:-5}"
PORT="${PORT:-16979}"
BENCH="${BENCH:-target/release/fjord-bench}"
read -r -a bench_args <<<"${BENCH_ARGS:-}"
read -r -a baseline_args <<<"${BASELINE_ARGS:-}"
read -r -a new_args <<<"${NEW_ARGS:-}"
# WORK, PIDS, pin_server / pin_bench, and the cleanup on exit.
source benches/processes.sh

# run_binary PATH [FJORD ARGS...] -> prints "replies_per_second replies_per_server_cpu_second"
run_binary() {
  local out bin=$1
  shift
  out=$(mktemp)
  "${pin_server[@]}" "$bin" --listen "127.0.0.1:$PORT" --workers 1 --log-level warn --no-metrics "$@" >"$out" 2>/dev/null &
  local fjord_pid=$!
  PIDS+=("$fjord_pid")
  for _ in $(seq 100); do grep -q "listening on udp" "$out" && break; sleep 0.05; done
  "${pin_bench[@]}" "$BENCH" "127.0.0.1:$PORT" --duration "$SECONDS_PER_RUN" --json --quiet \
    "${bench_args[@]}" --server-pid "$fjord_pid" 2>/dev/null \
    | python3 -c 'import json,sys; d=json.load(sys.stdin); print(round(d["responses_per_second_total"]), round(d["server"]["responses_per_cpu_second"]))'
  kill "$fjord_pid" 2>/dev/null || true
  wait "$fjord_pid" 2>/dev/null || true
  rm -f "$out"
}

base=() new=()
for round in $(seq "$ROUNDS"); do
  if ((round % 2)); then
    base+=("$(run_binary "$BASELINE" "${baseline_args[@]}")")
    new+=("$(run_binary "$NEW" "${new_args[@]}")")
  else
    new+=("$(run_binary "$NEW" "${new_args[@]}")")
    base+=("$(run_binary "$BASELINE" "${baseline_args[@]}")")
  fi
  echo "round $round (replies/s, replies per server CPU-s): baseline ${base[-1]}; new ${new[-1]}" >&2
done
python3 - "${base[*]}" "${new[*]}" <<'EOF'
import statistics, sys
def columns(arg):
    v = [int(x) for x in arg.split()]
    return v[0::2], v[1::2]
(b_tp, b_eff), (n_tp, n_eff) = columns(sys.argv[1]), columns(sys.argv[2])
for label, b, n in (("replies per second", b_tp, n_tp), ("replies per server CPU-second", b_eff, n_eff)):
    mb, mn = statistics.median(b), statistics.median(n)
    print(f"{label}: baseline median {mb:,.0f} ({', '.join(f'{x:,}' for x in b)}); "
          f"new median {mn:,.0f} ({', '.join(f'{x:,}' for x in n)}); new/baseline {mn / mb:.3f}")
EOF
