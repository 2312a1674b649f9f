#!/usr/bin/python3
"""Drive python3-libtorrent against the logging tracker (capture_tracker.py).

Run with Debian's /usr/bin/python3 (the libtorrent module is not in other Pythons).
Adds a small generated v1 torrent (100000 bytes, no data on disk, so left = 100000)
whose tracker is udp://127.0.0.1:PORT/announce?auth=abc, waits for the `started`
announce, then forces a re-announce (event none), a scrape, and removes the torrent
(event stopped).  Then adds a hybrid v1+v2 torrent whose data is on disk (seeding,
left = 0; one announce per hash) and removes it.  Network: loopback only, no DHT/LSD/UPnP/NAT-PMP.
"""

import os
import shutil
import sys
import tempfile
import time

import libtorrent as lt

port = int(sys.argv[1])
tracker = "udp://127.0.0.1:%d/announce?auth=abc" % port
work = tempfile.mkdtemp(prefix="fjord-lt-capture-")

# A deterministic 100000-byte file, used only to build the torrent's metadata.
src = os.path.join(work, "src")
os.makedirs(src)
with open(os.path.join(src, "capture.bin"), "wb") as f:
    f.write(bytes(i % 251 for i in range(100000)))
fs = lt.file_storage()
lt.add_files(fs, os.path.join(src, "capture.bin"))
ct = lt.create_torrent(fs, 16384, flags=lt.create_torrent.v1_only)
ct.add_tracker(tracker)
lt.set_piece_hashes(ct, src)
ti = lt.torrent_info(ct.generate())
print("label leecher", ti.info_hashes().v1, flush=True)

ses = lt.session(
    {
        "listen_interfaces": "127.0.0.1:0",
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "alert_mask": lt.alert_category.all,
        "peer_fingerprint": lt.generate_fingerprint("LT", 2, 0, 8, 0),
    }
)


def wait_for(pred, what, seconds=15):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ses.wait_for_alert(200)
        for a in ses.pop_alerts():
            print("  alert:", type(a).__name__, a.message(), flush=True)
            if pred(a):
                return a
    sys.exit("timed out waiting for " + what)


h = ses.add_torrent({"ti": ti, "save_path": os.path.join(work, "dl")})
wait_for(lambda a: isinstance(a, lt.tracker_reply_alert), "started announce reply")
h.force_reannounce(0, -1, lt.reannounce_flags_t.ignore_min_interval)
wait_for(lambda a: isinstance(a, lt.tracker_reply_alert), "re-announce reply")
h.scrape_tracker()
wait_for(
    lambda a: isinstance(a, (lt.scrape_reply_alert, lt.scrape_failed_alert)), "scrape reply"
)
ses.remove_torrent(h)
# The stopped announce is sent while the torrent is removed; give it a moment to leave.
wait_for(lambda a: isinstance(a, lt.torrent_removed_alert), "torrent removed")
time.sleep(2)

# Phase 2: a hybrid (v1 + v2) torrent whose data is on disk, so libtorrent seeds
# (left = 0) and announces twice: once with the v1 hash, once with the v2 hash
# truncated to 20 bytes (BEP 52).
fs2 = lt.file_storage()
lt.add_files(fs2, os.path.join(src, "capture.bin"))
ct2 = lt.create_torrent(fs2, 16384)
ct2.add_tracker(tracker)
lt.set_piece_hashes(ct2, src)
ti2 = lt.torrent_info(ct2.generate())
print("label hybrid-v1", ti2.info_hashes().v1, flush=True)
print("label hybrid-v2", str(ti2.info_hashes().v2)[:40], flush=True)
h2 = ses.add_torrent({"ti": ti2, "save_path": src})
replies = []
wait_for(
    lambda a: isinstance(a, lt.tracker_reply_alert) and replies.append(a) is None and len(replies) == 2,
    "two announce replies for the hybrid torrent",
)
ses.remove_torrent(h2)
wait_for(lambda a: isinstance(a, lt.torrent_removed_alert), "hybrid torrent removed")
time.sleep(2)
del ses
shutil.rmtree(work, ignore_errors=True)
print("done", flush=True)
