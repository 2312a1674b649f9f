# Sourced by the bench scripts (not run on its own): builds fjord and fjord-bench in release and
# sets FJORD and BENCH to them, and pin_server / pin_bench to `taskset -c 0` / `taskset -c 1`
# when taskset exists and there are two cores or more (empty otherwise), so that the server and
# the load generator do not steal each other's core. Defines wait_for_metrics.
cargo build --release -q -p fjord-server -p fjord-bench
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
FJORD="$target_dir/release/fjord"
BENCH="$target_dir/release/fjord-bench"
pin_server=() pin_bench=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  pin_server=(taskset -c 0) pin_bench=(taskset -c 1)
fi

# wait_for_metrics PID STDOUT STDERR: waits (polling, up to 60 s: a large snapshot is restored
# before fjord prints its addresses) for fjord's "metrics on" line in the file STDOUT and sets
# `metrics` to its host:port/metrics; exits with fjord's STDERR if PID dies first.
wait_for_metrics() {
  metrics=""
  for _ in $(seq 600); do
    metrics=$(sed -n 's|^fjord metrics on http://\(.*\)$|\1|p' "$2")
    [ -n "$metrics" ] && return 0
    kill -0 "$1" 2>/dev/null || { cat "$3" >&2; exit 1; }
    sleep 0.1 # polling interval
  done
  echo "fjord did not start within 60 s" >&2
  exit 1
}
