# Sourced by the bench scripts (not run on its own): builds fjord and fjord-bench in release and
# sets FJORD and BENCH to them, and pin_server / pin_bench to `taskset -c 0` / `taskset -c 1`
# when taskset exists and there are two cores or more (empty otherwise), so that the server and
# the load generator do not steal each other's core.
cargo build --release -q -p fjord-server -p fjord-bench
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
FJORD="$target_dir/release/fjord"
BENCH="$target_dir/release/fjord-bench"
pin_server=() pin_bench=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  pin_server=(taskset -c 0) pin_bench=(taskset -c 1)
fi
