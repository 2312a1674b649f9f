//! `PeerStore::export` and `PeerStore::restore`: a store written out and read back into a
//! fresh one (another seed, another clock) holds the same swarms, peers, seeder flags,
//! completed counts and remaining lifetimes.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

use fjord_store::{AnnounceEvent, PeerAddress, PeerStore, StoreConfig};

type Swarms<A> = BTreeMap<[u8; 20], (u32, Vec<(A, bool, u32)>)>;

fn export<A: PeerAddress + Ord>(s: &PeerStore, now: u32) -> Swarms<A> {
    let mut out = BTreeMap::new();
    s.export::<A>(now, |ih, completed, peers| {
        let mut peers = peers.to_vec();
        peers.sort();
        assert!(
            out.insert(*ih, (completed, peers)).is_none(),
            "a swarm exported twice"
        );
    });
    out
}

fn config() -> StoreConfig {
    StoreConfig {
        peer_timeout_secs: 600,
        ..StoreConfig::default()
    }
}

#[test]
fn export_then_restore_keeps_swarms_peers_seeders_completed_and_ages() {
    let a = PeerStore::new(config());
    let t0 = 100_000;
    let mut out = Vec::new();
    for k in 0..300u32 {
        let ih = [
            (k % 97) as u8,
            (k % 7) as u8,
            3,
            3,
            3,
            3,
            3,
            3,
            3,
            3,
            3,
            3,
            3,
            3,
            3,
            3,
            3,
            3,
            3,
            3,
        ];
        let p = SocketAddrV4::new(Ipv4Addr::from(0x0a00_0000 + k), 6881);
        // Ages from 0 to 592 s, in 8-second steps; a third seeders, some completions.
        let when = t0 - 8 * (k % 75);
        let ev = if k % 5 == 0 {
            AnnounceEvent::Completed
        } else {
            AnnounceEvent::Started
        };
        a.announce(&ih, p, i64::from(k % 3 != 0), ev, 0, when, 0, &mut out);
        let p6 = SocketAddrV6::new(
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, k as u16),
            6881,
            0,
            0,
        );
        a.announce(
            &ih,
            p6,
            1,
            AnnounceEvent::Started,
            0,
            when,
            0,
            &mut Vec::new(),
        );
    }
    // A peer already expired at t0 is not exported.
    a.announce(
        &[200; 20],
        SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1),
        1,
        AnnounceEvent::Started,
        0,
        t0 - 700,
        0,
        &mut out,
    );
    let v4 = export::<SocketAddrV4>(&a, t0);
    let v6 = export::<SocketAddrV6>(&a, t0);
    assert!(!v4.contains_key(&[200; 20]));
    assert_eq!(v4.values().map(|s| s.1.len()).sum::<usize>(), 300);
    assert!(v4.values().any(|s| s.0 > 0), "completions exported");

    // A fresh store whose clock reads 50 (the new process's monotonic clock starts at 0).
    let b = PeerStore::new(config());
    let t1 = 50;
    for (ih, (completed, peers)) in &v4 {
        assert_eq!(b.restore(ih, *completed, peers, t1), peers.len());
    }
    for (ih, (completed, peers)) in &v6 {
        assert_eq!(b.restore(ih, *completed, peers, t1), peers.len());
    }
    assert_eq!(export::<SocketAddrV4>(&b, t1), v4);
    assert_eq!(export::<SocketAddrV6>(&b, t1), v6);
    for ih in v4.keys() {
        assert_eq!(
            b.scrape_one::<SocketAddrV4>(ih),
            a.scrape_one::<SocketAddrV4>(ih)
        );
    }
    // Remaining lifetimes carry over: 100 s later, the peers older than 500 s have expired.
    b.clean(t1 + 100, usize::MAX);
    let later = export::<SocketAddrV4>(&b, t1 + 100);
    let left: usize = later.values().map(|s| s.1.len()).sum();
    let expected = v4
        .values()
        .flat_map(|s| &s.1)
        .filter(|p| p.2 + 100 <= 600)
        .count();
    assert!(
        (expected..=expected + 30).contains(&left),
        "{left} left, {expected} expected"
    );
}

#[test]
fn restore_skips_peers_that_expired_while_down_and_respects_the_limits() {
    let b = PeerStore::new(StoreConfig {
        max_peers: 3,
        ..config()
    });
    let ih = [9; 20];
    let p = |i: u32| SocketAddrV4::new(Ipv4Addr::from(0x0a00_0000 + i), 6881);
    // Ages as the server passes them: age at export + time down.
    let peers = [
        (p(1), true, 10),
        (p(2), false, 700),
        (p(3), false, 0),
        (p(4), true, 5),
        (p(5), false, 1),
    ];
    assert_eq!(
        b.restore(&ih, 4, &peers, 1_000),
        3,
        "one expired, then the store is full"
    );
    assert_eq!(b.scrape_one::<SocketAddrV4>(&ih).completed, 4);
    // A swarm none of whose peers is fresh is not created (nor its completions kept).
    assert_eq!(b.restore(&[8; 20], 9, &[(p(9), false, 900)], 1_000), 0);
    assert_eq!(b.stats().v4.swarms, 1);
}
