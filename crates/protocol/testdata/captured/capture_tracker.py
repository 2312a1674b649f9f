#!/usr/bin/env python3
"""A tiny logging BEP 15 UDP tracker (Python standard library only).

It answers just enough to keep real clients talking, and saves every datagram
it receives, byte for byte, so captures can become golden tests for the codec.

  connect  -> 16-byte response with the fixed connection id 0x1122334455667788
  announce -> 20-byte response (interval 1800, 0 leechers, 0 seeders, no peers),
              or with --peers, those peers appended (6 or 18 bytes each)
  scrape   -> 8 + 12 n bytes, one row of zeros (seeders, completed, leechers) per hash
  anything else is logged and not answered.

Usage:
  capture_tracker.py --port 6969 --out DIR [--bind 127.0.0.1|::1] [--seconds 120]
                     [--peers 127.0.0.1:6881,...] [--swarm]

--swarm turns it into a minimal real tracker (announcers are remembered and handed
out as peers, scrape counts are real), used to debug the real-client tests.

Files are written to DIR as NNNN-<action>[-<event>].bin in arrival order, and one
JSON line per datagram (decoded fields) is printed on stdout and appended to
DIR/log.jsonl.  Only binds to a loopback address.
"""

import argparse
import ipaddress
import json
import os
import socket
import struct
import sys
import time

PROTOCOL_ID = 0x41727101980
CONNECTION_ID = 0x1122334455667788
EVENTS = {0: "none", 1: "completed", 2: "started", 3: "stopped"}


def decode_options(opts):
    """Decode BEP 41 options into a list of (type, bytes)."""
    out = []
    i = 0
    while i < len(opts):
        t = opts[i]
        if t == 0:
            out.append(("end", b""))
            break
        if t == 1:
            out.append(("nop", b""))
            i += 1
            continue
        if i + 1 >= len(opts):
            out.append(("truncated", opts[i:]))
            break
        n = opts[i + 1]
        data = opts[i + 2 : i + 2 + n]
        out.append(("url" if t == 2 else "type%d" % t, data))
        i += 2 + n
    return out


def decode(data):
    """Decode a client datagram into a dict of fields (best effort)."""
    d = {"len": len(data)}
    if len(data) < 16:
        d["kind"] = "short"
        return d
    conn, action, tid = struct.unpack_from(">QII", data, 0)
    d.update(connection_id="%016x" % conn, action=action, transaction_id="%08x" % tid)
    if action == 0:
        d["kind"] = "connect"
        d["protocol_id_ok"] = conn == PROTOCOL_ID
    elif action == 1 and len(data) >= 98:
        d["kind"] = "announce"
        (downloaded, left, uploaded, event, ip, key, num_want, port) = struct.unpack_from(
            ">qqqIIIiH", data, 56
        )
        d.update(
            info_hash=data[16:36].hex(),
            peer_id=data[36:56].hex(),
            peer_id_text=data[36:56].decode("latin-1"),
            downloaded=downloaded,
            left=left,
            uploaded=uploaded,
            event=EVENTS.get(event, str(event)),
            ip="%08x" % ip,
            key="%08x" % key,
            num_want=num_want,
            port=port,
            options_len=len(data) - 98,
            options=[(t, v.decode("latin-1")) for t, v in decode_options(data[98:])],
        )
    elif action == 2:
        d["kind"] = "scrape"
        hashes = data[16:]
        d["info_hashes"] = [hashes[i : i + 20].hex() for i in range(0, len(hashes) - 19, 20)]
        d["trailing"] = len(hashes) % 20
    else:
        d["kind"] = "other"
    return d


def pack_addr(host):
    """4 bytes for IPv4, 16 for IPv6: the entry size follows the family of the packet."""
    return socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)


class Swarms:
    """--swarm mode: a minimal in-memory peer store (one family, no expiry), to test client harnesses."""

    def __init__(self):
        self.swarms = {}  # info_hash -> {(ip, port): is_seeder}
        self.completed = {}

    def announce(self, d, addr):
        swarm = self.swarms.setdefault(d["info_hash"], {})
        me = (addr[0], d["port"])
        if d["event"] == "stopped":
            swarm.pop(me, None)
        else:
            swarm[me] = d["left"] == 0
        if d["event"] == "completed":
            self.completed[d["info_hash"]] = self.completed.get(d["info_hash"], 0) + 1
        want = 50 if d["num_want"] < 0 else min(d["num_want"], 50)
        others = [p for p in swarm if p != me][:want]
        seeders = sum(swarm.values())
        body = b"".join(pack_addr(h) + struct.pack(">H", p) for h, p in others)
        return struct.pack(">III", 1800, len(swarm) - seeders, seeders) + body

    def scrape(self, info_hash):
        swarm = self.swarms.get(info_hash, {})
        seeders = sum(swarm.values())
        return struct.pack(">III", seeders, self.completed.get(info_hash, 0), len(swarm) - seeders)


def reply(data, d, peers, swarms=None, addr=None):
    kind = d.get("kind")
    tid = data[12:16] if len(data) >= 16 else b""
    if kind == "connect" and d["protocol_id_ok"]:
        return struct.pack(">I", 0) + tid + struct.pack(">Q", CONNECTION_ID)
    if kind == "announce" and swarms is not None:
        return struct.pack(">I", 1) + tid + swarms.announce(d, addr)
    if kind == "scrape" and swarms is not None:
        rows = b"".join(swarms.scrape(h) for h in d["info_hashes"])
        return struct.pack(">I", 2) + tid + rows
    if kind == "announce":
        body = b"".join(
            pack_addr(h) + struct.pack(">H", p) for h, p in peers if p != d["port"]
        )
        return struct.pack(">I", 1) + tid + struct.pack(">III", 1800, 0, 0) + body
    if kind == "scrape":
        return struct.pack(">I", 2) + tid + b"\0" * (12 * len(d["info_hashes"]))
    return None


def parse_peers(s):
    peers = []
    for item in filter(None, (s or "").split(",")):
        host, port = item.rsplit(":", 1)
        host = host.strip("[]")
        peers.append((host, int(port)))
    return peers


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seconds", type=float, default=120.0, help="exit after this long")
    ap.add_argument("--peers", default="", help="peers to hand out, host:port,... (same family as --bind)")
    ap.add_argument(
        "--swarm", action="store_true", help="remember announcers and hand them out as peers"
    )
    args = ap.parse_args()
    if not ipaddress.ip_address(args.bind).is_loopback:
        sys.exit("refusing to bind a non-loopback address")
    peers = parse_peers(args.peers)
    swarms = Swarms() if args.swarm else None
    os.makedirs(args.out, exist_ok=True)
    family = socket.AF_INET6 if ":" in args.bind else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((args.bind, args.port))
    print(json.dumps({"listening": sock.getsockname()}), flush=True)
    deadline = time.monotonic() + args.seconds
    n = 0
    log = open(os.path.join(args.out, "log.jsonl"), "a")
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            data, addr = sock.recvfrom(65536)
        except socket.timeout:
            break
        d = decode(data)
        name = "%04d-%s" % (n, d.get("kind"))
        if d.get("kind") == "announce":
            name += "-" + d["event"]
        n += 1
        with open(os.path.join(args.out, name + ".bin"), "wb") as f:
            f.write(data)
        d["file"] = name + ".bin"
        d["from"] = ("[%s]:%d" if ":" in addr[0] else "%s:%d") % addr[:2]
        d["time"] = time.time()
        line = json.dumps(d)
        print(line, flush=True)
        log.write(line + "\n")
        log.flush()
        r = reply(data, d, peers, swarms, addr)
        if r is not None:
            sock.sendto(r, addr)


if __name__ == "__main__":
    main()
