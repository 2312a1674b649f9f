#!/usr/bin/env python3
"""Writes the committed seed corpus under fuzz/corpus/<target>/ (run from anywhere).

Seeds: the golden announces from crates/protocol/testdata/, a few real captures, and crafted
packets for each edge case in shared/protocol-notes.md. Re-running rewrites the same files.
"""
import pathlib
import shutil
import struct

FUZZ = pathlib.Path(__file__).resolve().parent
TESTDATA = FUZZ.parent / "crates" / "protocol" / "testdata"
PROTOCOL_ID = 0x41727101980
CID = 0x1122334455667788


def header(first, action, tid):
    return struct.pack(">QII", first, action, tid)


def announce(options=b"", left=100000, event=2, num_want=-1, port=6881):
    body = bytes([0xAB] * 20) + b"-XX0000-abcdefghijkl"
    body += struct.pack(">qqqIIIiH", 0, left, 0, event, 0, 0x12345678, num_want, port)
    return header(CID, 1, 42) + body + options


def scrape(n, extra=0):
    return header(CID, 2, 9) + b"".join(bytes([i]) * 20 for i in range(n)) + b"\xee" * extra


requests = {
    "connect": header(PROTOCOL_ID, 0, 1),
    "connect-trailing": header(PROTOCOL_ID, 0, 1) + b"trailing",
    "short-15": header(PROTOCOL_ID, 0, 1)[:15],
    "bad-protocol-id": header(PROTOCOL_ID + 1, 0, 1),
    "unknown-action": header(CID, 7, 1),
    "client-error": header(CID, 3, 1) + b"error",
    "announce-97": announce()[:97],
    "announce-98": announce(),
    "announce-left-max": announce(left=2**63 - 1, event=9),
    "announce-left-negative": announce(left=-1, event=3, num_want=0, port=0),
    "announce-options-bad-length": announce(b"\x02\xc8abc"),
    "announce-options-several": announce(b"\x01\x02\x09/announce\x02\x05?a=bc\x05\x02xy\x00junk"),
    "announce-options-missing-length": announce(b"\x02\x01a\x07"),
    "scrape-1": scrape(1),
    "scrape-74": scrape(74),
    "scrape-75": scrape(75),
    "scrape-0": scrape(0),
    "scrape-partial": scrape(2, 7),
    "scrape-duplicates": header(CID, 2, 9) + bytes([1]) * 20 + bytes([2]) * 20 + bytes([1]) * 20,
}



v4_peers = [bytes([192, 0, 2, i, 0x1A, 0xE1]) for i in range(1, 4)]
v6_peers = [bytes([0x20, 0x01, 0x0D, 0xB8] + [0] * 11 + [i, 0xC8, 0xD5]) for i in range(1, 3)]
responses = {
    "connect": struct.pack(">IIQ", 0, 1, CID),
    "connect-17": struct.pack(">IIQ", 0, 1, CID) + b"\0",
    "short-7": struct.pack(">II", 0, 1)[:7],
    "announce-empty": struct.pack(">IIIII", 1, 42, 1800, 0, 0),
    "announce-v4-3": struct.pack(">IIIII", 1, 42, 1800, 3, 1) + b"".join(v4_peers),
    "announce-v6-2": struct.pack(">IIIII", 1, 42, 1800, 3, 1) + b"".join(v6_peers),
    "announce-bad-length": struct.pack(">IIIII", 1, 42, 1800, 3, 1) + b"\x01\x02\x03\x04\x05",
    "scrape-2": struct.pack(">II", 2, 9) + struct.pack(">III", 1, 2, 3) + struct.pack(">III", 0, 0, 0),
    "scrape-bad-length": struct.pack(">II", 2, 9) + b"\x00" * 13,
    "error": struct.pack(">II", 3, 5) + b"announce too short",
    "error-empty": struct.pack(">II", 3, 5),
    "unknown-action": struct.pack(">II", 9, 5) + b"\x00" * 8,
}

GOLDEN = ["libtorrent-announce-118.bin", "transmission-announce-98.bin"]
CAPTURED = [
    "libtorrent-2.0.8-connect.bin",
    "libtorrent-2.0.8-scrape.bin",
    "libtorrent-2.0.8-hybrid-v2-announce-stopped.bin",
    "transmission-3.00-magnet-announce-started.bin",
]


def write(target, name, data):
    path = FUZZ / "corpus" / target / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def main():
    for target in ("parse_request", "parse_response", "roundtrip"):
        shutil.rmtree(FUZZ / "corpus" / target, ignore_errors=True)
    for name in GOLDEN:
        data = (TESTDATA / name).read_bytes()
        write("parse_request", "golden-" + name, data)
        write("roundtrip", "golden-" + name, data)
    for name in CAPTURED:
        write("parse_request", "captured-" + name, (TESTDATA / "captured" / name).read_bytes())
    for name, data in requests.items():
        write("parse_request", "request-" + name + ".bin", data)
    for name, data in responses.items():
        write("parse_response", "response-" + name + ".bin", data)
    for name in ("connect-trailing", "announce-options-several", "announce-options-bad-length",
                 "scrape-75", "scrape-duplicates"):
        write("roundtrip", "request-" + name + ".bin", requests[name])
    for name in ("connect", "announce-v4-3", "announce-v6-2", "scrape-2", "error"):
        write("roundtrip", "response-" + name + ".bin", responses[name])


if __name__ == "__main__":
    main()
