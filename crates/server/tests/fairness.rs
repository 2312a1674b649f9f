//! Issue 15 against the real server on loopback (port 0, distinct 127.x source addresses,
//! bounded, no sleep to wait for the server):
//! - the hostile suite: random, truncated, oversized and bit-flipped datagrams, every action
//!   with forged, zero, expired, future and other-IP connection ids, malformed BEP 41 options.
//!   No reply to unauthenticated traffic except a well-formed connect (16 bytes, never more
//!   than the request), every drop counted under its reason, a legitimate client served
//!   throughout;
//! - a single-source flood (one address, several sockets, valid announces to random swarms
//!   and ports) beside sources announcing at a normal rate: they keep their replies and their
//!   peers stay stored, the flooder is metered and holds its share of the store, RSS flat;
//! - a forged-source connect flood towards one victim /24: the replies it gets are bounded;
//! - the access-list file rewritten in place under load: no allowed announce refused.
//!
//! The handler-level versions of these (exact counts, no sockets) are in
//! `src/fairness_tests.rs` and `src/handler_tests.rs`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fjord_server::config::AccessListMode;
use fjord_server::connection_id::ConnectionIdValidator;
use fjord_server::counters::{
    Action, AdmissionRefusal, CountersSnapshot, DropReason, ErrorReason, IpFamily,
};
use fjord_server::{Config, RunningServer};

mod support;
use support::TempDir;
use support::client::{TrackerClient, announce_bytes, connect_bytes, scrape_bytes, u32_at};

const KEY_HEX: &str = "00112233445566778899aabbccddeeff";
const KEY: [u8; 16] = [
    0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff,
];
const PROTOCOL_ID: u64 = 0x41727101980;
/// Every wait for a reply or a counter is bounded by this.
const TIMEOUT: Duration = Duration::from_secs(5);

fn start(mut config: Config) -> RunningServer {
    config.connection_id.key = KEY_HEX.to_string();
    fjord_server::start(config).expect("server starts")
}

fn config(workers: usize) -> Config {
    let mut c = Config::for_tests(vec!["127.0.0.1:0".parse().unwrap()]);
    c.workers = workers;
    c
}

/// Polls the published counters (workers publish every 100 ms) until `f` holds.
fn eventually(server: &RunningServer, what: &str, f: impl Fn(&CountersSnapshot) -> bool) {
    let until = Instant::now() + TIMEOUT;
    loop {
        let c = server.counters();
        if f(&c) {
            return;
        }
        assert!(
            Instant::now() < until,
            "timed out waiting for {what}: {c:?}"
        );
        std::thread::sleep(Duration::from_millis(5)); // polling interval
    }
}

fn unix_now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32
}

/// xorshift64*: the tests' reproducible randomness.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn hash(&mut self) -> [u8; 20] {
        self.bytes(20).try_into().unwrap()
    }
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A legitimate client at `bind` doing connect, announce, scrape until `stop`; returns
/// (requests, replies). Each request waits for its reply (no retransmission).
fn legitimate_client(
    bind: &'static str,
    server: SocketAddr,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(u64, u64)> {
    std::thread::spawn(move || {
        let c = TrackerClient::new(bind, server, Duration::from_secs(2));
        let (mut sent, mut answered) = (0u64, 0u64);
        let hash = [0x5a; 20];
        let mut tid = 0u32;
        while !stop.load(Ordering::Relaxed) || sent == 0 {
            tid += 1;
            sent += 1;
            let Some(r) = c.request(&connect_bytes(tid)) else {
                continue;
            };
            answered += 1;
            let id = u64::from_be_bytes(r[8..16].try_into().unwrap());
            sent += 2;
            let a = c.request(&announce_bytes(id, tid, hash, 6881, 100, &[]));
            answered += u64::from(a.is_some_and(|r| r.len() >= 20 && u32_at(&r, 0) == 1));
            let s = c.request(&scrape_bytes(id, tid, &[hash]));
            answered += u64::from(s.is_some_and(|r| r.len() == 20 && u32_at(&r, 0) == 2));
            std::thread::sleep(Duration::from_millis(5)); // a client's pace, not a wait
        }
        (sent, answered)
    })
}

/// The hostile sender: one socket, and after each datagram a marker (an authenticated
/// announce with a fresh transaction id, answered after anything the datagram caused, since
/// announces are served last in a batch) so that every reply is matched to its datagram.
struct Hostile {
    client: TrackerClient,
    ip: IpAddr,
    id: u64,
    marker_tid: u32,
}

impl Hostile {
    fn new(bind: &str, server: SocketAddr) -> Hostile {
        let client = TrackerClient::new(bind, server, TIMEOUT);
        let id = client.connect();
        let ip = client.sock.local_addr().unwrap().ip();
        Hostile {
            client,
            ip,
            id,
            marker_tid: 0x4d00_0000,
        }
    }

    /// Sends `datagram`, then the marker; returns the replies that came before the marker's.
    fn send(&mut self, datagram: &[u8]) -> Vec<Vec<u8>> {
        self.marker_tid += 1;
        let marker = announce_bytes(self.id, self.marker_tid, [0x4d; 20], 1, 0, &[]);
        let sock = &self.client.sock;
        sock.send_to(datagram, self.client.server).unwrap();
        sock.send_to(&marker, self.client.server).unwrap();
        let mut replies = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = sock.recv(&mut buf).expect("the marker is answered");
            let r = buf[..n].to_vec();
            if n >= 8 && u32_at(&r, 0) == 1 && u32_at(&r, 4) == self.marker_tid {
                return replies;
            }
            replies.push(r);
        }
    }
}

/// What a reply to `datagram` from an unauthenticated source may be: nothing, or, for a
/// well-formed connect, 16 bytes echoing its transaction id (never more than the request).
fn check_unauthenticated(datagram: &[u8], replies: &[Vec<u8>], valid_ids: &[u64]) {
    let first = datagram
        .get(..8)
        .map(|b| u64::from_be_bytes(b.try_into().unwrap()));
    if first.is_some_and(|id| valid_ids.contains(&id)) {
        assert!(replies.len() <= 1, "one reply at most");
        return; // authenticated: any reply is allowed
    }
    let is_connect = datagram.len() >= 16 && first == Some(PROTOCOL_ID) && u32_at(datagram, 8) == 0;
    match replies {
        [] => {}
        [r] if is_connect => {
            assert_eq!(r.len(), 16, "a connect reply is 16 bytes");
            assert!(r.len() <= datagram.len());
            assert_eq!((u32_at(r, 0), u32_at(r, 4)), (0, u32_at(datagram, 12)));
        }
        _ => panic!(
            "unauthenticated datagram of {} bytes ({:02x?}…) got {} replies of {:?} bytes",
            datagram.len(),
            &datagram[..datagram.len().min(16)],
            replies.len(),
            replies.iter().map(Vec::len).collect::<Vec<_>>()
        ),
    }
}

#[test]
fn hostile_datagrams_get_no_reply_but_connects_and_every_drop_is_counted() {
    let server = start(config(2));
    let addr = server.local_addrs()[0];
    let stop = Arc::new(AtomicBool::new(false));
    let legit = legitimate_client("127.0.8.3:0", addr, Arc::clone(&stop));
    let mut h = Hostile::new("127.0.8.2:0", addr);
    let v = ConnectionIdValidator::new(KEY, 30);
    let now = unix_now();
    let valid = [h.id];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let before = server.counters();
    let mut sent = 0u64;
    // Each category, with the drop reason every datagram of it must be counted under (None:
    // random, any reason, checked through the total).
    let mut run = |h: &mut Hostile, datagrams: Vec<Vec<u8>>, reason: Option<DropReason>| {
        let base = server.counters();
        let (mut silent, mut n) = (0u64, 0u64);
        for d in &datagrams {
            let replies = h.send(d);
            check_unauthenticated(d, &replies, &valid);
            silent += u64::from(replies.is_empty());
            n += 1;
        }
        sent += n;
        if let Some(reason) = reason {
            assert_eq!(silent, n, "{reason:?}: every datagram silent");
            eventually(&server, reason.name(), |c| {
                c.drops(reason) - base.drops(reason) == n
            });
        }
        silent
    };
    let mut silent = 0;
    // Truncated: 0 to 15 bytes of valid requests.
    let connect = connect_bytes(9);
    let announce = announce_bytes(h.id, 9, [1; 20], 6881, 0, &[]);
    let truncated = (0..16)
        .flat_map(|n| [connect[..n].to_vec(), announce[..n].to_vec()])
        .collect();
    silent += run(&mut h, truncated, Some(DropReason::Short));
    // A connect with a wrong protocol id; an unknown action; a client-sent error.
    let with_action = |rng: &mut Rng, first: u64, action: u32, len: usize| {
        let mut d = rng.bytes(len);
        d[..8].copy_from_slice(&first.to_be_bytes());
        d[8..12].copy_from_slice(&action.to_be_bytes());
        d
    };
    let bad_magic = (0..50)
        .map(|_| {
            let first = PROTOCOL_ID ^ (1 + rng.below(u64::MAX - 1));
            with_action(&mut rng, first, 0, 16)
        })
        .collect();
    silent += run(&mut h, bad_magic, Some(DropReason::BadProtocolId));
    let unknown = (0..50)
        .map(|_| {
            let (first, action, len) = (
                rng.next(),
                4 + rng.below(1 << 31) as u32,
                16 + rng.below(200),
            );
            with_action(&mut rng, first, action, len as usize)
        })
        .collect();
    silent += run(&mut h, unknown, Some(DropReason::UnknownAction));
    let errors = (0..20)
        .map(|_| {
            let len = 16 + rng.below(40) as usize;
            with_action(&mut rng, h.id, 3, len)
        })
        .collect();
    silent += run(&mut h, errors, Some(DropReason::ClientError));
    // Announces and scrapes with forged, zero, expired, future and other-IP ids.
    let other_ip: IpAddr = "127.0.8.9".parse().unwrap();
    let mut bad_ids = vec![0, rng.next(), PROTOCOL_ID];
    bad_ids.extend([
        v.issue(now - 600, h.ip),
        v.issue(now + 600, h.ip),
        v.issue(now, other_ip),
        h.id ^ 1,
        h.id ^ (1 << 40),
    ]);
    let mut forged = Vec::new();
    for &id in &bad_ids {
        for _ in 0..5 {
            forged.push(announce_bytes(id, 1, rng.hash(), 6881, 0, &[]));
            forged.push(scrape_bytes(id, 1, &[rng.hash(), rng.hash()]));
        }
    }
    silent += run(&mut h, forged, Some(DropReason::BadConnectionId));
    // Announces cut short (16 to 97 bytes: malformed), unauthenticated: silence.
    let cut: Vec<Vec<u8>> = bad_ids
        .iter()
        .flat_map(|&id| {
            let a = announce_bytes(id, 1, [3; 20], 1, 0, &[]);
            [16, 20, 57, 97].map(|n| a[..n].to_vec())
        })
        .collect();
    silent += run(&mut h, cut, Some(DropReason::Malformed));
    // Malformed BEP 41 options (a length running past the end) do not make an announce
    // invalid: unauthenticated, silence; authenticated, an ordinary reply.
    let options = [&b"\x02\xff"[..], b"\x02\x05ab", b"\x01\x01\x07", b"\x02"];
    let malformed: Vec<Vec<u8>> = options
        .iter()
        .flat_map(|o| {
            bad_ids
                .iter()
                .map(move |&id| announce_bytes(id, 1, [3; 20], 1, 0, o))
        })
        .collect();
    silent += run(&mut h, malformed, Some(DropReason::BadConnectionId));
    for o in options {
        let r = h.send(&announce_bytes(h.id, 77, [3; 20], 1, 0, o));
        assert!(
            matches!(&r[..], [a] if u32_at(a, 0) == 1 && u32_at(a, 4) == 77),
            "{r:?}"
        );
    }
    // Cut short, authenticated: a short error reply each.
    let base = server.counters();
    for n in [16, 57, 97] {
        let r = h.send(&announce_bytes(h.id, 78, [3; 20], 1, 0, &[])[..n]);
        assert!(
            matches!(&r[..], [e] if u32_at(e, 0) == 3 && u32_at(e, 4) == 78 && e.len() < 64),
            "{r:?}"
        );
    }
    eventually(&server, "malformed error replies", |c| {
        c.errors_sent(ErrorReason::Malformed) - base.errors_sent(ErrorReason::Malformed) == 3
    });
    // Random bytes of random lengths, oversized ones included (up to 4 KiB, beyond the
    // 2 KiB receive buffer: cut by the kernel), and valid requests with one bit flipped.
    let mut random: Vec<Vec<u8>> = (0..300)
        .map(|i| {
            let len = if i % 10 == 0 {
                1400 + rng.below(2700)
            } else {
                rng.below(200)
            };
            rng.bytes(len as usize)
        })
        .collect();
    let valid_requests = [
        connect_bytes(5),
        announce_bytes(h.id, 5, [4; 20], 6881, 0, &[]),
        announce_bytes(h.id, 5, [4; 20], 6881, 0, b"\x02\x09/announce"),
        scrape_bytes(h.id, 5, &[[4; 20], [5; 20]]),
    ];
    for _ in 0..300 {
        let mut d = valid_requests[rng.below(4) as usize].clone();
        let bit = rng.below(d.len() as u64 * 8) as usize;
        d[bit / 8] ^= 1 << (bit % 8);
        random.push(d);
    }
    silent += run(&mut h, random, None);
    // Every silent datagram is one drop, under some reason (none of them the rate).
    eventually(&server, "every silent datagram counted", |c| {
        c.total_drops() - before.total_drops() == silent
    });
    assert_eq!(server.counters().drops(DropReason::RateLimited), 0);
    stop.store(true, Ordering::Relaxed);
    let (requests, replies) = legit.join().unwrap();
    // And after: served as before.
    let after = TrackerClient::new("127.0.8.3:0", addr, TIMEOUT);
    let id = after.connect();
    let r = after
        .request(&announce_bytes(id, 1, [0x5a; 20], 6882, 0, &[]))
        .expect("served after");
    assert_eq!(
        (u32_at(&r, 0), r.len()),
        (1, 26),
        "one peer: the client during the run"
    );
    assert_eq!(replies, requests, "the legitimate client lost replies");
    eprintln!(
        "hostile suite: {sent} datagrams, {silent} silent, legitimate client {replies}/{requests}"
    );
}

/// Sources announcing at a normal rate while one address floods: returns (requests, replies)
/// of each normal source. Normal source `i` binds 127.2.`i`.1 and, once the flood has sent
/// `after` datagrams (so that its peer is new to a store under attack), announces to its
/// own swarm every 10 ms.
fn normal_sources(
    n: u8,
    server: SocketAddr,
    stop: &Arc<AtomicBool>,
    (flood_sent, after): (&Arc<AtomicU64>, u64),
) -> Vec<std::thread::JoinHandle<(u64, u64)>> {
    (1..=n)
        .map(|i| {
            let stop = Arc::clone(stop);
            let flood_sent = Arc::clone(flood_sent);
            std::thread::spawn(move || {
                while flood_sent.load(Ordering::Relaxed) < after && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(1)); // waiting for the flood
                }
                let c =
                    TrackerClient::new(&format!("127.2.{i}.1:0"), server, Duration::from_secs(1));
                let (mut sent, mut answered) = (0u64, 0u64);
                let mut id = None;
                let mut tid = 0;
                while !stop.load(Ordering::Relaxed) {
                    tid += 1;
                    let cid = match id {
                        Some(cid) => cid,
                        None => {
                            sent += 1;
                            let Some(r) = c.request(&connect_bytes(tid)) else {
                                continue;
                            };
                            answered += 1;
                            *id.insert(u64::from_be_bytes(r[8..16].try_into().unwrap()))
                        }
                    };
                    sent += 1;
                    let a = announce_bytes(cid, tid, [i; 20], 6881, 100, &[]);
                    if let Some(r) = c.request(&a) {
                        answered += u64::from(u32_at(&r, 0) == 1 && u32_at(&r, 4) == tid);
                    }
                    std::thread::sleep(Duration::from_millis(10)); // a normal rate, not a wait
                }
                (sent, answered)
            })
        })
        .collect()
}

#[test]
fn a_single_source_flood_is_metered_and_others_keep_their_replies_and_peers() {
    let mut c = config(2);
    c.store.max_peers = 20_000;
    let (rate, burst) = (c.limits.requests_per_sec, c.limits.burst);
    let server = start(c);
    let addr = server.local_addrs()[0];
    let stop = Arc::new(AtomicBool::new(false));
    let rss_before = rss_kib();
    let flood_secs = 3.0;
    let started = Instant::now();
    let flood_sent = Arc::new(AtomicU64::new(0));
    // They start once the flood has sent 30,000 announces (1.5 times the store's peer cap).
    let normal = normal_sources(10, addr, &stop, (&flood_sent, 30_000));
    // One address, four sockets, valid announces to random swarms and ports, up to ~80,000/s.
    let flooders: Vec<_> = (0..4u64)
        .map(|k| {
            let sent = Arc::clone(&flood_sent);
            std::thread::spawn(move || {
                let c = TrackerClient::new("127.1.0.2:0", addr, TIMEOUT);
                let id = c.connect();
                let mut rng = Rng(0x1234_5678 + k);
                let mut buf = [0u8; 2048];
                c.sock.set_nonblocking(true).unwrap();
                let mut tid = 0;
                while started.elapsed().as_secs_f64() < flood_secs {
                    for _ in 0..200 {
                        tid += 1;
                        let port = rng.below(65_535) as u16 + 1;
                        let a = announce_bytes(id, tid, rng.hash(), port, 0, &[]);
                        if c.sock.send_to(&a, addr).is_ok() {
                            sent.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    while c.sock.recv(&mut buf).is_ok() {}
                    std::thread::sleep(Duration::from_millis(10)); // the flood's pace
                }
            })
        })
        .collect();
    for f in flooders {
        f.join().unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let (mut requests, mut replies) = (0, 0);
    for t in normal {
        let (s, a) = t.join().unwrap();
        requests += s;
        replies += a;
    }
    let rss_after = rss_kib();
    let flood_sent = flood_sent.load(Ordering::Relaxed);
    let store = server.store().stats();
    // The normal sources' ten peers are all stored (leechers); the flooder's are seeders.
    let normal_stored = (1..=10u8)
        .filter(|&i| {
            server
                .store()
                .scrape_one::<std::net::SocketAddrV4>(&[i; 20])
                .leechers
                == 1
        })
        .count();
    eventually(&server, "the flood counted", |c| {
        c.drops(DropReason::RateLimited) > 0
    });
    let counters = server.counters();
    let limited = counters.drops(DropReason::RateLimited);
    let refused = counters.peers_not_admitted(AdmissionRefusal::Prefix);
    eprintln!(
        "flood: {flood_sent} announces from one address in {elapsed:.1} s, {limited} rate-limited, \
         {refused} not admitted, {} flooder peers stored; others {replies}/{requests} replies, \
         {normal_stored}/10 peers stored; RSS {rss_before} -> {rss_after} KiB",
        store.v4.seeders
    );
    assert_eq!(normal_stored, 10, "the normal sources' peers are stored");
    assert!(
        replies * 100 >= requests * 99,
        "others got {replies} of {requests} replies"
    );
    // Metered: at most twice (burst + rate × t) per worker share, summed over both workers.
    let allowed = flood_sent - limited;
    let bound = 2 * (u64::from(burst) + (f64::from(rate) * (elapsed + 1.0)) as u64);
    assert!(
        allowed <= bound,
        "{allowed} of the flood allowed, bound {bound}"
    );
    assert!(
        flood_sent > 3 * bound,
        "the flood ({flood_sent}) exceeded the limit"
    );
    // Admission: a /24 holds at most 1 % of store.max_peers (100 per worker, 2 workers).
    assert!(
        store.v4.seeders <= 200 + 2,
        "the flooder holds {} peers",
        store.v4.seeders
    );
    assert!(
        rss_after < rss_before + 32 * 1024,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );
}

#[test]
fn a_forged_source_connect_flood_is_metered_per_victim_prefix() {
    let mut c = config(1);
    c.limits.prefix_v4 = 24;
    c.limits.requests_per_sec = 200;
    c.limits.burst = 400;
    let server = start(c);
    let addr = server.local_addrs()[0];
    // The "forged" sources: 32 addresses of the victim /24 127.5.0.0/24, 8 ports each.
    let victims: Vec<UdpSocket> = (1..=32u8)
        .flat_map(|host| (0..8).map(move |_| host))
        .map(|host| {
            let s = UdpSocket::bind((Ipv4Addr::new(127, 5, 0, host), 0)).unwrap();
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    let bystander = TrackerClient::new("127.6.0.1:0", addr, TIMEOUT);
    let started = Instant::now();
    let (mut sent, mut sent_bytes, mut replies, mut reply_bytes) = (0u64, 0u64, 0u64, 0u64);
    let mut buf = [0u8; 64];
    let mut bystander_ok = 0;
    // 80 rounds of one connect per socket (256 datagrams, well within the receive buffer);
    // the bystander's reply closes each round (one worker, one socket: first in, first out).
    for round in 0..80u32 {
        for (k, s) in victims.iter().enumerate() {
            let req = connect_bytes(round << 16 | k as u32);
            if s.send_to(&req, addr).is_ok() {
                sent += 1;
                sent_bytes += req.len() as u64;
            }
        }
        bystander_ok += u32::from(bystander.request(&connect_bytes(round)).is_some());
        for s in &victims {
            while let Ok(n) = s.recv(&mut buf) {
                assert_eq!(n, 16);
                replies += 1;
                reply_bytes += n as u64;
            }
        }
        std::thread::sleep(Duration::from_millis(30)); // the flood's pace: over 2.4 s
    }
    let elapsed = started.elapsed().as_secs_f64();
    eventually(&server, "every connect counted", |c| {
        c.drops(DropReason::RateLimited) + c.responses(Action::Connect, IpFamily::V4) >= sent + 80
    });
    for s in &victims {
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
        while let Ok(n) = s.recv(&mut buf) {
            replies += 1;
            reply_bytes += n as u64;
        }
    }
    let limited = server.counters().drops(DropReason::RateLimited);
    let bound = 2 * (400 + (200.0 * (elapsed + 1.0)) as u64);
    eprintln!(
        "forged connects: {sent} to the victim /24 in {elapsed:.2} s, {replies} replies \
         ({reply_bytes} of {sent_bytes} bytes reflected), {limited} rate-limited; bystander \
         {bystander_ok}/80"
    );
    assert!(
        replies <= bound,
        "{replies} replies to the victim, bound {bound}"
    );
    let least = 400 + (200.0 * (elapsed - 1.0)) as u64;
    assert!(
        replies >= least,
        "the burst and the rate are answered ({replies} < {least})"
    );
    assert_eq!(bystander_ok, 80, "a bystander elsewhere is served");
    assert_eq!(limited, sent - replies);
}

fn hashes_file(n: u32) -> String {
    (0..n).map(|i| format!("{i:040x}\n")).collect()
}

fn hash_of(i: u32) -> [u8; 20] {
    let mut h = [0u8; 20];
    h[16..].copy_from_slice(&i.to_be_bytes());
    h
}

#[test]
fn an_access_list_rewritten_in_place_under_load_refuses_no_allowed_announce() {
    let dir = TempDir::new("acl-rewrite");
    let path = dir.path().join("allow.txt");
    std::fs::write(&path, hashes_file(1000)).unwrap();
    let mut c = config(2);
    c.access_list.mode = AccessListMode::Allow;
    c.access_list.path = Some(path.clone());
    c.access_list.poll_interval_ms = 100;
    let server = start(c);
    let addr = server.local_addrs()[0];
    let stop = Arc::new(AtomicBool::new(false));
    // Four clients announcing allowed hashes (all 1,000 in turn) as fast as they are answered.
    let clients: Vec<_> = (1..=4u8)
        .map(|i| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let c = TrackerClient::new(&format!("127.3.{i}.1:0"), addr, Duration::from_secs(2));
                let id = c.connect();
                let (mut answered, mut refused, mut k) = (0u64, 0u64, u32::from(i) * 250);
                while !stop.load(Ordering::Relaxed) {
                    k = (k + 1) % 1000;
                    let Some(r) = c.request(&announce_bytes(id, k, hash_of(k), 6881, 0, &[]))
                    else {
                        continue;
                    };
                    match u32_at(&r, 0) {
                        1 => answered += 1,
                        _ => refused += 1,
                    }
                }
                (answered, refused)
            })
        })
        .collect();
    // Rewrite the file in place 10 times: truncate, then write it in 4 KiB pieces with pauses
    // (a slow writer), once with a pause after the truncation longer than the poll interval
    // (an empty allow list must be refused), and wait for the reload of each.
    let full = hashes_file(1000);
    let generation = server.access_list_generation();
    for round in 0..10u32 {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let pause = if round == 3 { 300 } else { 2 };
        std::thread::sleep(Duration::from_millis(pause)); // the writer's pace
        for piece in full.as_bytes().chunks(4096) {
            std::io::Write::write_all(&mut f, piece).unwrap();
            std::thread::sleep(Duration::from_millis(2)); // the writer's pace
        }
        drop(f);
        let until = Instant::now() + TIMEOUT;
        while server.access_list_generation() <= generation + u64::from(round) {
            assert!(Instant::now() < until, "reload {round} not seen");
            std::thread::sleep(Duration::from_millis(5)); // polling interval
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (mut answered, mut refused) = (0, 0);
    for t in clients {
        let (a, r) = t.join().unwrap();
        answered += a;
        refused += r;
    }
    let counters = server.counters();
    let acl = server.access_list();
    use fjord_server::access_list::Refused;
    eprintln!(
        "access list rewritten 10 times: {answered} announces answered, {refused} refused; \
         reloads refused: {} shrink, {} unstable",
        acl.refused(Refused::Shrink),
        acl.refused(Refused::Unstable)
    );
    assert_eq!(refused, 0, "allowed announces refused");
    assert_eq!(counters.errors_sent(ErrorReason::AccessDenied), 0);
    assert!(
        acl.refused(Refused::Shrink) >= 1,
        "the empty file was refused"
    );
    assert_eq!(acl.current().len(), 1000);
    assert!(answered > 100);
}

/// The kernel's drops on fjord's socket are counted: with a tiny receive buffer and a burst
/// faster than the worker drains it, every datagram sent is either received or counted in
/// `fjord_kernel_drops_total` (the socket's `SO_MEMINFO` drop counter, read at every publish).
#[test]
fn kernel_drops_on_the_socket_are_counted() {
    let mut c = config(1);
    c.network.socket_recv_buffer = 4096;
    c.limits.enabled = false;
    let server = start(c);
    let addr = server.local_addrs()[0];
    let senders: Vec<_> = (0..4u8)
        .map(|k| {
            std::thread::spawn(move || {
                let s = UdpSocket::bind((Ipv4Addr::new(127, 4, 0, k + 1), 0)).unwrap();
                (0..20_000u32)
                    .filter(|&i| s.send_to(&connect_bytes(i)[..8], addr).is_ok())
                    .count() as u64
            })
        })
        .collect();
    let sent: u64 = senders.into_iter().map(|t| t.join().unwrap()).sum();
    // One more datagram, answered: everything sent before it was read or dropped.
    // (A probe that finds the buffer still full is dropped too: then another.)
    let probe = TrackerClient::new("127.4.1.1:0", addr, Duration::from_millis(200));
    let mut probes = 0;
    while probe.request(&connect_bytes(probes)).is_none() {
        probes += 1;
        assert!(probes < 100, "no probe answered");
    }
    let sent = sent + u64::from(probes) + 1;
    let counted = |c: &CountersSnapshot| {
        c.kernel_drops(IpFamily::V4)
            + c.drops(DropReason::Short)
            + c.responses(Action::Connect, IpFamily::V4)
    };
    eventually(&server, "every datagram received or dropped", |c| {
        counted(c) >= sent
    });
    let c = server.counters();
    eprintln!(
        "kernel drops: {sent} datagrams sent, {} received, {} dropped by the kernel",
        c.drops(DropReason::Short),
        c.kernel_drops(IpFamily::V4)
    );
    assert_eq!(counted(&c), sent);
    assert!(
        c.kernel_drops(IpFamily::V4) > 0,
        "the burst overflowed the buffer"
    );
    assert_eq!(c.kernel_drops(IpFamily::V6), 0);
}

/// Under sustained load past `load_fraction × capacity` the interval sent rises a step per
/// window and is exported as `fjord_announce_interval_seconds`; calm, it falls back.
#[test]
fn the_interval_in_force_rises_under_load_and_is_a_metric() {
    let mut c = config(1);
    c.metrics.enabled = true;
    c.metrics.listen = "127.0.0.1:0".parse().unwrap();
    c.adaptive_interval.capacity_requests_per_sec = 100;
    c.adaptive_interval.window_secs = 1;
    c.adaptive_interval.step_secs = 600;
    c.adaptive_interval.max_interval_secs = 3000;
    let server = start(c);
    let addr = server.local_addrs()[0];
    let client = TrackerClient::new("127.7.0.1:0", addr, TIMEOUT);
    let id = client.connect();
    let interval_of = |tid| {
        let r = client
            .request(&announce_bytes(id, tid, [7; 20], 6881, 0, &[]))
            .expect("announce answered");
        u32_at(&r, 8)
    };
    assert_eq!(interval_of(1), 1800);
    // ~1,000 datagrams a second (10 × the capacity) until the interval reaches the maximum.
    let until = Instant::now() + 4 * TIMEOUT;
    let mut seen = vec![1800];
    let mut tid = 1;
    while *seen.last().unwrap() < 3000 {
        assert!(
            Instant::now() < until,
            "the interval did not rise: {seen:?}"
        );
        for _ in 0..10 {
            tid += 1;
            let i = interval_of(tid);
            if i != *seen.last().unwrap() {
                seen.push(i);
            }
        }
        std::thread::sleep(Duration::from_millis(10)); // the load's pace
    }
    assert_eq!(
        seen,
        [1800, 2400, 3000],
        "one step at a time, up to the maximum"
    );
    let metrics = server.metrics_addr().expect("metrics");
    let (status, body) = support::http_get(metrics, "/metrics").expect("GET /metrics");
    assert_eq!(status, 200);
    assert!(
        body.contains("fjord_announce_interval_seconds 3000"),
        "{body}"
    );
    assert!(body.contains("fjord_announce_interval_base_seconds 1800"));
    // Calm: back down a step per window, to the configured interval.
    let until = Instant::now() + 4 * TIMEOUT;
    while interval_of(0) > 1800 {
        assert!(Instant::now() < until, "the interval did not fall back");
        std::thread::sleep(Duration::from_millis(200)); // a calm client's pace
    }
}
