//! Unit tests of every announce/scrape/clean semantic, on small tables so that growth,
//! tombstones, compaction and expiry are exercised.

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

use fjord_store::{
    AnnounceEvent, IpFamily, NotStoredReason, PeerStatus, PeerStore, StoreConfig, SwarmCounts,
};

const H: [u8; 20] = [1; 20];
const T0: u32 = 10_000;

fn v4(i: u32) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(0x0a00_0000 + i), 6881)
}
fn v6(i: u32) -> SocketAddrV6 {
    SocketAddrV6::new(
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, (i >> 16) as u16, i as u16),
        6881,
        0,
        0,
    )
}
fn store() -> PeerStore {
    PeerStore::new(StoreConfig::default())
}
fn ann4(
    s: &PeerStore,
    p: SocketAddrV4,
    left: i64,
    ev: AnnounceEvent,
    nw: i32,
    now: u32,
    out: &mut Vec<SocketAddrV4>,
) -> fjord_store::AnnounceOutcome {
    s.announce(
        &H,
        p,
        left,
        ev,
        nw,
        now,
        0x1234_5678_9abc_def0 ^ u64::from(now),
        out,
    )
}
fn assert_consistent(s: &PeerStore) {
    let (_, peers4, counted4) = s.audit::<SocketAddrV4>();
    let (_, peers6, counted6) = s.audit::<SocketAddrV6>();
    assert_eq!(
        peers4 as i64, counted4,
        "v4 per-swarm counts vs stored peers"
    );
    assert_eq!(
        peers6 as i64, counted6,
        "v6 per-swarm counts vs stored peers"
    );
    let st = s.stats();
    assert_eq!(
        st.v4.seeders + st.v4.leechers,
        peers4 as u64,
        "v4 global counts"
    );
    assert_eq!(
        st.v6.seeders + st.v6.leechers,
        peers6 as u64,
        "v6 global counts"
    );
}

#[test]
fn insert_update_and_seeder_iff_left_zero() {
    let s = store();
    let mut out = Vec::new();
    let o = ann4(&s, v4(1), 500, AnnounceEvent::Started, 50, T0, &mut out);
    assert_eq!(
        o,
        fjord_store::AnnounceOutcome {
            seeders: 0,
            leechers: 1,
            status: PeerStatus::Inserted
        }
    );
    let o = ann4(&s, v4(2), 0, AnnounceEvent::Started, 50, T0, &mut out);
    assert_eq!(
        (o.seeders, o.leechers, o.status),
        (1, 1, PeerStatus::Inserted)
    );
    let o = ann4(&s, v4(1), 0, AnnounceEvent::None, 50, T0, &mut out);
    assert_eq!(
        (o.seeders, o.leechers, o.status),
        (2, 0, PeerStatus::Updated)
    );
    // Negative left (and huge left) are leechers and never panic.
    let o = ann4(&s, v4(1), -1, AnnounceEvent::None, 50, T0, &mut out);
    assert_eq!((o.seeders, o.leechers), (1, 1));
    let o = ann4(&s, v4(1), i64::MAX, AnnounceEvent::None, 50, T0, &mut out);
    assert_eq!((o.seeders, o.leechers), (1, 1));
    let peers = s.peers_of::<SocketAddrV4>(&H).unwrap();
    assert_eq!(peers.len(), 2);
    assert_consistent(&s);
}

#[test]
fn completed_counts_once_per_download() {
    let s = store();
    let mut out = Vec::new();
    let scrape = |s: &PeerStore| {
        let mut v = Vec::new();
        s.scrape::<SocketAddrV4>(&[H], &mut v);
        v[0].completed
    };
    ann4(&s, v4(1), 10, AnnounceEvent::Started, 0, T0, &mut out);
    assert_eq!(scrape(&s), 0);
    ann4(&s, v4(1), 0, AnnounceEvent::Completed, 0, T0, &mut out); // stored leecher completes
    assert_eq!(scrape(&s), 1);
    ann4(&s, v4(1), 0, AnnounceEvent::Completed, 0, T0, &mut out); // a seeder repeats it
    assert_eq!(scrape(&s), 1);
    ann4(&s, v4(2), 0, AnnounceEvent::Completed, 0, T0, &mut out); // unknown peer reports it
    assert_eq!(scrape(&s), 2);
    assert_eq!(s.stats().v4.completed, 2);
}

#[test]
fn stopped_removes_and_returns_no_peers() {
    let s = store();
    let mut out = Vec::new();
    for i in 1..=5 {
        ann4(&s, v4(i), 5, AnnounceEvent::Started, 0, T0, &mut out);
    }
    let o = ann4(&s, v4(3), 5, AnnounceEvent::Stopped, 50, T0, &mut out);
    assert_eq!((o.leechers, o.status), (4, PeerStatus::Removed));
    assert!(out.is_empty());
    let o = ann4(&s, v4(3), 5, AnnounceEvent::Stopped, 50, T0, &mut out);
    assert_eq!(
        (o.leechers, o.status),
        (
            4,
            PeerStatus::NotStored(NotStoredReason::UnknownPeerStopped)
        )
    );
    // Stop in an unknown swarm creates nothing.
    let o = s.announce(
        &[9; 20],
        v4(1),
        0,
        AnnounceEvent::Stopped,
        50,
        T0,
        1,
        &mut out,
    );
    assert_eq!(
        o.status,
        PeerStatus::NotStored(NotStoredReason::UnknownPeerStopped)
    );
    assert!(s.peers_of::<SocketAddrV4>(&[9; 20]).is_none());
    assert_eq!(s.stats().v4.swarms, 1);
    // Re-announce after stop re-inserts (the keyed tombstone is revived).
    let o = ann4(&s, v4(3), 0, AnnounceEvent::Started, 50, T0, &mut out);
    assert_eq!(
        (o.seeders, o.leechers, o.status),
        (1, 4, PeerStatus::Inserted)
    );
    assert_consistent(&s);
}

#[test]
fn port_zero_is_answered_but_never_stored() {
    let s = store();
    let mut out = Vec::new();
    let zero = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 99), 0);
    let o = ann4(&s, zero, 5, AnnounceEvent::Started, 50, T0, &mut out);
    assert_eq!(
        o.status,
        PeerStatus::NotStored(NotStoredReason::InvalidPort)
    );
    assert!(
        s.peers_of::<SocketAddrV4>(&H).is_none(),
        "no swarm created for port 0"
    );
    ann4(&s, v4(1), 5, AnnounceEvent::Started, 50, T0, &mut out);
    ann4(&s, v4(2), 0, AnnounceEvent::Started, 50, T0, &mut out);
    let o = ann4(&s, zero, 5, AnnounceEvent::Started, 50, T0, &mut out);
    assert_eq!(
        (o.seeders, o.leechers, o.status),
        (1, 1, PeerStatus::NotStored(NotStoredReason::InvalidPort))
    );
    assert_eq!(out.len(), 2);
    assert_eq!(s.peers_of::<SocketAddrV4>(&H).unwrap().len(), 2);
}

#[test]
fn selection_is_bounded_unique_and_excludes_requester() {
    let cfg = StoreConfig {
        default_num_want: 7,
        max_num_want_v4: 30,
        ..StoreConfig::default()
    };
    let s = PeerStore::new(cfg);
    let mut out = Vec::new();
    for i in 0..100 {
        ann4(
            &s,
            v4(i),
            1 + i64::from(i % 2),
            AnnounceEvent::Started,
            0,
            T0,
            &mut out,
        );
    }
    for (nw, expect) in [(10, 10), (-1, 7), (0, 0), (500, 30), (1, 1)] {
        for r in 0..20u64 {
            let o = s.announce(
                &H,
                v4(5),
                1,
                AnnounceEvent::None,
                nw,
                T0,
                r.wrapping_mul(0x9e37_79b9_7f4a_7c15),
                &mut out,
            );
            assert_eq!(o.status, PeerStatus::Updated);
            assert_eq!(out.len(), expect, "num_want {nw}");
            let set: HashSet<_> = out.iter().collect();
            assert_eq!(set.len(), out.len(), "duplicates");
            assert!(!out.contains(&v4(5)), "requester returned");
        }
    }
    // Different random values give different subsets.
    let mut seen = HashSet::new();
    for r in 0..50u64 {
        s.announce(
            &H,
            v4(5),
            1,
            AnnounceEvent::None,
            3,
            T0,
            r.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            &mut out,
        );
        seen.extend(out.iter().copied());
    }
    assert!(
        seen.len() > 30,
        "selection not random: {} distinct",
        seen.len()
    );
}

#[test]
fn seeders_get_leechers_only() {
    let s = store();
    let mut out = Vec::new();
    for i in 0..40 {
        ann4(
            &s,
            v4(i),
            if i < 30 { 0 } else { 9 },
            AnnounceEvent::Started,
            0,
            T0,
            &mut out,
        );
    }
    let leechers: HashSet<_> = (30..40).map(v4).collect();
    let o = s.announce(&H, v4(0), 0, AnnounceEvent::None, 50, T0, 77, &mut out);
    assert_eq!((o.seeders, o.leechers), (30, 10));
    assert_eq!(out.len(), 10);
    assert!(out.iter().all(|p| leechers.contains(p)));
    // A leecher gets both kinds.
    s.announce(&H, v4(35), 9, AnnounceEvent::None, 50, T0, 77, &mut out);
    assert_eq!(out.len(), 39);
}

/// From every start of the walk, a selection that may read the whole block (fewer peers than
/// wanted) hands out each selectable peer exactly once: every live, unexpired peer but the
/// requester, and for a seeder only leechers; never a stopped or an expired one. The walk tests
/// slots in runs (not across the block's end), so starts near the end and blocks whose size is
/// not a multiple of the run are where it could go wrong.
fn whole_walk_takes_each_selectable_peer_once<
    A: fjord_store::PeerAddress + Eq + std::hash::Hash + std::fmt::Debug,
>(
    addr: fn(u32) -> A,
) {
    let cfg = StoreConfig {
        peer_timeout_secs: 100,
        max_num_want_v4: 200,
        max_num_want_v6: 200,
        ..StoreConfig::default()
    };
    let s = PeerStore::new(cfg);
    let mut out = Vec::new();
    let left = |i: u32| if i.is_multiple_of(3) { 0 } else { 7 };
    // 0..20 announce early and expire; 20..70 stay; of those, every 7th stops.
    for i in 0..70 {
        let now = if i < 20 { T0 } else { T0 + 150 };
        s.announce(
            &H,
            addr(i),
            left(i),
            AnnounceEvent::Started,
            0,
            now,
            0,
            &mut out,
        );
    }
    for i in (20..70).step_by(7) {
        s.announce(
            &H,
            addr(i),
            left(i),
            AnnounceEvent::Stopped,
            0,
            T0 + 150,
            0,
            &mut out,
        );
    }
    let now = T0 + 200;
    let valid: Vec<u32> = (20..70u32)
        .filter(|i| !(i - 20).is_multiple_of(7))
        .collect();
    for requester in [21u32, 23] {
        let seeder = left(requester) == 0;
        let expect: HashSet<A> = valid
            .iter()
            .filter(|&&i| i != requester && !(seeder && left(i) == 0))
            .map(|&i| addr(i))
            .collect();
        for k in 0..256u64 {
            let random = (k << 56) | (k << 24);
            s.announce(
                &H,
                addr(requester),
                left(requester),
                AnnounceEvent::None,
                200,
                now,
                random,
                &mut out,
            );
            let got: HashSet<A> = out.iter().copied().collect();
            assert_eq!(got.len(), out.len(), "duplicates from start {k}");
            assert_eq!(
                got, expect,
                "requester {requester} (seeder {seeder}), start {k}"
            );
        }
    }
}

#[test]
fn whole_walk_takes_each_selectable_peer_once_v4() {
    whole_walk_takes_each_selectable_peer_once(v4);
}

#[test]
fn whole_walk_takes_each_selectable_peer_once_v6() {
    whole_walk_takes_each_selectable_peer_once(v6);
}

#[test]
fn expired_peers_are_never_handed_out_and_clean_frees_swarms() {
    let cfg = StoreConfig {
        peer_timeout_secs: 100,
        ..StoreConfig::default()
    };
    let s = PeerStore::new(cfg);
    let mut out = Vec::new();
    for i in 0..20 {
        ann4(&s, v4(i), 1, AnnounceEvent::Started, 0, T0, &mut out);
    }
    for i in 20..25 {
        ann4(&s, v4(i), 1, AnnounceEvent::Started, 0, T0 + 90, &mut out);
    }
    s.announce(
        &[2; 20],
        v4(1),
        1,
        AnnounceEvent::Started,
        0,
        T0,
        0,
        &mut out,
    );
    // At T0 + 150 the first 20 are expired (not yet cleaned): never returned.
    let o = s.announce(
        &H,
        v4(99),
        1,
        AnnounceEvent::Started,
        200,
        T0 + 150,
        5,
        &mut out,
    );
    assert_eq!(o.leechers, 26, "counts include expired peers until clean()");
    let got: HashSet<_> = out.iter().copied().collect();
    assert_eq!(got, (20..25).map(v4).collect::<HashSet<_>>());
    let rep = s.clean(T0 + 150, 1_000_000);
    assert_eq!(rep.peers_expired, 21);
    assert_eq!(rep.swarms_freed, 1, "the swarm [2;20] became empty");
    assert!(rep.cycle_complete);
    assert!(s.peers_of::<SocketAddrV4>(&[2; 20]).is_none());
    assert_eq!(s.peers_of::<SocketAddrV4>(&H).unwrap().len(), 6);
    assert_eq!(s.stats().v4.swarms, 1);
    assert_consistent(&s);
    // Everything expires; the last swarm is freed; a new announce recreates it.
    let rep = s.clean(T0 + 1_000, 1_000_000);
    assert_eq!((rep.peers_expired, rep.swarms_freed), (6, 1));
    assert_eq!(
        s.stats(),
        fjord_store::StoreStats {
            v4: fjord_store::FamilyStats {
                completed: 0,
                ..Default::default()
            },
            ..Default::default()
        }
    );
    let o = ann4(
        &s,
        v4(1),
        0,
        AnnounceEvent::Started,
        50,
        T0 + 1_000,
        &mut out,
    );
    assert_eq!((o.seeders, o.status), (1, PeerStatus::Inserted));
    assert_consistent(&s);
}

#[test]
fn clean_budget_and_cursor() {
    let s = store();
    let mut out = Vec::new();
    for k in 0..50u8 {
        s.announce(
            &[k; 20],
            v4(1),
            1,
            AnnounceEvent::Started,
            0,
            T0,
            0,
            &mut out,
        );
    }
    let mut visited = 0;
    let mut calls = 0;
    loop {
        let rep = s.clean(T0, 7);
        assert!(rep.swarms_visited <= 7);
        visited += rep.swarms_visited;
        calls += 1;
        if rep.cycle_complete {
            break;
        }
        assert!(calls < 100);
    }
    assert!((50..=57).contains(&visited), "visited {visited}");
    assert_eq!(s.stats().v4.swarms, 50, "nothing expired, nothing freed");
    // A zero budget visits only what the cycle deadline (300 s away) needs: 50 / 300 calls.
    let rep = s.clean(T0, 0);
    assert_eq!((rep.budget, rep.swarms_visited), (1, 1), "{rep:?}");
    // An unlimited budget visits every swarm exactly once, wherever the cursor is.
    s.clean(T0, 3);
    let rep = s.clean(T0, usize::MAX);
    assert_eq!(rep.swarms_visited, 50);
    assert!(rep.cycle_complete);
}

#[test]
fn store_full_and_swarm_limit_still_answer() {
    let cfg = StoreConfig {
        max_peers: 5,
        max_swarms: 2,
        ..StoreConfig::default()
    };
    let s = PeerStore::new(cfg);
    let mut out = Vec::new();
    for i in 0..5 {
        assert_eq!(
            ann4(&s, v4(i), 1, AnnounceEvent::Started, 0, T0, &mut out).status,
            PeerStatus::Inserted
        );
    }
    let o = ann4(&s, v4(9), 1, AnnounceEvent::Started, 50, T0, &mut out);
    assert_eq!(
        (o.leechers, o.status),
        (5, PeerStatus::NotStored(NotStoredReason::StoreFull))
    );
    assert_eq!(out.len(), 5, "a refused peer still gets peers");
    // Refresh of a stored peer still works when full.
    assert_eq!(
        ann4(&s, v4(1), 0, AnnounceEvent::None, 0, T0, &mut out).status,
        PeerStatus::Updated
    );
    ann4(&s, v4(4), 1, AnnounceEvent::Stopped, 0, T0, &mut out);
    assert_eq!(
        s.announce(
            &[3; 20],
            v4(1),
            1,
            AnnounceEvent::Started,
            0,
            T0,
            0,
            &mut out
        )
        .status,
        PeerStatus::Inserted
    );
    let o = s.announce(
        &[4; 20],
        v4(1),
        1,
        AnnounceEvent::Started,
        0,
        T0,
        0,
        &mut out,
    );
    assert_eq!(o.status, PeerStatus::NotStored(NotStoredReason::StoreFull));
    ann4(&s, v4(3), 1, AnnounceEvent::Stopped, 0, T0, &mut out);
    let o = s.announce(
        &[4; 20],
        v4(1),
        1,
        AnnounceEvent::Started,
        0,
        T0,
        0,
        &mut out,
    );
    assert_eq!(o.status, PeerStatus::NotStored(NotStoredReason::SwarmLimit));
    assert!(s.peers_of::<SocketAddrV4>(&[4; 20]).is_none());
    assert_consistent(&s);
}

#[test]
fn families_are_kept_apart() {
    let s = store();
    let mut o4 = Vec::new();
    let mut o6 = Vec::new();
    for i in 0..10 {
        s.announce(&H, v4(i), 1, AnnounceEvent::Started, 0, T0, 0, &mut o4);
    }
    for i in 0..3 {
        s.announce(&H, v6(i), 0, AnnounceEvent::Started, 0, T0, 0, &mut o6);
    }
    let o = s.announce(&H, v6(100), 1, AnnounceEvent::Started, 200, T0, 3, &mut o6);
    assert_eq!((o.seeders, o.leechers), (3, 1));
    assert_eq!(o6.len(), 3);
    assert!(o6.iter().all(|p| (0..3).map(v6).any(|q| q == *p)));
    let mut rows = Vec::new();
    s.scrape::<SocketAddrV4>(&[H], &mut rows);
    s.scrape::<SocketAddrV6>(&[H], &mut rows);
    assert_eq!(
        rows[0],
        SwarmCounts {
            seeders: 0,
            completed: 0,
            leechers: 10
        }
    );
    assert_eq!(
        rows[1],
        SwarmCounts {
            seeders: 3,
            completed: 0,
            leechers: 1
        }
    );
    let st = s.stats();
    assert_eq!(
        (st.v4.swarms, st.v4.leechers, st.v6.swarms, st.v6.seeders),
        (1, 10, 1, 3)
    );
}

#[test]
fn ipv6_cap_and_growth() {
    let s = store();
    let mut out = Vec::new();
    for i in 0..500 {
        // Same address, many ports too: the tag must not confuse them.
        let p = SocketAddrV6::new(*v6(i / 4).ip(), 1000 + (i % 4) as u16, 0, 0);
        assert_eq!(
            s.announce(&H, p, 1, AnnounceEvent::Started, 0, T0, 0, &mut out)
                .status,
            PeerStatus::Inserted
        );
    }
    let o = s.announce(&H, v6(9999), 1, AnnounceEvent::Started, -1, T0, 1, &mut out);
    assert_eq!(o.leechers, 501);
    assert_eq!(out.len(), 50);
    s.announce(&H, v6(9999), 1, AnnounceEvent::None, 1000, T0, 1, &mut out);
    assert_eq!(out.len(), 66, "IPv6 cap");
    let peers = s.peers_of::<SocketAddrV6>(&H).unwrap();
    assert_eq!(peers.iter().map(|p| p.0).collect::<HashSet<_>>().len(), 501);
    for i in 0..250 {
        let p = SocketAddrV6::new(*v6(i / 4).ip(), 1000 + (i % 4) as u16, 0, 0);
        assert_eq!(
            s.announce(&H, p, 1, AnnounceEvent::Stopped, 0, T0, 0, &mut out)
                .status,
            PeerStatus::Removed
        );
    }
    s.clean(T0, 10);
    assert_eq!(s.peers_of::<SocketAddrV6>(&H).unwrap().len(), 251);
    assert_consistent(&s);
}

#[test]
fn growth_churn_and_compaction_keep_every_peer() {
    let s = store();
    let mut out = Vec::new();
    let mut model = HashSet::new();
    // Deterministic churn over three swarms: inserts, stops, re-inserts, seeder flips.
    let mut x: u64 = 12345;
    for step in 0..20_000u32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let sw = [(x % 3) as u8; 20];
        let i = ((x >> 8) % 400) as u32;
        let stop = (x >> 20).is_multiple_of(3);
        let ev = if stop {
            AnnounceEvent::Stopped
        } else {
            AnnounceEvent::None
        };
        let o = s.announce(&sw, v4(i), ((x >> 30) % 2) as i64, ev, 5, T0, x, &mut out);
        let was = model.contains(&(sw[0], i));
        match (stop, was) {
            (true, true) => assert_eq!(o.status, PeerStatus::Removed),
            (true, false) => assert_eq!(
                o.status,
                PeerStatus::NotStored(NotStoredReason::UnknownPeerStopped)
            ),
            (false, true) => assert_eq!(o.status, PeerStatus::Updated),
            (false, false) => assert_eq!(o.status, PeerStatus::Inserted),
        }
        if stop {
            model.remove(&(sw[0], i));
        } else {
            model.insert((sw[0], i));
        }
        if step % 1000 == 0 {
            s.clean(T0, 100);
        }
    }
    for k in 0..3u8 {
        let got: HashSet<_> = s
            .peers_of::<SocketAddrV4>(&[k; 20])
            .unwrap_or_default()
            .into_iter()
            .map(|p| p.0)
            .collect();
        let want: HashSet<_> = model.iter().filter(|m| m.0 == k).map(|m| v4(m.1)).collect();
        assert_eq!(got, want, "swarm {k}");
    }
    assert_consistent(&s);
}

#[test]
fn scrape_keeps_order_duplicates_and_zeros() {
    let s = store();
    let mut out = Vec::new();
    s.announce(
        &[5; 20],
        v4(1),
        0,
        AnnounceEvent::Started,
        0,
        T0,
        0,
        &mut out,
    );
    s.announce(
        &[6; 20],
        v4(1),
        3,
        AnnounceEvent::Started,
        0,
        T0,
        0,
        &mut out,
    );
    let mut rows = vec![SwarmCounts {
        seeders: 9,
        completed: 9,
        leechers: 9,
    }];
    s.scrape::<SocketAddrV4>(&[[6; 20], [7; 20], [5; 20], [6; 20]], &mut rows);
    let l = SwarmCounts {
        seeders: 0,
        completed: 0,
        leechers: 1,
    };
    let z = SwarmCounts::default();
    let sd = SwarmCounts {
        seeders: 1,
        completed: 0,
        leechers: 0,
    };
    assert_eq!(
        rows[1..],
        [l, z, sd, l],
        "appended, in order, duplicates kept"
    );
    rows.clear();
    s.scrape::<SocketAddrV6>(&[[5; 20]], &mut rows);
    assert_eq!(rows, [z], "other family");
    assert_eq!(
        s.scrape_one::<SocketAddrV4>(&[6; 20]),
        l,
        "one hash, same row"
    );
    assert_eq!(s.scrape_one::<SocketAddrV4>(&[5; 20]), sd);
    assert_eq!(s.scrape_one::<SocketAddrV4>(&[7; 20]), z);
    assert_eq!(s.scrape_one::<SocketAddrV6>(&[5; 20]), z);
}

#[test]
fn many_swarms_grow_the_map() {
    let s = store();
    let mut out = Vec::new();
    for k in 0..20_000u32 {
        let mut ih = [0u8; 20];
        ih[..4].copy_from_slice(&k.to_le_bytes());
        s.announce(
            &ih,
            v4(k % 7),
            1,
            AnnounceEvent::Started,
            0,
            T0,
            0,
            &mut out,
        );
    }
    assert_eq!(s.stats().v4.swarms, 20_000);
    assert_eq!(s.audit::<SocketAddrV4>().0, 20_000);
    let rep = s.clean(T0 + 10_000, usize::MAX);
    assert_eq!((rep.peers_expired, rep.swarms_freed), (20_000, 20_000));
    assert_eq!(s.stats().v4.swarms, 0);
    assert_eq!(s.audit::<SocketAddrV4>().0, 0);
}

#[test]
fn clean_observed_reports_every_live_swarm_once_per_cycle() {
    let s = store();
    let mut out = Vec::new();
    for k in 1..=3u8 {
        for i in 0..u32::from(k) {
            s.announce(
                &[k; 20],
                v4(i),
                i64::from(i % 2),
                AnnounceEvent::Started,
                0,
                T0,
                0,
                &mut out,
            );
        }
    }
    s.announce(
        &[9; 20],
        v6(1),
        0,
        AnnounceEvent::Started,
        0,
        T0,
        0,
        &mut Vec::new(),
    );
    // One expired swarm, freed by this cycle: not reported.
    s.announce(
        &[7; 20],
        v4(1),
        1,
        AnnounceEvent::Started,
        0,
        T0 - 10_000,
        0,
        &mut out,
    );
    let mut seen = Vec::new();
    let rep = s.clean_observed(T0, usize::MAX, |sw| seen.push(*sw));
    assert!(rep.cycle_complete);
    assert_eq!(rep.swarms_freed, 1);
    seen.sort_by_key(|sw| sw.info_hash);
    let got: Vec<_> = seen
        .iter()
        .map(|sw| {
            (
                sw.info_hash[0],
                sw.family,
                sw.seeders,
                sw.leechers,
                sw.completed,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (1, IpFamily::V4, 1, 0, 0),
            (2, IpFamily::V4, 1, 1, 0),
            (3, IpFamily::V4, 2, 1, 0),
            (9, IpFamily::V6, 1, 0, 0),
        ]
    );
}

#[test]
fn staged_announces_under_one_pin_match_single_announces() {
    let (staged, single) = (store(), store());
    let (mut out, mut single_out) = (Vec::new(), Vec::new());
    let ops: Vec<([u8; 20], SocketAddrV4, i64, AnnounceEvent)> = (0..200u32)
        .map(|i| {
            let ev = [
                AnnounceEvent::Started,
                AnnounceEvent::None,
                AnnounceEvent::Stopped,
            ][(i % 7 % 3) as usize];
            ([(i % 13) as u8; 20], v4(i % 40), i64::from(i % 2), ev)
        })
        .collect();
    for batch in ops.chunks(32) {
        let pinned = staged.pin();
        let keys: Vec<_> = batch
            .iter()
            .map(|(ih, ..)| pinned.prefetch_map::<SocketAddrV4>(ih))
            .collect();
        for k in &keys {
            pinned.prefetch_block::<SocketAddrV4>(k);
        }
        // Swarms of up to 40 peers: big blocks, whose upsert and selection lines this stage
        // prefetches (it changes nothing, so the announces below are as single ones).
        for (k, (_, p, ..)) in keys.iter().zip(batch) {
            pinned.prefetch_peers(k, p, 1);
        }
        for (k, &(ih, p, left, ev)) in keys.iter().zip(batch) {
            assert_eq!(k.info_hash(), &ih);
            out.clear();
            let a = pinned.announce(k, p, left, ev, 50, T0, 1, &mut out);
            let b = single.announce(&ih, p, left, ev, 50, T0, 1, &mut single_out);
            assert_eq!(a, b);
            // Every swarm holds at most 40 peers and 50 are wanted, so both hand out the whole
            // swarm (in their own tables' order: the stores' seeds differ).
            out.sort_unstable();
            single_out.sort_unstable();
            assert_eq!(
                out, single_out,
                "the staged announce handed out other peers"
            );
        }
    }
    for k in 0..13u8 {
        assert_eq!(
            staged.scrape_one::<SocketAddrV4>(&[k; 20]),
            single.scrape_one::<SocketAddrV4>(&[k; 20])
        );
    }
    assert_consistent(&staged);
}
