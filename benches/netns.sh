#!/usr/bin/env bash
# fjord-bench against a tracker across a (virtual) network: two network namespaces joined by a
# veth pair, fjord in one, fjord-bench in the other, addresses from the benchmarking ranges
# (198.18.0.0/15, RFC 2544; 2001:2::/48, RFC 5180). Needs root (ip netns).
#
# Checks, each bounded in time:
#   1. IPv4 with a URL path and two source addresses (--bind), a limit gate (--max-loss);
#   2. IPv6 literal target with a path;
#   3. a short capacity search;
#   4. a closed port across the link: "nothing listens", within a second;
#   5. an address where no host answers: "no reply".
#
# Environment: FJORD, BENCH (binaries; default target/debug/…, built if missing), DURATION (2).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
FJORD="${FJORD:-target/debug/fjord}"
BENCH="${BENCH:-target/debug/fjord-bench}"
DURATION="${DURATION:-2}"
if [ ! -x "$FJORD" ] || [ ! -x "$BENCH" ]; then
  cargo build -q -p fjord-server -p fjord-bench
fi

id=$$
ns_tracker="fjord-t-$id"
ns_bench="fjord-b-$id"
tracker_pid=""
cleanup() {
  set +e
  if [ -n "$tracker_pid" ]; then
    kill "$tracker_pid" 2>/dev/null
    wait "$tracker_pid" 2>/dev/null
  fi
  # Deleting the namespaces also deletes the veth pair.
  ip netns del "$ns_tracker" 2>/dev/null
  ip netns del "$ns_bench" 2>/dev/null
  rm -f "$log"
}
log=$(mktemp)
trap cleanup EXIT

ip netns add "$ns_tracker"
ip netns add "$ns_bench"
ip link add "vt$id" type veth peer name "vb$id"
ip link set "vt$id" netns "$ns_tracker"
ip link set "vb$id" netns "$ns_bench"
ip -n "$ns_tracker" addr add 198.18.0.1/24 dev "vt$id"
ip -n "$ns_tracker" addr add 2001:2::1/64 dev "vt$id" nodad
ip -n "$ns_bench" addr add 198.18.0.2/24 dev "vb$id"
ip -n "$ns_bench" addr add 198.18.0.3/24 dev "vb$id"
ip -n "$ns_bench" addr add 2001:2::2/64 dev "vb$id" nodad
for ns in "$ns_tracker" "$ns_bench"; do
  ip -n "$ns" link set lo up
done
ip -n "$ns_tracker" link set "vt$id" up
ip -n "$ns_bench" link set "vb$id" up

in_bench() { ip netns exec "$ns_bench" timeout 120 "$@"; }

# Not through a function: $! must be fjord itself (ip netns exec execs it) for the trap to stop it.
ip netns exec "$ns_tracker" "$FJORD" --config benches/load-test.toml --no-metrics --workers 1 --listen 198.18.0.1:6969 --listen '[2001:2::1]:6969' \
  >"$log" 2>&1 &
tracker_pid=$!
# Until fjord answers a connect across the link (bounded: 10 s).
for _ in $(seq 100); do
  in_bench "$BENCH" udp://198.18.0.1:6969 -q -n 1 --timeout-ms 100 >/dev/null 2>&1 && break
  kill -0 "$tracker_pid" 2>/dev/null || { cat "$log"; echo "fjord exited" >&2; exit 1; }
  sleep 0.1
done

ok=0
fail=0
check() { # name, expected exit, expected text on the last line, command…
  local name=$1 want_code=$2 want_text=$3
  shift 3
  local out code=0 start=$SECONDS
  out=$("$@" 2>&1 >/dev/null) || code=$?
  local last
  last=$(printf '%s\n' "$out" | tail -n 1)
  if [ "$code" = "$want_code" ] && [[ "$last" == *"$want_text"* ]]; then
    printf 'ok   %-45s (%ds) %s\n' "$name" $((SECONDS - start)) "$last"
    ok=$((ok + 1))
  else
    printf 'FAIL %-45s exit %s, want %s with "%s": %s\n' "$name" "$code" "$want_code" "$want_text" "$last"
    fail=$((fail + 1))
  fi
}

common=(-q --peers 10000 --swarms 1000)
check "IPv4, path, two source addresses, --max-loss" 0 "passed: loss" \
  in_bench "$BENCH" udp://198.18.0.1:6969/announce "${common[@]}" -d "$DURATION" \
  --bind 198.18.0.2,198.18.0.3 --max-loss 1%
check "IPv6 literal with a path" 0 "done:" \
  in_bench "$BENCH" 'udp://[2001:2::1]:6969/announce' "${common[@]}" -d "$DURATION"
# Loose limits: this checks that the search runs across the link, not how fast a debug build is.
check "capacity search (short)" 0 "capacity" \
  in_bench "$BENCH" udp://198.18.0.1:6969/announce "${common[@]}" --mode capacity -d 1 \
  --warmup 0.2 --start-rate 5000 --max-steps 6 --max-loss 5% --max-p99 200ms \
  --bind 198.18.0.2,198.18.0.3
check "closed port: nothing listens" 3 "nothing listens on udp://198.18.0.1:6970" \
  in_bench timeout 1 "$BENCH" udp://198.18.0.1:6970/announce "${common[@]}"
check "no host at the address: no reply" 3 "no reply from udp://198.18.0.9:6969" \
  in_bench "$BENCH" udp://198.18.0.9:6969 "${common[@]}" --timeout-ms 500

echo "$ok passed, $fail failed"
[ "$fail" -eq 0 ]
