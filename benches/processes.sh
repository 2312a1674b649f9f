# Sourced by the bench scripts (not run on its own): a scratch directory WORK, and PIDS, the
# processes a script starts in the background; on exit every one of them is stopped and waited
# for, and WORK is removed.
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
