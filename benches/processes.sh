# Sourced by the bench scripts (not run on its own): a scratch directory WORK, and PIDS, the
# processes a script starts in the background; on exit every one of them is stopped and waited
# for, and WORK is removed. Also pin_server / pin_bench: the taskset prefixes that put a
# tracker on CPU 1 and a load generator on CPU 0 (empty without taskset or with one CPU).
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
pin_server=() pin_bench=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  pin_server=(taskset -c 1) pin_bench=(taskset -c 0)
fi
