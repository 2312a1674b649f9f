#!/usr/bin/env bash
# Regenerate the captures in this directory: run the logging tracker (capture_tracker.py) on a free
# loopback port, drive libtorrent (capture_libtorrent.py) and Transmission (capture_transmission.sh)
# against it, and copy the first datagram of each kind to <client>-<version>-<what>.bin.
# Needs python3-libtorrent, transmission-cli, transmission-daemon.  Loopback only, ~40 s.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
py=/usr/bin/python3
tmp=$(mktemp -d /tmp/fjord-capture-XXXXXX)
trap 'kill "${tracker:-}" 2>/dev/null || true; rm -rf "$tmp"' EXIT
free_udp() { $py -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

capture() { # capture NAME-PREFIX DRIVER...
  local prefix=$1; shift
  local port; port=$(free_udp)
  mkdir -p "$tmp/$prefix"
  $py "$here/capture_tracker.py" --port "$port" --out "$tmp/$prefix" --seconds 120 >"$tmp/$prefix.tracker" &
  tracker=$!
  for _ in $(seq 50); do grep -q listening "$tmp/$prefix.tracker" && break; sleep 0.1; done
  timeout 90 "$@" "$port" >"$tmp/$prefix.driver" 2>&1 || { cat "$tmp/$prefix.driver" >&2; exit 1; }
  kill "$tracker"; wait "$tracker" 2>/dev/null || true
  $py - "$tmp/$prefix" "$tmp/$prefix.driver" "$here" "$prefix" <<'PY'
import json, shutil, sys
src, driver, out, prefix = sys.argv[1:]
labels = {}
for line in open(driver):
    if line.startswith("label "):
        _, label, h = line.split()
        labels[h.lower()] = label
seen = set()
for line in open(src + "/log.jsonl"):
    d = json.loads(line)
    kind = d["kind"]
    if kind == "announce":
        label = labels.get(d["info_hash"], "")
        name = "-".join(x for x in (label if label not in ("leecher", "file") else "", "announce", d["event"]) if x)
    elif kind == "scrape":
        name = "scrape"
    else:
        name = kind
    if name in seen:
        continue
    seen.add(name)
    dst = "%s/%s-%s.bin" % (out, prefix, name)
    shutil.copyfile(src + "/" + d["file"], dst)
    print(dst.rsplit("/", 1)[1], d["len"], "bytes")
PY
}

lt_version=$($py -c 'import libtorrent as lt; print(".".join(lt.__version__.split(".")[:3]))')
tr_version=$(transmission-daemon --version 2>&1 | awk '{print $2; exit}')
capture "libtorrent-$lt_version" $py "$here/capture_libtorrent.py"
capture "transmission-$tr_version" bash "$here/capture_transmission.sh"
