#!/usr/bin/python3
"""libtorrent seeder + leecher whose only peer source is one UDP tracker.

Usage: /usr/bin/python3 lt_swarm.py TRACKER_HOST:PORT [SECONDS] [--hold]
       (TRACKER_HOST:PORT is 127.0.0.1:P, or [::1]:P to run the whole swarm over IPv6)

With --hold, both sessions stay in the swarm after the "OK ..." line (the line "HOLDING" follows)
until a line or end of file arrives on stdin, so that a test can read the tracker's statistics
while the swarm still exists.

Run with Debian's /usr/bin/python3 (python3-libtorrent). Creates a few hundred KB of random
data and a v1 torrent announcing only to udp://TRACKER_HOST:PORT/announce, starts a seeding
session and, once the seeder has an announce reply, a leeching session. Both sessions listen on
the tracker's loopback address (127.0.0.1 or ::1, distinct ephemeral ports) with DHT, LSD, PEX
(no default plugins, disable_pex), UPnP and NAT-PMP off, so the leecher can only learn of the
seeder through the tracker (checked: every peer either came from the tracker or connected in).
Succeeds (exit 0, last line "OK ...") when the leecher has the complete file, its bytes equal
the seeder's, and a scrape of the tracker through the leecher answers.

The payload is read only after libtorrent has written it: `is_seeding` turns true when every
piece passed its hash check, which libtorrent 2 may compute from its in-memory store buffer while
the write jobs are still queued. So the script waits for every piece (`have_piece`), then calls
`flush_cache()`, which releases the torrent's files with a fence job that runs after every
outstanding disk job of that torrent, and reads the file after the matching
`cache_flushed_alert`. Otherwise exits 1 with
a "FAIL: ..." line and the alerts that matter. Everything lives in a temporary directory that
is removed on exit.
"""

import hashlib
import os
import shutil
import sys
import tempfile
import time

import libtorrent as lt

SIZE = 384 * 1024
PIECE = 16 * 1024


def log(*args):
    print(*args, flush=True)


def fail(msg, events):
    log("FAIL: " + msg)
    log("--- relevant alerts (last 40) ---")
    for e in events[-40:]:
        log("  " + e)
    sys.exit(1)


def make_session(name, host):
    settings = {
        "listen_interfaces": ("[%s]:0" if ":" in host else "%s:0") % host,
        "outgoing_interfaces": host,
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        # Both peers are 127.0.0.1: allow it, and never drop local peers.
        "allow_multiple_connections_per_ip": True,
        "enable_incoming_utp": False,
        "enable_outgoing_utp": False,
        "alert_mask": lt.alert_category.error
        | lt.alert_category.status
        | lt.alert_category.tracker
        | lt.alert_category.connect
        | lt.alert_category.peer
        | lt.alert_category.storage,
        "user_agent": "fjord-real-clients-" + name,
    }
    # flags=0: no default plugins, i.e. no ut_pex (PEX) and no ut_metadata.
    return lt.session(settings, 0)


def main():
    args = [a for a in sys.argv[1:] if a != "--hold"]
    hold = "--hold" in sys.argv[1:]
    tracker_addr = args[0]
    seconds = float(args[1]) if len(args) > 1 else 60.0
    deadline = time.monotonic() + seconds
    tracker = "udp://%s/announce" % tracker_addr
    work = tempfile.mkdtemp(prefix="fjord-lt-swarm-")
    events = []
    try:
        sessions = run(tracker, work, deadline, events)
        if hold:
            log("HOLDING")
            sys.stdin.readline()
        del sessions
    finally:
        shutil.rmtree(work, ignore_errors=True)


def pump(sessions, events, wait_ms=100):
    """Collect alerts from all sessions; returns [(name, alert)]."""
    got = []
    sessions[0][1].wait_for_alert(wait_ms)
    for name, ses in sessions:
        for a in ses.pop_alerts():
            got.append((name, a))
            events.append("%s %s: %s" % (name, type(a).__name__, a.message()))
    return got


def wait_written(handle, name, sessions, events, deadline):
    """Returns once every piece of `handle` is verified and on disk (see the module doc)."""
    num_pieces = handle.torrent_file().num_pieces()
    while not all(handle.have_piece(i) for i in range(num_pieces)):
        if time.monotonic() > deadline:
            fail("%s: not every piece verified before the deadline" % name, events)
        pump(sessions, events)
    handle.flush_cache()
    while True:
        if time.monotonic() > deadline:
            fail("%s: no cache_flushed_alert after flush_cache()" % name, events)
        for who, a in pump(sessions, events):
            if who == name and isinstance(a, lt.cache_flushed_alert):
                return


def run(tracker, work, deadline, events):
    seed_dir = os.path.join(work, "seed")
    leech_dir = os.path.join(work, "leech")
    os.makedirs(seed_dir)
    os.makedirs(leech_dir)
    data = os.urandom(SIZE)
    with open(os.path.join(seed_dir, "payload.bin"), "wb") as f:
        f.write(data)
    fs = lt.file_storage()
    lt.add_files(fs, os.path.join(seed_dir, "payload.bin"))
    ct = lt.create_torrent(fs, PIECE, flags=lt.create_torrent.v1_only)
    ct.add_tracker(tracker)
    lt.set_piece_hashes(ct, seed_dir)
    torrent = lt.bencode(ct.generate())
    info_hash = str(lt.torrent_info(torrent).info_hashes().v1)
    log("torrent %s: %d bytes, %d pieces, tracker %s" % (info_hash, SIZE, SIZE // PIECE, tracker))

    flags = lt.torrent_flags.disable_dht | lt.torrent_flags.disable_lsd | lt.torrent_flags.disable_pex
    host = "::1" if tracker.startswith("udp://[") else "127.0.0.1"
    seeder = make_session("seeder", host)
    leecher = make_session("leecher", host)
    sessions = [("seeder", seeder), ("leecher", leecher)]
    log("seeder listens on %s port %d, leecher on port %d" % (host, seeder.listen_port(), leecher.listen_port()))

    seed_h = seeder.add_torrent(
        {"ti": lt.torrent_info(torrent), "save_path": seed_dir, "flags": flags}
    )
    # 1. The seeder checks its data and announces (left = 0); wait for the tracker's reply.
    while True:
        if time.monotonic() > deadline:
            fail("the seeder got no announce reply from %s" % tracker, events)
        for name, a in pump(sessions, events):
            if isinstance(a, lt.tracker_error_alert):
                fail("seeder announce failed: " + a.message(), events)
            if isinstance(a, lt.tracker_reply_alert):
                break
        else:
            continue
        break
    if not seed_h.status().is_seeding:
        fail("the seeder is not seeding after its announce (state %s)" % seed_h.status().state, events)
    log("seeder announced; starting the leecher")

    # 2. The leecher announces (started, left = SIZE); the tracker must hand out the seeder.
    leech_h = leecher.add_torrent(
        {"ti": lt.torrent_info(torrent), "save_path": leech_dir, "flags": flags}
    )
    peers_from_tracker = None
    sources = {}  # "who<-ip:port" -> union of peer_info.source bits, both sessions

    def sample_sources():
        for who, h in (("leecher", leech_h), ("seeder", seed_h)):
            for p in h.get_peer_info():
                key = "%s<-%s:%d" % (who, p.ip[0], p.ip[1])
                sources[key] = sources.get(key, 0) | int(p.source)

    while not leech_h.status().is_seeding:
        sample_sources()
        if time.monotonic() > deadline:
            st = leech_h.status()
            fail(
                "leecher incomplete: %.0f%% after the deadline, peers from tracker: %s, connected peers: %d"
                % (st.progress * 100, peers_from_tracker, st.num_peers),
                events,
            )
        for name, a in pump(sessions, events):
            if name == "leecher" and isinstance(a, lt.tracker_reply_alert):
                peers_from_tracker = a.num_peers
                log("leecher announce reply: %d peers" % a.num_peers)
            if name == "leecher" and isinstance(a, lt.tracker_error_alert):
                fail("leecher announce failed: " + a.message(), events)
    log("leecher complete after %d peers from the tracker" % (peers_from_tracker or 0))
    sample_sources()
    # peer_source_flags_t: tracker 1, dht 2, pex 4, lsd 8, resume_data 16, incoming 32.
    names = {1: "tracker", 2: "dht", 4: "pex", 8: "lsd", 16: "resume_data", 32: "incoming"}
    allowed = 1 | 32
    log("peer sources: " + ", ".join(
        "%s [%s]" % (k, "|".join(n for b, n in names.items() if v & b)) for k, v in sources.items()))
    if any(v & ~allowed for v in sources.values()):
        fail("a peer came from somewhere other than the tracker: %s" % sources, events)
    if not any(v & 1 for v in sources.values()):
        fail("no peer came from the tracker: %s" % sources, events)

    # 3. Verify the content byte for byte, once libtorrent has written all of it.
    wait_written(leech_h, "leecher", sessions, events, deadline)
    with open(os.path.join(leech_dir, "payload.bin"), "rb") as f:
        got = f.read()
    if got != data:
        fail("downloaded data differs from the seeder's (%d vs %d bytes)" % (len(got), len(data)), events)
    log("content verified: sha1 %s" % hashlib.sha1(got).hexdigest())

    # 4. Scrape through the leecher (it now has sent `completed`).
    leech_h.scrape_tracker()
    while True:
        if time.monotonic() > deadline:
            fail("no scrape reply", events)
        for name, a in pump(sessions, events):
            if name == "leecher" and isinstance(a, lt.scrape_failed_alert):
                fail("scrape failed: " + a.message(), events)
            if name == "leecher" and isinstance(a, lt.scrape_reply_alert):
                log("scrape: %d seeders, %d leechers" % (a.complete, a.incomplete))
                log("OK leecher downloaded %d bytes via the tracker; scrape %d seeders %d leechers"
                    % (SIZE, a.complete, a.incomplete))
                return sessions


if __name__ == "__main__":
    main()
