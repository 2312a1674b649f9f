//! Bytes-in / bytes-out tests of [`RequestHandler::handle`]: every protocol behaviour without a
//! socket (quinn style).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::path::Path;
use std::sync::Arc;

use fjord_protocol::{
    AnnounceEvent, AnnounceOptions, AnnounceRequest, ConnectRequest, ConnectionId, InfoHash,
    PeerId, ScrapeRequest, TransactionId,
};

use crate::access_list::{AccessList, AccessListSource};
use crate::config::{AccessListMode, Config};
use crate::connection_id::ConnectionIdValidator;
use crate::counters::{Action, DropReason, ErrorReason, IpFamily, NotStoredReason};
use crate::fjord_store::PeerStore;
use crate::handler::MAX_REPLY;
use crate::handler::{ACCESS_DENIED_MESSAGE, HandlerSettings, RequestHandler, Shared};
use crate::worker::{Now, StoreClock};

const NOW: u32 = 1_800_000_000;
const KEY: [u8; 16] = [0x5a; 16];

fn handler_with(config: &Config, access: AccessList) -> RequestHandler {
    let store = Arc::new(PeerStore::new(config.store_config()));
    let shared = Arc::new(Shared {
        store,
        validator: ConnectionIdValidator::new(KEY, config.connection_id.grace_secs),
        access: Arc::new(AccessListSource::fixed(access)),
        settings: HandlerSettings::from_config(config),
        clock: StoreClock::new(),
    });
    RequestHandler::new(shared, 42)
}

/// The defaults without the rate limiter and store admission: the protocol tests send many
/// requests from one /24, which those would (rightly) meter. Both have tests of their own
/// below, with the defaults.
fn protocol_config() -> Config {
    let mut c = Config::default();
    c.limits.enabled = false;
    c.admission.enabled = false;
    c
}

fn handler() -> RequestHandler {
    handler_with(&protocol_config(), AccessList::off())
}

fn v4(a: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::from((a, port))
}

fn v6(s: &str, port: u16) -> SocketAddr {
    SocketAddr::V6(SocketAddrV6::new(s.parse().unwrap(), port, 0, 0))
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes(b[i..i + 4].try_into().unwrap())
}

fn call(h: &mut RequestHandler, src: SocketAddr, req: &[u8]) -> Option<Vec<u8>> {
    call_at(h, NOW, src, req)
}

fn call_at(h: &mut RequestHandler, now: u32, src: SocketAddr, req: &[u8]) -> Option<Vec<u8>> {
    let mut out = [0u8; MAX_REPLY];
    h.handle(Now::at(now), src, req, &mut out)
        .map(|n| out[..n].to_vec())
}

fn connect_bytes(tid: u32) -> Vec<u8> {
    let mut b = [0u8; 16];
    let n = ConnectRequest {
        transaction_id: TransactionId(tid),
    }
    .write(&mut b)
    .unwrap();
    b[..n].to_vec()
}

fn connect(h: &mut RequestHandler, src: SocketAddr) -> u64 {
    let r = call(h, src, &connect_bytes(99)).expect("connect answered");
    assert_eq!(r.len(), 16);
    u64::from_be_bytes(r[8..16].try_into().unwrap())
}

#[derive(Clone, Copy)]
struct Ann {
    id: u64,
    tid: u32,
    hash: [u8; 20],
    port: u16,
    num_want: i32,
    left: i64,
    event: AnnounceEvent,
    ip: u32,
}

impl Ann {
    fn new(id: u64, hash: u8) -> Self {
        Ann {
            id,
            tid: 7,
            hash: [hash; 20],
            port: 6881,
            num_want: -1,
            left: 100,
            event: AnnounceEvent::Started,
            ip: 0,
        }
    }
    fn bytes(&self) -> Vec<u8> {
        let req = AnnounceRequest {
            connection_id: ConnectionId(self.id),
            transaction_id: TransactionId(self.tid),
            info_hash: InfoHash(self.hash),
            peer_id: PeerId([b'p'; 20]),
            downloaded: 0,
            left: self.left,
            uploaded: 0,
            event: self.event,
            ip_address: self.ip,
            key: 1,
            num_want: self.num_want,
            port: self.port,
            options: AnnounceOptions::new(&[]),
        };
        let mut b = vec![0u8; 200];
        let n = req.write(&mut b).unwrap();
        b.truncate(n);
        b
    }
}

fn scrape_bytes(id: u64, tid: u32, hashes: &[[u8; 20]]) -> Vec<u8> {
    let req = ScrapeRequest {
        connection_id: ConnectionId(id),
        transaction_id: TransactionId(tid),
        info_hashes: hashes,
        truncated: false,
    };
    let mut b = vec![0u8; 16 + 20 * hashes.len()];
    let n = req.write(&mut b).unwrap();
    b.truncate(n);
    b
}

/// Announce from `src` (connecting first) and return the reply.
fn announce(h: &mut RequestHandler, src: SocketAddr, f: impl FnOnce(&mut Ann)) -> Vec<u8> {
    let id = connect(h, src);
    let mut a = Ann::new(id, 1);
    f(&mut a);
    call(h, src, &a.bytes()).expect("announce answered")
}

fn peers_v4(reply: &[u8]) -> Vec<SocketAddrV4> {
    assert_eq!(u32_at(reply, 0), 1);
    assert_eq!((reply.len() - 20) % 6, 0);
    reply[20..]
        .chunks(6)
        .map(|c| {
            SocketAddrV4::new(
                Ipv4Addr::new(c[0], c[1], c[2], c[3]),
                u16::from_be_bytes([c[4], c[5]]),
            )
        })
        .collect()
}

fn peers_v6(reply: &[u8]) -> Vec<SocketAddrV6> {
    assert_eq!(u32_at(reply, 0), 1);
    assert_eq!((reply.len() - 20) % 18, 0);
    reply[20..]
        .chunks(18)
        .map(|c| {
            let ip: [u8; 16] = c[..16].try_into().unwrap();
            SocketAddrV6::new(Ipv6Addr::from(ip), u16::from_be_bytes([c[16], c[17]]), 0, 0)
        })
        .collect()
}

fn list(mode: AccessListMode, hashes: &[u8]) -> AccessList {
    let text: String = hashes
        .iter()
        .map(|b| format!("{}\n", format!("{b:02x}").repeat(20)))
        .collect();
    AccessList::parse(mode, &text, Path::new("test")).unwrap()
}

#[test]
fn connect_gets_16_bytes_with_echoed_tid_and_a_valid_id() {
    let mut h = handler();
    let src = v4([192, 0, 2, 1], 5000);
    let r = call(&mut h, src, &connect_bytes(0xdead_beef)).unwrap();
    assert_eq!(r.len(), 16);
    assert_eq!(u32_at(&r, 0), 0);
    assert_eq!(u32_at(&r, 4), 0xdead_beef);
    let id = u64::from_be_bytes(r[8..16].try_into().unwrap());
    assert!(h.shared().validator.is_valid(id, src.ip(), NOW));
    // Trailing bytes after a connect are ignored; the reply stays 16 bytes.
    let mut long = connect_bytes(1);
    long.extend_from_slice(&[0; 50]);
    assert_eq!(call(&mut h, src, &long).unwrap().len(), 16);
    assert_eq!(h.counters.requests(Action::Connect, IpFamily::V4), 2);
    assert_eq!(h.counters.responses(Action::Connect, IpFamily::V4), 2);
}

#[test]
fn announce_with_forged_expired_other_ip_or_future_id_is_silent() {
    let mut h = handler();
    let src = v4([192, 0, 2, 1], 5000);
    let id = connect(&mut h, src);
    let good = Ann::new(id, 1);
    assert!(
        call(&mut h, src, &good.bytes()).is_some(),
        "control: valid id answered"
    );

    let forged = Ann { id: id ^ 1, ..good };
    assert_eq!(call(&mut h, src, &forged.bytes()), None);
    let random = Ann {
        id: 0x0123_4567_89ab_cdef,
        ..good
    };
    assert_eq!(call(&mut h, src, &random.bytes()), None);
    // Same IP, other port: accepted (ids are bound to the IP, not the port).
    assert!(call(&mut h, v4([192, 0, 2, 1], 6000), &good.bytes()).is_some());
    // Other IP: silent.
    assert_eq!(call(&mut h, v4([192, 0, 2, 2], 5000), &good.bytes()), None);
    // Expired: 120 s + 30 s grace.
    assert!(call_at(&mut h, NOW + 150, src, &good.bytes()).is_some());
    assert_eq!(call_at(&mut h, NOW + 151, src, &good.bytes()), None);
    // From the future: an id issued later than now.
    let future = h.shared().validator.issue(NOW + 10, src.ip());
    assert_eq!(call(&mut h, src, &Ann { id: future, ..good }.bytes()), None);
    // Scrape with a bad id: silent too.
    assert_eq!(
        call(&mut h, src, &scrape_bytes(id ^ 2, 1, &[[1; 20]])),
        None
    );
    assert_eq!(h.counters.drops(DropReason::BadConnectionId), 6);
}

#[test]
fn unauthenticated_junk_is_silent_and_counted() {
    let mut h = handler();
    let src = v4([192, 0, 2, 1], 5000);
    for len in 0..16 {
        assert_eq!(call(&mut h, src, &vec![0u8; len]), None);
    }
    let mut bad_pid = connect_bytes(1);
    bad_pid[0] ^= 1;
    assert_eq!(call(&mut h, src, &bad_pid), None);
    let mut unknown = connect_bytes(1);
    unknown[8..12].copy_from_slice(&7u32.to_be_bytes());
    assert_eq!(call(&mut h, src, &unknown), None);
    let mut client_error = connect_bytes(1);
    client_error[8..12].copy_from_slice(&3u32.to_be_bytes());
    client_error.extend_from_slice(b"oops");
    assert_eq!(
        call(&mut h, src, &client_error),
        None,
        "never answer an error"
    );
    // Malformed (short announce, partial scrape) with an unauthenticated id: silent.
    let short_announce = &Ann::new(12345, 1).bytes()[..60];
    assert_eq!(call(&mut h, src, short_announce), None);
    let c = &h.counters;
    assert_eq!(c.drops(DropReason::Short), 16);
    assert_eq!(c.drops(DropReason::BadProtocolId), 1);
    assert_eq!(c.drops(DropReason::UnknownAction), 1);
    assert_eq!(c.drops(DropReason::ClientError), 1);
    assert_eq!(c.drops(DropReason::Malformed), 1);
    assert_eq!(c.rx_packets, 20);
    assert_eq!(c.responses.iter().flatten().sum::<u64>(), 0);
}

#[test]
fn malformed_with_valid_id_gets_a_short_error_echoing_the_tid() {
    let mut h = handler();
    let src = v4([192, 0, 2, 1], 5000);
    let id = connect(&mut h, src);
    let full = Ann {
        tid: 0x1122_3344,
        ..Ann::new(id, 1)
    }
    .bytes();
    let r = call(&mut h, src, &full[..60]).expect("error reply");
    assert_eq!(u32_at(&r, 0), 3);
    assert_eq!(u32_at(&r, 4), 0x1122_3344);
    assert_eq!(&r[8..], b"announce too short");
    assert!(r.len() < 40);
    // A scrape with a partial hash.
    let mut s = scrape_bytes(id, 0x55, &[[1; 20]]);
    s.extend_from_slice(&[0; 5]);
    let r = call(&mut h, src, &s).expect("error reply");
    assert_eq!((u32_at(&r, 0), u32_at(&r, 4)), (3, 0x55));
    assert_eq!(h.counters.errors_sent(ErrorReason::Malformed), 2);
    assert_eq!(h.counters.responses(Action::Error, IpFamily::V4), 2);
}

#[test]
fn announce_entry_size_follows_the_packet_family() {
    let mut h = handler();
    let a4 = v4([10, 0, 0, 1], 1000);
    let b4 = v4([10, 0, 0, 2], 1000);
    let a6 = v6("2001:db8::1", 1000);
    let b6 = v6("2001:db8::2", 1000);
    announce(&mut h, a4, |a| a.port = 1111);
    announce(&mut h, a6, |a| a.port = 2222);
    let r = announce(&mut h, b4, |a| a.port = 3333);
    assert_eq!(r.len(), 20 + 6);
    assert_eq!(
        peers_v4(&r),
        vec![SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 1111)]
    );
    let r = announce(&mut h, b6, |a| a.port = 4444);
    assert_eq!(r.len(), 20 + 18);
    assert_eq!(
        peers_v6(&r),
        vec![SocketAddrV6::new(
            "2001:db8::1".parse().unwrap(),
            2222,
            0,
            0
        )]
    );
    // Header: interval, leechers, seeders.
    assert_eq!(u32_at(&r, 4), 7);
    assert_eq!(u32_at(&r, 8), 1800);
    assert_eq!(u32_at(&r, 12), 2, "leechers");
    assert_eq!(u32_at(&r, 16), 0, "seeders");
    assert_eq!(h.counters.responses(Action::Announce, IpFamily::V6), 2);
    assert_eq!(h.counters.requests(Action::Announce, IpFamily::V4), 2);
}

#[test]
fn ipv4_mapped_source_is_ipv4() {
    let mut h = handler();
    announce(&mut h, v4([10, 0, 0, 1], 1), |a| a.port = 1111);
    let mapped = v6("::ffff:10.0.0.9", 5000);
    let id = connect(&mut h, mapped);
    assert!(
        h.shared()
            .validator
            .is_valid(id, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9)), NOW)
    );
    let r = call(&mut h, mapped, &Ann::new(id, 1).bytes()).unwrap();
    assert_eq!(
        peers_v4(&r),
        vec![SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 1111)]
    );
    assert_eq!(r.len(), 26);
    assert_eq!(h.counters.requests(Action::Announce, IpFamily::V4), 2);
    assert_eq!(h.store_stats_v4_peers(), 2);
}

#[allow(clippy::unnecessary_cast)] // the store's count type may differ from u64
impl RequestHandler {
    fn store_stats_v4_peers(&self) -> u64 {
        let s = self.shared().store.stats();
        (s.v4.seeders + s.v4.leechers) as u64
    }
    fn store_stats_v6_peers(&self) -> u64 {
        let s = self.shared().store.stats();
        (s.v6.seeders + s.v6.leechers) as u64
    }
}

#[test]
fn num_want_is_capped_per_family_so_replies_fit_one_packet() {
    let mut h = handler();
    for i in 0..250u32 {
        let ip = 0x0a00_0000 + i + 1;
        announce(&mut h, SocketAddr::from((Ipv4Addr::from(ip), 1)), |a| {
            a.num_want = 0
        });
    }
    for i in 0..80u16 {
        announce(&mut h, v6(&format!("2001:db8::{:x}", i + 1), 1), |a| {
            a.num_want = 0
        });
    }
    let r = announce(&mut h, v4([192, 0, 2, 1], 1), |a| a.num_want = 10_000);
    assert_eq!(r.len(), 1220);
    assert_eq!(peers_v4(&r).len(), 200);
    let r = announce(&mut h, v6("2001:db8:1::1", 1), |a| a.num_want = 10_000);
    assert_eq!(r.len(), 1208);
    assert_eq!(peers_v6(&r).len(), 66);
    // Negative = default (50); zero = none.
    let r = announce(&mut h, v4([192, 0, 2, 2], 1), |a| a.num_want = -1);
    assert_eq!(peers_v4(&r).len(), 50);
    let r = announce(&mut h, v4([192, 0, 2, 3], 1), |a| a.num_want = 0);
    assert_eq!(r.len(), 20);
    let r = announce(&mut h, v4([192, 0, 2, 4], 1), |a| a.num_want = 3);
    assert_eq!(peers_v4(&r).len(), 3);
    // A lower configured cap.
    let mut c = protocol_config();
    c.protocol.max_num_want_v4 = 10;
    c.protocol.default_num_want = 5;
    let mut h = handler_with(&c, AccessList::off());
    for i in 0..20u8 {
        announce(&mut h, v4([10, 1, 0, i], 1), |a| a.num_want = 0);
    }
    assert_eq!(
        peers_v4(&announce(&mut h, v4([10, 2, 0, 0], 1), |a| a.num_want = 200)).len(),
        10
    );
    assert_eq!(
        peers_v4(&announce(&mut h, v4([10, 2, 0, 1], 1), |a| a.num_want = -1)).len(),
        5
    );
}

#[test]
fn port_zero_is_never_stored_nor_handed_out() {
    let mut h = handler();
    let r = announce(&mut h, v4([10, 0, 0, 1], 1), |a| a.port = 0);
    assert_eq!(r.len(), 20, "answered, but not stored");
    assert_eq!(h.store_stats_v4_peers(), 0);
    assert_eq!(h.counters.peers_not_stored(NotStoredReason::InvalidPort), 1);
    let r = announce(&mut h, v4([10, 0, 0, 2], 1), |a| a.port = 5);
    assert_eq!(peers_v4(&r), vec![], "the port-0 peer is not handed out");
    assert_eq!(u32_at(&r, 12), 1, "only the new leecher counted");
    announce(&mut h, v6("2001:db8::1", 1), |a| a.port = 0);
    assert_eq!(h.store_stats_v6_peers(), 0);
}

#[test]
fn ip_field_is_ignored() {
    let mut h = handler();
    announce(&mut h, v4([10, 0, 0, 1], 1), |a| {
        a.port = 1111;
        a.ip = u32::from(Ipv4Addr::new(203, 0, 113, 66));
    });
    let r = announce(&mut h, v4([10, 0, 0, 2], 1), |_| {});
    assert_eq!(
        peers_v4(&r),
        vec![SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 1111)]
    );
}

#[test]
fn seeders_leechers_completed_stopped_and_extreme_left() {
    let mut h = handler();
    announce(&mut h, v4([10, 0, 0, 1], 1), |a| a.left = 0);
    announce(&mut h, v4([10, 0, 0, 2], 1), |a| a.left = i64::MAX);
    announce(&mut h, v4([10, 0, 0, 3], 1), |a| a.left = -1);
    let r = announce(&mut h, v4([10, 0, 0, 4], 1), |a| {
        a.left = 0;
        a.event = AnnounceEvent::Completed;
    });
    assert_eq!(
        (u32_at(&r, 12), u32_at(&r, 16)),
        (2, 2),
        "leechers, seeders"
    );
    assert_eq!(h.counters.completed, 1);
    // Stop from an unknown peer: harmless (Transmission sometimes stops first).
    let r = announce(&mut h, v4([10, 0, 0, 9], 1), |a| {
        a.event = AnnounceEvent::Stopped
    });
    assert!(r.len() >= 20);
    assert_eq!(
        h.counters
            .peers_not_stored(NotStoredReason::UnknownPeerStopped),
        1
    );
    let r = announce(&mut h, v4([10, 0, 0, 1], 1), |a| {
        a.event = AnnounceEvent::Stopped;
        a.num_want = 0;
    });
    assert_eq!((u32_at(&r, 12), u32_at(&r, 16)), (2, 1));
    // Unknown event numbers are treated as a regular announce.
    let r = announce(&mut h, v4([10, 0, 0, 5], 1), |a| {
        a.event = AnnounceEvent::Unknown(9)
    });
    assert_eq!(u32_at(&r, 12), 3);
    let id = connect(&mut h, v4([10, 0, 0, 6], 1));
    let r = call(
        &mut h,
        v4([10, 0, 0, 6], 1),
        &scrape_bytes(id, 1, &[[1; 20]]),
    )
    .unwrap();
    assert_eq!(
        (u32_at(&r, 8), u32_at(&r, 12), u32_at(&r, 16)),
        (1, 1, 3),
        "seeders, completed, leechers"
    );
}

#[test]
fn scrape_rows_in_request_order_with_duplicates_and_truncation() {
    let mut h = handler();
    // Swarm 1: one leecher; swarm 2: two seeders.
    announce(&mut h, v4([10, 0, 0, 1], 1), |a| a.hash = [1; 20]);
    announce(&mut h, v4([10, 0, 0, 2], 1), |a| {
        a.hash = [2; 20];
        a.left = 0;
    });
    announce(&mut h, v4([10, 0, 0, 3], 1), |a| {
        a.hash = [2; 20];
        a.left = 0;
    });
    let src = v4([10, 0, 0, 4], 1);
    let id = connect(&mut h, src);
    let hashes = [[2; 20], [1; 20], [9; 20], [2; 20]];
    let r = call(&mut h, src, &scrape_bytes(id, 0x77, &hashes)).unwrap();
    assert_eq!(r.len(), 8 + 4 * 12);
    assert_eq!((u32_at(&r, 0), u32_at(&r, 4)), (2, 0x77));
    let rows: Vec<(u32, u32, u32)> = r[8..]
        .chunks(12)
        .map(|c| (u32_at(c, 0), u32_at(c, 4), u32_at(c, 8)))
        .collect();
    assert_eq!(rows, vec![(2, 0, 0), (0, 0, 1), (0, 0, 0), (2, 0, 0)]);
    // IPv6 clients see IPv6 swarms only.
    let s6 = v6("2001:db8::1", 1);
    let id6 = connect(&mut h, s6);
    let r = call(&mut h, s6, &scrape_bytes(id6, 1, &[[2; 20]])).unwrap();
    assert_eq!(&r[8..], &[0; 12]);
    // 100 hashes: 74 rows (896 bytes); a lower configured maximum cuts further.
    let many = vec![[2u8; 20]; 100];
    let r = call(&mut h, src, &scrape_bytes(id, 1, &many)).unwrap();
    assert_eq!(r.len(), 8 + 74 * 12);
    let mut c = protocol_config();
    c.protocol.max_scrape_hashes = 3;
    let mut h = handler_with(&c, AccessList::off());
    let id = connect(&mut h, src);
    let r = call(&mut h, src, &scrape_bytes(id, 1, &many)).unwrap();
    assert_eq!(r.len(), 8 + 3 * 12);
    assert_eq!(h.counters.responses(Action::Scrape, IpFamily::V4), 1);
}

/// Issue 10, time bomb 3: peers age on the store's monotonic clock, connection ids on Unix
/// time. A wall-clock step forward of 12 hours (a stamp's age would wrap within 18.2 h)
/// neither expires nor revives anyone; 3,000 s on the monotonic clock expire a peer whatever
/// the wall clock says.
#[test]
fn issue10_peers_age_on_the_monotonic_clock() {
    let mut h = handler();
    let (a, b) = (v4([10, 0, 0, 1], 5000), v4([10, 0, 0, 2], 5000));
    let ann_at = |h: &mut RequestHandler, src, now: Now| {
        let mut out = [0u8; MAX_REPLY];
        let n = h.handle(now, src, &connect_bytes(1), &mut out).unwrap();
        let id = u64::from_be_bytes(out[8..16].try_into().unwrap());
        let n2 = h
            .handle(now, src, &Ann::new(id, 1).bytes(), &mut out)
            .unwrap();
        assert_eq!(n, 16);
        peers_v4(&out[..n2])
    };
    let t0 = Now {
        unix: NOW,
        store: 100,
    };
    ann_at(&mut h, a, t0);
    // The wall clock jumps 12 h ahead, the monotonic clock moves 10 s: `a` is fresh.
    let jumped = Now {
        unix: NOW + 12 * 3600,
        store: 110,
    };
    assert_eq!(
        ann_at(&mut h, b, jumped),
        [SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 6881)]
    );
    // 3,000 monotonic seconds later (timeout 2,700) with the wall clock unchanged: expired.
    let later = Now {
        unix: NOW + 12 * 3600,
        store: 3_200,
    };
    assert_eq!(ann_at(&mut h, b, later), []);
}

/// Issue 14: announces are counted by the client software their peer id names (captured
/// libtorrent and Transmission ids), `started` separately; a garbage peer id is `other`; an
/// announce the access list refuses is not counted.
#[test]
fn announces_are_counted_by_client_software() {
    use fjord_protocol::client::Client;
    let mut h = handler_with(&protocol_config(), list(AccessListMode::Deny, &[9]));
    let src = v4([10, 0, 0, 1], 1);
    let id = connect(&mut h, src);
    let mut send = |peer_id: &[u8; 20], event: AnnounceEvent, hash: u8| {
        let mut bytes = Ann {
            event,
            ..Ann::new(id, hash)
        }
        .bytes();
        bytes[36..56].copy_from_slice(peer_id);
        call(&mut h, src, &bytes).expect("answered");
    };
    send(b"-LT2080-IFHTjbbnqKnV", AnnounceEvent::Started, 1);
    send(b"-LT2080-IFHTjbbnqKnV", AnnounceEvent::None, 1);
    send(b"-TR3000-ttxd4s4cypsd", AnnounceEvent::Started, 1);
    send(&[0xf3; 20], AnnounceEvent::Started, 1);
    send(b"-TR3000-ttxd4s4cypsd", AnnounceEvent::Started, 9); // denied
    let per = h.counters.clients.per_client();
    let count = |c: Client| (per[c as usize].announces, per[c as usize].started);
    assert_eq!(count(Client::Libtorrent), (2, 1));
    assert_eq!(count(Client::Transmission), (1, 1));
    assert_eq!(count(Client::Other), (1, 1));
    assert_eq!(per.iter().map(|c| c.announces).sum::<u64>(), 4);
}

/// Issue 15: the rate limiter, store admission, back-off replies and the interval in force,
/// through `handle`.
#[path = "fairness_tests.rs"]
mod fairness;

/// The access list, amplification and other defences, through `handle`.
#[path = "handler_tests_defences.rs"]
mod defences;

/// The staged batch path.
#[path = "handler_tests_batch.rs"]
mod batch;
