//! Real client datagrams parsed field by field: the two announces quoted in
//! shared/protocol-notes.md (`testdata/`) and the captures in `testdata/captured/`.

mod checks;

use fjord_protocol::{
    AnnounceEvent, AnnounceOption, AnnounceRequest, ConnectionId, InfoHash, ParseLimits, PeerId,
    Request, ScrapeRequest, TransactionId,
};

const URL_OPTION: &[u8] = b"\x02\x12/announce?auth=abc";

fn hex20(s: &str) -> [u8; 20] {
    assert_eq!(s.len(), 40);
    let mut out = [0u8; 20];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

fn peer_id(s: &str) -> PeerId {
    PeerId(s.as_bytes().try_into().unwrap())
}

fn announce(bytes: &[u8]) -> AnnounceRequest<'_> {
    // Every golden datagram also passes the fuzz invariants and round-trips exactly.
    checks::parse_request(bytes);
    checks::roundtrip(bytes);
    match Request::parse(bytes, &ParseLimits::default()) {
        Ok(Request::Announce(announce)) => announce,
        other => panic!("not an announce: {other:?}"),
    }
}

fn scrape(bytes: &[u8]) -> ScrapeRequest<'_> {
    checks::parse_request(bytes);
    checks::roundtrip(bytes);
    match Request::parse(bytes, &ParseLimits::default()) {
        Ok(Request::Scrape(scrape)) => scrape,
        other => panic!("not a scrape: {other:?}"),
    }
}

fn connect_tid(bytes: &[u8]) -> TransactionId {
    checks::parse_request(bytes);
    checks::roundtrip(bytes);
    match Request::parse(bytes, &ParseLimits::default()) {
        Ok(Request::Connect(connect)) => connect.transaction_id,
        other => panic!("not a connect: {other:?}"),
    }
}

#[test]
fn libtorrent_announce_from_the_notes() {
    let bytes = include_bytes!("../testdata/libtorrent-announce-118.bin");
    assert_eq!(bytes.len(), 118);
    let a = announce(bytes);
    assert_eq!(a.connection_id, ConnectionId(0x1122_3344_5566_7788));
    assert_eq!(a.transaction_id, TransactionId(0xd5cb_81df));
    assert_eq!(
        a.info_hash,
        InfoHash(hex20("0207e3a41bfaeefbec6dbd23232c1247bcc0d61e"))
    );
    assert_eq!(a.peer_id, peer_id("-LT2080-IFHTjbbnqKnV"));
    assert_eq!(a.downloaded, 0);
    assert_eq!(a.left, 100_000);
    assert_eq!(a.uploaded, 0);
    assert_eq!(a.event, AnnounceEvent::Started);
    assert_eq!(a.ip_address, 0);
    assert_eq!(a.key, 0xc229_f5c9);
    assert_eq!(a.num_want, 200);
    assert_eq!(a.port, 6881);
    assert_eq!(a.options.as_bytes(), URL_OPTION);
    assert!(!a.options.is_malformed());
    let options: Vec<_> = a.options.iter().collect();
    assert_eq!(
        options,
        [Ok(AnnounceOption::UrlData(b"/announce?auth=abc"))]
    );
    assert!(a.options.url_data().eq([&b"/announce?auth=abc"[..]]));
}

#[test]
fn transmission_announce_from_the_notes() {
    let bytes = include_bytes!("../testdata/transmission-announce-98.bin");
    assert_eq!(bytes.len(), 98);
    let a = announce(bytes);
    assert_eq!(a.connection_id, ConnectionId(0x1122_3344_5566_7788));
    assert_eq!(a.transaction_id, TransactionId(0x8cb7_4da8));
    assert_eq!(
        a.info_hash,
        InfoHash(hex20("92274843de3154429d2ee14902f1c64ea6bb8de1"))
    );
    assert_eq!(a.peer_id, peer_id("-TR3000-ttxd4s4cypsd"));
    assert_eq!(a.downloaded, 0);
    assert_eq!(a.left, 100_000);
    assert_eq!(a.uploaded, 0);
    assert_eq!(a.event, AnnounceEvent::Started);
    assert_eq!(a.ip_address, 0);
    assert_eq!(a.key, 0x7c60_222c);
    assert_eq!(a.num_want, 80);
    assert_eq!(a.port, 51413);
    assert!(a.options.as_bytes().is_empty());
    assert_eq!(a.options.iter().count(), 0);
    assert!(!a.options.is_malformed());
}

/// The decoded fields of one captured announce (from testdata/captured/README.md, checked
/// against the bytes).
struct Expected {
    transaction_id: u32,
    info_hash: &'static str,
    peer_id: &'static str,
    left: i64,
    event: AnnounceEvent,
    key: u32,
    num_want: i32,
    port: u16,
    options: &'static [u8],
}

fn check_captured(bytes: &[u8], e: Expected) {
    let a = announce(bytes);
    assert_eq!(a.connection_id, ConnectionId(0x1122_3344_5566_7788));
    assert_eq!(a.transaction_id, TransactionId(e.transaction_id));
    assert_eq!(a.info_hash, InfoHash(hex20(e.info_hash)));
    assert_eq!(a.peer_id, peer_id(e.peer_id));
    assert_eq!(a.downloaded, 0);
    assert_eq!(a.left, e.left);
    assert_eq!(a.uploaded, 0);
    assert_eq!(a.event, e.event);
    assert_eq!(a.ip_address, 0);
    assert_eq!(a.key, e.key);
    assert_eq!(a.num_want, e.num_want);
    assert_eq!(a.port, e.port);
    assert_eq!(a.options.as_bytes(), e.options);
    assert!(!a.options.is_malformed());
    let url: Vec<u8> = a.options.url_data().flatten().copied().collect();
    if e.options.is_empty() {
        assert!(url.is_empty());
    } else {
        assert_eq!(url, b"/announce?auth=abc");
    }
}

const LT_HASH: &str = "3ade61ba7af6943d8ff2d4676c85d80c91e9d430";
const LT_PEER: &str = "-LT2080-DqkDRU1X8*BV";
const LT_HYBRID_V1: &str = "e2b7d67e24e313af2f6b9e27ab402ee600656b1b";
const LT_HYBRID_V2: &str = "52128f90699926cce740a286c7f503a114e2b857";
const LT_HYBRID_PEER: &str = "-LT2080-m8w-KYz!bp6L";
const TR_HASH: &str = "021daa5b99e1f4e7c6fc44002575eb4913cde95a";
const TR_PEER: &str = "-TR3000-c82woo5qcc4j";
const TR_MAGNET_HASH: &str = "0123456789abcdef0123456789abcdef01234567";
const TR_MAGNET_PEER: &str = "-TR3000-0b1x1vs344bh";

macro_rules! captured {
    ($name:literal) => {
        include_bytes!(concat!("../testdata/captured/", $name, ".bin"))
    };
}

#[test]
fn captured_connects() {
    assert_eq!(
        connect_tid(captured!("libtorrent-2.0.8-connect")),
        TransactionId(0x4e40_9397)
    );
    assert_eq!(
        connect_tid(captured!("transmission-3.00-connect")),
        TransactionId(0x6652_5392)
    );
}

#[test]
fn captured_scrapes() {
    for (bytes, tid, hash) in [
        (captured!("libtorrent-2.0.8-scrape"), 0x5632_9bb1, LT_HASH),
        (captured!("transmission-3.00-scrape"), 0x5ac2_4f30, TR_HASH),
    ] {
        let s = scrape(bytes);
        assert_eq!(s.connection_id, ConnectionId(0x1122_3344_5566_7788));
        assert_eq!(s.transaction_id, TransactionId(tid));
        assert_eq!(s.info_hashes, [hex20(hash)]);
        assert!(!s.truncated);
    }
}

#[test]
fn captured_libtorrent_announces() {
    let lt = |transaction_id, event, num_want| Expected {
        transaction_id,
        info_hash: LT_HASH,
        peer_id: LT_PEER,
        left: 100_000,
        event,
        key: 0xf531_fb88,
        num_want,
        port: 38689,
        options: URL_OPTION,
    };
    check_captured(
        captured!("libtorrent-2.0.8-announce-started"),
        lt(0x983d_e362, AnnounceEvent::Started, 200),
    );
    check_captured(
        captured!("libtorrent-2.0.8-announce-none"),
        lt(0x6388_1565, AnnounceEvent::None, 200),
    );
    check_captured(
        captured!("libtorrent-2.0.8-announce-stopped"),
        lt(0xc31c_db41, AnnounceEvent::Stopped, 0),
    );
}

#[test]
fn captured_libtorrent_hybrid_announces_once_per_hash() {
    let hybrid = |transaction_id, info_hash, event, num_want| Expected {
        transaction_id,
        info_hash,
        peer_id: LT_HYBRID_PEER,
        left: 0,
        event,
        key: 0xf373_2304,
        num_want,
        port: 38689,
        options: URL_OPTION,
    };
    check_captured(
        captured!("libtorrent-2.0.8-hybrid-v1-announce-started"),
        hybrid(0x0d04_f6e1, LT_HYBRID_V1, AnnounceEvent::Started, 200),
    );
    check_captured(
        captured!("libtorrent-2.0.8-hybrid-v2-announce-started"),
        hybrid(0x9b9a_1fee, LT_HYBRID_V2, AnnounceEvent::Started, 200),
    );
    check_captured(
        captured!("libtorrent-2.0.8-hybrid-v1-announce-stopped"),
        hybrid(0xb88e_3eb4, LT_HYBRID_V1, AnnounceEvent::Stopped, 0),
    );
    check_captured(
        captured!("libtorrent-2.0.8-hybrid-v2-announce-stopped"),
        hybrid(0xbc02_1daa, LT_HYBRID_V2, AnnounceEvent::Stopped, 0),
    );
}

#[test]
fn captured_transmission_announces() {
    let tr = |transaction_id, info_hash, peer_id, left, event, num_want| Expected {
        transaction_id,
        info_hash,
        peer_id,
        left,
        event,
        key: 0x06e0_fda4,
        num_want,
        port: 45949,
        options: b"",
    };
    check_captured(
        captured!("transmission-3.00-announce-started"),
        tr(
            0x7603_4fca,
            TR_HASH,
            TR_PEER,
            100_000,
            AnnounceEvent::Started,
            80,
        ),
    );
    check_captured(
        captured!("transmission-3.00-announce-stopped"),
        tr(
            0xf0fe_4047,
            TR_HASH,
            TR_PEER,
            100_000,
            AnnounceEvent::Stopped,
            0,
        ),
    );
    // A magnet link without metadata: Transmission sends left = i64::MAX.
    check_captured(
        captured!("transmission-3.00-magnet-announce-started"),
        tr(
            0xbbdb_a2b5,
            TR_MAGNET_HASH,
            TR_MAGNET_PEER,
            i64::MAX,
            AnnounceEvent::Started,
            80,
        ),
    );
    check_captured(
        captured!("transmission-3.00-magnet-announce-stopped"),
        tr(
            0x4f14_4230,
            TR_MAGNET_HASH,
            TR_MAGNET_PEER,
            i64::MAX,
            AnnounceEvent::Stopped,
            0,
        ),
    );
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The replies the logging tracker sent and both clients accepted (captured/README.md,
/// "Replies the clients accepted"), rebuilt with this crate's writers byte for byte.
#[test]
fn writers_reproduce_the_replies_real_clients_accepted() {
    use fjord_protocol::{
        AnnounceResponseHeader, ConnectResponse, IpFamily, Response, ScrapeStats,
        write_announce_response_v4, write_scrape_response,
    };
    let mut out = [0u8; 64];

    let tid = connect_tid(captured!("libtorrent-2.0.8-connect"));
    let n = ConnectResponse {
        transaction_id: tid,
        connection_id: ConnectionId(0x1122_3344_5566_7788),
    }
    .write(&mut out)
    .unwrap();
    assert_eq!(out[..n], hex("000000004e4093971122334455667788"));

    let a = announce(captured!("transmission-3.00-announce-started"));
    let header = AnnounceResponseHeader {
        transaction_id: a.transaction_id,
        interval: 1800,
        leechers: 0,
        seeders: 0,
    };
    let n = write_announce_response_v4(&mut out, &header, []).unwrap();
    assert_eq!(out[..n], hex("0000000176034fca000007080000000000000000"));
    assert!(Response::parse(&out[..n], IpFamily::V4).is_ok());

    let s = scrape(captured!("libtorrent-2.0.8-scrape"));
    let rows = s.info_hashes.iter().map(|_| ScrapeStats::default());
    let n = write_scrape_response(&mut out, s.transaction_id, rows).unwrap();
    assert_eq!(out[..n], hex("0000000256329bb1000000000000000000000000"));
    assert!(Response::parse(&out[..n], IpFamily::V4).is_ok());
}
