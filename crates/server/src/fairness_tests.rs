//! Issue 15 through [`RequestHandler::handle`]: the rate limiter (a flood from one source,
//! forged sources of a victim), store admission (one /24 filling the store or a swarm),
//! back-off replies, and the interval in force. Bytes in, bytes out, no sockets.

use super::*;
use crate::counters::{AdmissionRefusal, BackoffReason};

/// Defaults, with the limiter's rate and burst for one worker given.
fn limited(rate: u32, burst: u32) -> Config {
    let mut c = Config {
        workers: 1,
        ..Config::default()
    };
    c.limits.requests_per_sec = rate;
    c.limits.burst = burst;
    c.admission.enabled = false;
    c
}

fn at(h: &mut RequestHandler, store_secs: u32, src: SocketAddr, req: &[u8]) -> Option<Vec<u8>> {
    let mut out = [0u8; MAX_REPLY];
    let now = Now {
        unix: NOW,
        store: store_secs,
    };
    h.handle(now, src, req, &mut out).map(|n| out[..n].to_vec())
}

#[test]
fn a_source_over_its_rate_gets_silence_and_others_are_served() {
    let mut h = handler_with(&limited(10, 100), AccessList::off());
    let flooder = v4([203, 0, 113, 1], 4000);
    let id = connect(&mut h, flooder);
    let ann = Ann::new(id, 1).bytes();
    // The connect took one token: 99 more within the second.
    let answered = (0..1000)
        .filter(|_| call(&mut h, flooder, &ann).is_some())
        .count();
    assert_eq!(answered, 99);
    assert_eq!(h.counters.drops(DropReason::RateLimited), 901);
    // Other ports of the same address are the same source; other addresses are not.
    assert_eq!(
        call(&mut h, v4([203, 0, 113, 1], 4001), &connect_bytes(1)),
        None
    );
    let other = v4([203, 0, 113, 2], 4000);
    let id2 = connect(&mut h, other);
    assert!(call(&mut h, other, &Ann::new(id2, 1).bytes()).is_some());
    // Refused before parsing: not counted as requests.
    assert_eq!(h.counters.requests(Action::Announce, IpFamily::V4), 100);
    // One second later: the rate (10).
    let n = (0..100)
        .filter(|_| at(&mut h, NOW + 1, flooder, &ann).is_some())
        .count();
    assert_eq!(n, 10);
}

#[test]
fn back_off_replies_go_only_to_authenticated_announces_over_the_rate() {
    let mut c = limited(5, 5);
    c.limits.backoff = true;
    c.protocol.backoff_interval_secs = 7777;
    let mut h = handler_with(&c, AccessList::off());
    let src = v4([198, 51, 100, 3], 6000);
    let id = connect(&mut h, src);
    let mut a = Ann::new(id, 1);
    for _ in 0..4 {
        let r = call(&mut h, src, &a.bytes()).unwrap();
        assert_eq!(u32_at(&r, 8), 1800, "an ordinary reply");
    }
    a.tid = 0x5151;
    let r = call(&mut h, src, &a.bytes()).expect("a back-off reply");
    assert_eq!(r.len(), 20, "no peers");
    assert_eq!(
        (
            u32_at(&r, 0),
            u32_at(&r, 4),
            u32_at(&r, 8),
            u32_at(&r, 12),
            u32_at(&r, 16)
        ),
        (1, 0x5151, 7777, 0, 0)
    );
    assert_eq!(h.counters.backoff_replies(BackoffReason::RateLimited), 1);
    // Unauthenticated over the rate: silence. A connect over the rate: silence.
    let forged = Ann::new(0xdead, 1).bytes();
    assert_eq!(call(&mut h, src, &forged), None);
    assert_eq!(call(&mut h, src, &connect_bytes(1)), None);
    assert_eq!(h.counters.drops(DropReason::RateLimited), 2);
    assert_eq!(h.counters.backoff_replies(BackoffReason::RateLimited), 1);
}

/// Forged sources: a connect flood "from" a victim's address (any ports), or from every
/// address of a victim /24 with `prefix_v4 = 24`, gets at most twice the burst plus the rate
/// of 16-byte replies; the reflection towards the victim is bounded, and others are served.
#[test]
fn a_forged_source_connect_flood_is_metered_per_victim_prefix() {
    let (rate, burst) = (50u64, 200u64);
    for (prefix, victims) in [(32u8, 1u32), (24, 256)] {
        let mut c = limited(rate as u32, burst as u32);
        c.limits.prefix_v4 = prefix;
        let mut h = handler_with(&c, AccessList::off());
        let (mut replies, mut reply_bytes, mut sent) = (0u64, 0u64, 0u64);
        let mut x = 7u32;
        for second in 0..10u32 {
            for _ in 0..10_000 {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let host = (x >> 8) % victims;
                let src = SocketAddr::from(([192, 0, 2, 0], 0));
                let src = match src {
                    SocketAddr::V4(_) => {
                        SocketAddr::from(([192, 0, 2, host as u8], (x & 0xffff) as u16))
                    }
                    s => s,
                };
                let req = connect_bytes(x);
                sent += req.len() as u64;
                if let Some(r) = at(&mut h, NOW + second, src, &req) {
                    replies += 1;
                    reply_bytes += r.len() as u64;
                    assert_eq!(r.len(), 16);
                }
            }
            // A legitimate client elsewhere is served throughout.
            assert!(
                at(
                    &mut h,
                    NOW + second,
                    v4([10, 9, 8, 7], 1),
                    &connect_bytes(3)
                )
                .is_some()
            );
        }
        let share = burst + 9 * rate;
        assert!(
            (share..=2 * share).contains(&replies),
            "/{prefix}: {replies} replies to the victim of 100,000 forged connects"
        );
        assert_eq!(reply_bytes, replies * 16);
        assert!(
            reply_bytes * 100 < sent,
            "reflected {reply_bytes} of {sent} bytes"
        );
        assert_eq!(h.counters.drops(DropReason::RateLimited), 100_000 - replies);
    }
}

/// Defaults, admission on with a small store, the limiter off (these tests send many
/// announces from one /24 in no time).
fn admitting(max_peers: usize, share: f64, per_swarm: u32) -> Config {
    let mut c = Config {
        workers: 1,
        ..Config::default()
    };
    c.limits.enabled = false;
    c.store.max_peers = max_peers;
    c.admission.max_prefix_share = share;
    c.admission.pressure_prefix_share = share / 10.0;
    c.admission.max_peers_per_swarm = per_swarm;
    c.admission.sketch_cells = 1 << 14;
    c.admission.swarm_sketch_cells = 1 << 14;
    c
}

fn hash_of(i: u32) -> [u8; 20] {
    let mut h = [0x77u8; 20];
    h[..4].copy_from_slice(&i.to_be_bytes());
    h
}

/// One /24 announcing random info hashes and ports holds at most its share of the store:
/// refused announces are answered, their swarms are not created, and other sources keep
/// being stored; the flooder's existing peers are still refreshed.
#[test]
fn one_prefix_holds_at_most_its_share_of_the_store() {
    let mut h = handler_with(&admitting(10_000, 0.05, 64), AccessList::off());
    let cap = 500; // 5 % of 10,000
    let (mut answered, mut x) = (0, 1u32);
    for i in 0..5000u32 {
        x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let src = v4([203, 0, 113, (i % 250) as u8 + 1], 1000);
        let id = connect(&mut h, src);
        let mut a = Ann::new(id, 0);
        a.hash = hash_of(x);
        a.port = (x >> 16) as u16 | 1;
        answered += usize::from(call(&mut h, src, &a.bytes()).is_some());
    }
    assert_eq!(answered, 5000, "every announce is answered");
    assert_eq!(h.store_stats_v4_peers(), cap);
    assert_eq!(
        h.shared().store.stats().v4.swarms,
        cap,
        "no swarm created beyond the cap"
    );
    assert_eq!(
        h.counters.peers_not_admitted(AdmissionRefusal::Prefix),
        5000 - cap
    );
    // Others are stored.
    for i in 0..100u8 {
        announce(&mut h, v4([10, i, 0, 1], 6881), |a| {
            a.hash = hash_of(1_000_000 + u32::from(i))
        });
    }
    assert_eq!(h.store_stats_v4_peers(), cap + 100);
    // A refused peer in an existing swarm is answered with that swarm's peers and not kept.
    let joiner = v4([203, 0, 113, 7], 5555);
    let r = announce(&mut h, joiner, |a| a.hash = hash_of(1_000_000));
    assert_eq!(
        peers_v4(&r),
        [SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 6881)]
    );
    assert_eq!(
        (u32_at(&r, 12), u32_at(&r, 16)),
        (1, 0),
        "the reply counts the swarm as it stays"
    );
    assert_eq!(h.store_stats_v4_peers(), cap + 100);
    assert_eq!(
        h.counters.peers_not_admitted(AdmissionRefusal::Prefix),
        5000 - cap + 1
    );
}

/// The store near its cap: prefixes holding more than the pressure share are refused first,
/// light ones are still stored until the store itself is full.
#[test]
fn near_a_full_store_prefixes_holding_many_are_refused_first() {
    let mut h = handler_with(&admitting(1000, 0.5, 1000), AccessList::off());
    // Heavy /24: 500 peers (its 50 %); a second heavy one fills to 850 (85 % > pressure 80 %).
    for (net, n) in [(1u8, 500u32), (2, 350)] {
        for i in 0..n {
            announce(&mut h, v4([198, 18, net, 1], 1), |a| {
                a.hash = hash_of(i);
                a.port = (i + 1) as u16;
            });
        }
    }
    assert_eq!(h.store_stats_v4_peers(), 850);
    // Under pressure (the fill is read once a store-clock second: a second later) the cap is
    // 5 %: both heavy prefixes are refused, light ones are stored.
    let later = |h: &mut RequestHandler, src: SocketAddr, hash: u32| {
        let id = connect(h, src);
        let mut a = Ann::new(id, 0);
        a.hash = hash_of(hash);
        at(h, NOW + 1, src, &a.bytes()).expect("answered");
    };
    later(&mut h, v4([198, 18, 1, 1], 9), 100_000);
    later(&mut h, v4([198, 18, 2, 1], 9), 100_000);
    assert_eq!(h.store_stats_v4_peers(), 850);
    for i in 0..40u8 {
        later(&mut h, v4([100, 64, i, 1], 6881), 7);
    }
    assert_eq!(h.store_stats_v4_peers(), 890);
    assert_eq!(h.counters.peers_not_admitted(AdmissionRefusal::Prefix), 2);
}

/// One /24 adding many ports to one large swarm: at most twice the per-swarm cap stay.
#[test]
fn one_prefix_adds_a_bounded_number_of_peers_to_a_swarm() {
    let mut h = handler_with(&admitting(1_000_000, 0.5, 16), AccessList::off());
    let swarm = hash_of(42);
    // 20 legitimate peers first (the swarm is then larger than the cap).
    for i in 0..20u8 {
        announce(&mut h, v4([10, i, 1, 1], 6881), |a| a.hash = swarm);
    }
    for port in 1..=1000u16 {
        announce(&mut h, v4([203, 0, 113, 9], 1), |a| {
            a.hash = swarm;
            a.port = port;
        });
    }
    let held = h.store_stats_v4_peers() - 20;
    assert!(
        (16..=32).contains(&held),
        "the /24 holds {held} peers of the swarm"
    );
    assert_eq!(
        h.counters.peers_not_admitted(AdmissionRefusal::Swarm),
        1000 - held
    );
    // Elsewhere it is still admitted.
    announce(&mut h, v4([203, 0, 113, 9], 1), |a| a.hash = hash_of(43));
    assert_eq!(h.store_stats_v4_peers(), 20 + held + 1);
}

#[test]
fn a_denied_info_hash_can_get_a_back_off_reply() {
    let mut c = protocol_config();
    c.access_list.denied_reply = crate::config::DeniedReply::Backoff;
    c.protocol.backoff_interval_secs = 86_400;
    let mut h = handler_with(&c, list(AccessListMode::Allow, &[1]));
    let r = announce(&mut h, v4([10, 0, 0, 1], 1), |a| {
        a.hash = [2; 20];
        a.tid = 0xabcd;
    });
    assert_eq!(r.len(), 20);
    assert_eq!(
        (u32_at(&r, 0), u32_at(&r, 4), u32_at(&r, 8)),
        (1, 0xabcd, 86_400)
    );
    assert_eq!(h.counters.backoff_replies(BackoffReason::AccessDenied), 1);
    assert_eq!(h.counters.errors_sent(ErrorReason::AccessDenied), 0);
    assert_eq!(h.store_stats_v4_peers(), 0);
    // Unauthenticated: still silence.
    assert_eq!(
        call(&mut h, v4([10, 0, 0, 1], 1), &Ann::new(1, 2).bytes()),
        None
    );
}

#[test]
fn replies_carry_the_interval_in_force() {
    let mut h = handler();
    let r = announce(&mut h, v4([10, 0, 0, 1], 1), |_| {});
    assert_eq!(u32_at(&r, 8), 1800);
    h.shared().settings.interval.set(2400);
    let r = announce(&mut h, v4([10, 0, 0, 1], 1), |_| {});
    assert_eq!(u32_at(&r, 8), 2400);
}
