#!/usr/bin/env bash
# Drive transmission-daemon 3.00 against the logging tracker (capture_tracker.py).
# Usage: capture_transmission.sh TRACKER_PORT
# Creates a 100000-byte torrent with transmission-create (announce udp://127.0.0.1:PORT/announce),
# adds it to a foreground daemon (own config dir, RPC and peers on loopback, DHT/LPD/PEX/uTP and
# port mapping off) with no data on disk, waits for the started announce, asks for a re-announce,
# waits for a scrape, stops the torrent (event stopped); then adds a magnet link (left unknown),
# stops it, and shuts the daemon down.
set -euo pipefail
port=$1
work=$(mktemp -d /tmp/fjord-tr-capture-XXXXXX)
trap 'kill "${pid:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/src" "$work/config" "$work/dl"
/usr/bin/python3 -c 'import sys; sys.stdout.buffer.write(bytes(i % 251 for i in range(100000)))' >"$work/src/capture.bin"
transmission-create -o "$work/capture.torrent" -t "udp://127.0.0.1:$port/announce" -s 16 "$work/src/capture.bin" >/dev/null
rpc=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
peer=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$work/config/settings.json" <<JSON
{
  "dht-enabled": false, "lpd-enabled": false, "pex-enabled": false, "utp-enabled": false,
  "port-forwarding-enabled": false, "peer-port": $peer, "peer-port-random-on-start": false,
  "bind-address-ipv4": "127.0.0.1", "bind-address-ipv6": "::1",
  "rpc-enabled": true, "rpc-bind-address": "127.0.0.1", "rpc-port": $rpc,
  "rpc-authentication-required": false, "rpc-whitelist-enabled": false,
  "rpc-host-whitelist-enabled": false, "download-dir": "$work/dl",
  "incomplete-dir-enabled": false, "watch-dir-enabled": false, "blocklist-enabled": false,
  "message-level": 3
}
JSON
transmission-daemon -f -g "$work/config" -e "$work/daemon.log" &
pid=$!
remote() { transmission-remote "127.0.0.1:$rpc" "$@"; }
for _ in $(seq 50); do remote -l >/dev/null 2>&1 && break; sleep 0.2; done
echo "label file $(transmission-show "$work/capture.torrent" | sed -n 's/^ *Hash: *//p')"
remote -a "$work/capture.torrent"
wait_log() { # wait_log PATTERN SECONDS
  for _ in $(seq $(($2 * 5))); do
    remote -t 1 -it 2>/dev/null | grep -q "$1" && return 0
    sleep 0.2
  done
  echo "timed out waiting for: $1" >&2
  remote -t 1 -it >&2 || true
  return 1
}
wait_log "Got a list of" 20
wait_log "Tracker had 0 seeders" 30 || true   # the scrape: Transmission scrapes on its own
remote -t 1 --reannounce
sleep 3
remote -t 1 -it
remote -t 1 -S
sleep 2
# A magnet link (metadata unknown): Transmission announces left = i64::MAX.
magnet_hash=0123456789abcdef0123456789abcdef01234567
echo "label magnet $magnet_hash"
remote -a "magnet:?xt=urn:btih:$magnet_hash&tr=udp%3A%2F%2F127.0.0.1%3A$port%2Fannounce"
for _ in $(seq 100); do remote -t 2 -it 2>/dev/null | grep -q "Got a list of" && break; sleep 0.2; done
remote -t 2 -S
sleep 2
remote --exit || true
wait "$pid" || true
