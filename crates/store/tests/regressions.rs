//! Regression tests, each named after the issue that found the bug. Every one of them failed
//! before its fix.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use fjord_store::{AnnounceEvent, PeerStatus, PeerStore, StoreConfig, SwarmCounts};

fn v4(i: u32) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(0x0a00_0000 + i), 6881)
}

fn hash(i: u64) -> [u8; 20] {
    let mut h = [0u8; 20];
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5555;
    for b in h.iter_mut() {
        x ^= x >> 29;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        *b = (x >> 56) as u8;
    }
    h
}

fn ann(
    s: &PeerStore,
    ih: &[u8; 20],
    p: SocketAddrV4,
    left: i64,
    ev: AnnounceEvent,
    now: u32,
) -> PeerStatus {
    s.announce(ih, p, left, ev, 0, now, 0, &mut Vec::new())
        .status
}

fn scrape(s: &PeerStore, ih: &[u8; 20]) -> SwarmCounts {
    s.scrape_one::<SocketAddrV4>(ih)
}

/// Runs `f` on another thread and fails the test if it has not returned within `limit`
/// (the bug this guards against is an endless loop, which would otherwise hang the suite).
fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("{what} did not return within {limit:?}"))
}

/// Issue 10, bug 1: `clean` looped forever once the map shard holding its saved cursor had
/// migrated to a table smaller than the cursor's slot. Recipe from the issue: a burst of
/// 120k one-peer swarms expired in slices of 4,096 (the cursor ends high in some table), then
/// rounds of 500 short-lived swarms (announce + stop), each followed by a slice.
#[test]
fn issue10_clean_returns_after_cursor_shard_shrinks() {
    let s = Arc::new(PeerStore::new(StoreConfig {
        peer_timeout_secs: 60,
        ..StoreConfig::default()
    }));
    let t0 = 1_000;
    for i in 0..120_000 {
        assert_eq!(
            ann(&s, &hash(i), v4(1), 1, AnnounceEvent::Started, t0),
            PeerStatus::Inserted
        );
    }
    let t1 = t0 + 200;
    let mut freed = 0;
    // Fewer slices than a full cycle needs, so the cursor stops inside the walk.
    for _ in 0..20 {
        freed += s.clean(t1, 4_096).swarms_freed;
    }
    assert!(freed > 0);
    let s2 = Arc::clone(&s);
    within(Duration::from_secs(60), "clean", move || {
        let mut next = 1_000_000u64;
        for round in 0..200 {
            for _ in 0..500 {
                let ih = hash(next);
                next += 1;
                ann(&s2, &ih, v4(2), 1, AnnounceEvent::Started, t1);
                assert_eq!(
                    ann(&s2, &ih, v4(2), 1, AnnounceEvent::Stopped, t1),
                    PeerStatus::Removed
                );
            }
            let rep = s2.clean(t1, 4_096);
            assert!(rep.swarms_visited <= 500 * (round + 1) + 120_000, "{rep:?}");
        }
    });
    // Everything is expired or stopped: a few more slices empty the store.
    for _ in 0..200 {
        s.clean(t1 + 1_000, 4_096);
    }
    assert_eq!(s.stats().v4.swarms, 0);
}

/// Issue 10, bug 2: at the documented maximum `peer_timeout_secs` (32,760 s) a peer was never
/// expired (the window `timeout < age < 2^12 units` was empty) and was handed out forever.
#[test]
fn issue10_peers_expire_at_the_maximum_timeout() {
    let s = PeerStore::new(StoreConfig {
        peer_timeout_secs: 32_760,
        ..StoreConfig::default()
    });
    let ih = [7; 20];
    let t0 = 100_000;
    ann(&s, &ih, v4(1), 1, AnnounceEvent::Started, t0);
    let mut out = Vec::new();
    // Just inside the timeout: still handed out.
    s.announce(
        &ih,
        v4(2),
        1,
        AnnounceEvent::Started,
        50,
        t0 + 32_700,
        1,
        &mut out,
    );
    assert_eq!(out, [v4(1)]);
    // Past it: never handed out, and `clean` removes it.
    let late = t0 + 32_760 + 100;
    s.announce(&ih, v4(3), 1, AnnounceEvent::Started, 50, late, 1, &mut out);
    assert!(!out.contains(&v4(1)), "expired peer handed out: {out:?}");
    let rep = s.clean(late, usize::MAX);
    assert_eq!(rep.peers_expired, 1);
    assert_eq!(
        scrape(&s, &ih).leechers,
        2,
        "v4(2) and v4(3) are fresh at {late}"
    );
}

/// Issue 10, nit: a leecher repeating `completed` with `left > 0` was counted every time
/// (five announces gave `completed = 5`). A completion is now a peer reporting `completed`
/// with `left == 0` that was not already a stored seeder: at most once per download.
#[test]
fn issue10_completed_with_left_counts_once_per_peer() {
    let s = PeerStore::new(StoreConfig::default());
    let ih = [8; 20];
    ann(&s, &ih, v4(1), 10, AnnounceEvent::Started, 1_000);
    for _ in 0..5 {
        ann(&s, &ih, v4(1), 10, AnnounceEvent::Completed, 1_000);
    }
    assert_eq!(
        scrape(&s, &ih).completed,
        0,
        "left > 0 is not a finished download"
    );
    ann(&s, &ih, v4(2), 10, AnnounceEvent::Started, 1_000);
    for _ in 0..3 {
        ann(&s, &ih, v4(2), 0, AnnounceEvent::Completed, 1_000);
    }
    assert_eq!(scrape(&s, &ih).completed, 1);
    // An unknown peer reporting its finished download counts once too.
    for _ in 0..3 {
        ann(&s, &ih, v4(3), 0, AnnounceEvent::Completed, 1_000);
    }
    assert_eq!(scrape(&s, &ih).completed, 2);
}

/// Issue 10, time bomb 3: the clean cycle's length no longer depends on the caller's budget.
/// With a budget of one swarm per call, calls every second or every 40 s, every cycle of
/// 20,000 swarms still finishes within `clean_cycle_secs` plus one call interval; a call made
/// after a long pause finishes the overdue cycle at once.
#[test]
fn issue10_clean_cycle_is_bounded_whatever_the_budget() {
    for interval in [1u32, 40] {
        let s = PeerStore::new(StoreConfig {
            clean_cycle_secs: 120,
            ..StoreConfig::default()
        });
        for i in 0..20_000 {
            ann(&s, &hash(i), v4(1), 1, AnnounceEvent::Started, 1_000);
        }
        let mut now = 1_000;
        let mut cycles = Vec::new();
        while cycles.len() < 4 {
            now += interval;
            // Keep the peers fresh so nothing is freed: the walk stays 20,000 swarms long.
            if now % 600 < interval {
                for i in 0..20_000 {
                    ann(&s, &hash(i), v4(1), 1, AnnounceEvent::None, now);
                }
            }
            let rep = s.clean(now, 1);
            if let Some(c) = rep.cycle_secs {
                cycles.push(c);
            }
        }
        // The first cycle starts at the first call; every one ends within the bound.
        assert!(
            cycles.iter().all(|&c| c <= 120 + interval),
            "interval {interval}: {cycles:?}"
        );
        assert_eq!(s.clean_stats().cycles, 4);
        assert_eq!(s.clean_stats().last_cycle_secs, cycles.last().copied());
    }
    // A long pause: the next call walks to the end of the cycle, whatever its budget.
    let s = PeerStore::new(StoreConfig::default());
    for i in 0..5_000 {
        ann(&s, &hash(i), v4(1), 1, AnnounceEvent::Started, 1_000);
    }
    s.clean(1_000, 10);
    let rep = s.clean(1_000 + 3_600, 10);
    assert!(rep.cycle_complete && rep.overdue, "{rep:?}");
}

/// Issue 10, item 5: after a flood of one-peer swarms expires, the swarm-map tables shrink on
/// the cleaner's pass (before, their tombstones and corpses stayed until enough new swarms
/// arrived to push each table past 7/8).
#[test]
fn issue10_map_tables_shrink_after_a_swarm_flood() {
    let s = PeerStore::new(StoreConfig {
        peer_timeout_secs: 60,
        ..StoreConfig::default()
    });
    let (_, _, empty_map) = s.allocated_bytes::<SocketAddrV4>();
    for i in 0..200_000 {
        ann(&s, &hash(i), v4(1), 1, AnnounceEvent::Started, 1_000);
    }
    let (_, _, flooded) = s.allocated_bytes::<SocketAddrV4>();
    // Two full cycles: the first frees the swarms, the second finds the tables all tombstones.
    let mut shrunk = 0;
    for now in [2_000, 3_000] {
        let rep = s.clean(now, usize::MAX);
        shrunk += rep.maps_shrunk;
    }
    let (_, _, after) = s.allocated_bytes::<SocketAddrV4>();
    assert_eq!(s.stats().v4.swarms, 0);
    assert!(shrunk >= 1000, "{shrunk} shard tables rebuilt");
    assert!(
        after <= empty_map * 2 && after * 10 < flooded,
        "map bytes: empty {empty_map}, flooded {flooded}, after {after}"
    );
}
