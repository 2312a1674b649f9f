//! Loom model of the peer store's core races. Run with
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test -p fjord-store --release --test loom`.
//!
//! Under `cfg(loom)` the store uses loom's atomics (the `sync` module), one map shard of two
//! slots and one counter stripe; crossbeam-epoch is replaced by a shim that leaks retired
//! memory (loom cannot run crossbeam-epoch), so use-after-free is not modelled here: the
//! epoch argument is in docs/architecture.md.
#![cfg(loom)]

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

use fjord_store::{AnnounceEvent, PeerAddress, PeerStatus, PeerStore, StoreConfig};
use loom::sync::Arc;
use loom::thread;

const H: [u8; 20] = [3; 20];
const NOW: u32 = 80_000;

fn p4(i: u8) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, i), 6881)
}
fn p6(i: u8) -> SocketAddrV6 {
    SocketAddrV6::new(
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(i)),
        6881,
        0,
        0,
    )
}

fn store() -> Arc<PeerStore> {
    Arc::new(PeerStore::new(StoreConfig {
        peer_timeout_secs: 100,
        ..StoreConfig::default()
    }))
}

fn ann<A: PeerAddress>(s: &PeerStore, p: A, ev: AnnounceEvent, now: u32) -> PeerStatus {
    ann_in(s, &H, p, ev, now)
}

/// A leecher's announce (num_want 0) to swarm `ih`; its status.
fn ann_in<A: PeerAddress>(
    s: &PeerStore,
    ih: &[u8; 20],
    p: A,
    ev: AnnounceEvent,
    now: u32,
) -> PeerStatus {
    let mut out = Vec::new();
    s.announce(ih, p, 1, ev, 0, now, 0, &mut out).status
}

/// `loom::model`, with at most 2 preemptions for IPv6 (`fam` 1): its 3-word slots make the
/// executions of a model grow ~10x per preemption, and 3 would take CI over 15 minutes.
fn model(fam: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if fam == 1 {
        b.preemption_bound = Some(b.preemption_bound.map_or(2, |p| p.min(2)));
    }
    b.check(f);
}

fn consistent<A: PeerAddress>(s: &PeerStore, fam: usize) -> usize {
    let (_, peers, counted) = s.audit::<A>();
    assert_eq!(peers as i64, counted, "per-swarm counts != stored peers");
    let r = s.raw_stats(fam);
    assert_eq!(
        r.seeders + r.leechers,
        peers as i64,
        "global counts != stored peers"
    );
    peers
}

/// Two announces of the same new peer, in a swarm that does not exist yet: one swarm, one
/// peer, one Inserted.
#[test]
fn same_new_peer_twice() {
    loom::model(|| {
        let s = store();
        let s2 = s.clone();
        let t = thread::spawn(move || ann(&s2, p4(1), AnnounceEvent::Started, NOW));
        let a = ann(&s, p4(1), AnnounceEvent::Started, NOW);
        let b = t.join().unwrap();
        let mut st = [a, b];
        st.sort_by_key(|x| format!("{x:?}"));
        assert_eq!(st, [PeerStatus::Inserted, PeerStatus::Updated]);
        assert_eq!(s.peers_of::<SocketAddrV4>(&H).unwrap().len(), 1);
        assert_eq!(consistent::<SocketAddrV4>(&s, 0), 1);
        assert_eq!(s.stats().v4.swarms, 1);
    });
}

/// The IPv6 variant: reservation, address write and publication race with a second inserter
/// of the same peer (which waits on the reservation).
#[test]
fn same_new_peer_twice_v6() {
    loom::model(|| {
        let s = store();
        ann(&s, p6(9), AnnounceEvent::Started, NOW); // swarm exists, table of 1 is full
        let s2 = s.clone();
        let t = thread::spawn(move || ann(&s2, p6(1), AnnounceEvent::Started, NOW));
        let a = ann(&s, p6(1), AnnounceEvent::Started, NOW);
        let b = t.join().unwrap();
        assert!(matches!(
            (a, b),
            (PeerStatus::Inserted, PeerStatus::Updated)
                | (PeerStatus::Updated, PeerStatus::Inserted)
        ));
        assert_eq!(s.peers_of::<SocketAddrV6>(&H).unwrap().len(), 2);
        assert_eq!(consistent::<SocketAddrV6>(&s, 1), 2);
    });
}

/// Two inserts of different peers into a full table of one slot: both need a migration
/// (1 → 2 → 3 slots); neither peer, nor the old one, may be lost. (The IPv6 variant, where a
/// migration may freeze the other insert's reservation, ran over 15 minutes even at 2
/// preemptions; `clean_freeing_swarm_racing_insert_v6` and `same_new_peer_twice_v6` model that
/// cancellation, and the store's unit tests stall a real inserter there.)
fn inserts_racing_resize_in<A: PeerAddress + Ord + std::fmt::Debug>(p: fn(u8) -> A, fam: usize) {
    model(fam, move || {
        let s = store();
        ann(&s, p(1), AnnounceEvent::Started, NOW);
        let s2 = s.clone();
        let t = thread::spawn(move || ann(&s2, p(2), AnnounceEvent::Started, NOW));
        assert_eq!(
            ann(&s, p(3), AnnounceEvent::Started, NOW),
            PeerStatus::Inserted
        );
        assert_eq!(t.join().unwrap(), PeerStatus::Inserted);
        let mut got: Vec<_> = s
            .peers_of::<A>(&H)
            .unwrap()
            .into_iter()
            .map(|x| x.0)
            .collect();
        got.sort();
        assert_eq!(got, [p(1), p(2), p(3)]);
        assert_eq!(consistent::<A>(&s, fam), 3);
    });
}

#[test]
fn inserts_racing_resize() {
    inserts_racing_resize_in(p4, 0);
}

/// Stop racing a refresh of the same peer: the outcome must match one of the two orders.
#[test]
fn stop_racing_refresh() {
    loom::model(|| {
        let s = store();
        ann(&s, p4(1), AnnounceEvent::Started, NOW);
        ann(&s, p4(2), AnnounceEvent::Started, NOW);
        let s2 = s.clone();
        let t = thread::spawn(move || ann(&s2, p4(1), AnnounceEvent::Stopped, NOW));
        let refresh = ann(&s, p4(1), AnnounceEvent::None, NOW);
        let stop = t.join().unwrap();
        assert_eq!(stop, PeerStatus::Removed);
        let present = s
            .peers_of::<SocketAddrV4>(&H)
            .unwrap()
            .iter()
            .any(|p| p.0 == p4(1));
        match refresh {
            PeerStatus::Inserted => assert!(present, "refresh after stop must re-insert"),
            PeerStatus::Updated => assert!(!present, "stop after refresh must remove"),
            other => panic!("unexpected {other:?}"),
        }
        consistent::<SocketAddrV4>(&s, 0);
    });
}

/// clean() expires the only peer and frees the swarm while a new peer is inserted into it:
/// the new peer must end up stored (in the old swarm, migrated, or in a fresh one). For IPv6
/// the kill's freeze may cancel the insert's reservation, which then retries.
fn clean_freeing_swarm_racing_insert_in<A: PeerAddress + PartialEq + std::fmt::Debug>(
    p: fn(u8) -> A,
    fam: usize,
) {
    model(fam, move || {
        let s = store();
        ann(&s, p(1), AnnounceEvent::Started, NOW - 1_000); // expired at NOW
        let s2 = s.clone();
        let t = thread::spawn(move || s2.clean(NOW, 10));
        assert_eq!(
            ann(&s, p(2), AnnounceEvent::Started, NOW),
            PeerStatus::Inserted
        );
        let rep = t.join().unwrap();
        assert_eq!(rep.peers_expired, 1);
        let got: Vec<_> = s
            .peers_of::<A>(&H)
            .expect("swarm lost")
            .into_iter()
            .map(|x| x.0)
            .collect();
        assert_eq!(got, [p(2)]);
        assert_eq!(consistent::<A>(&s, fam), 1);
        let st = s.stats();
        assert_eq!(if fam == 0 { st.v4.swarms } else { st.v6.swarms }, 1);
        assert_eq!(s.audit::<A>().0, 1);
    });
}

#[test]
fn clean_freeing_swarm_racing_insert() {
    clean_freeing_swarm_racing_insert_in(p4, 0);
}

#[test]
fn clean_freeing_swarm_racing_insert_v6() {
    clean_freeing_swarm_racing_insert_in(p6, 1);
}

/// Two new swarms created concurrently in a swarm map that has to grow (one shard of two
/// slots under loom, one already used): no swarm and no peer may be lost, none duplicated.
#[test]
fn swarm_creation_racing_map_growth() {
    loom::model(|| {
        let s = store();
        ann_in(&s, &[1; 20], p4(1), AnnounceEvent::Started, NOW);
        let s2 = s.clone();
        let t = thread::spawn(move || ann_in(&s2, &[2; 20], p4(2), AnnounceEvent::Started, NOW));
        let a = ann_in(&s, &[3; 20], p4(3), AnnounceEvent::Started, NOW);
        assert_eq!(a, PeerStatus::Inserted);
        assert_eq!(t.join().unwrap(), PeerStatus::Inserted);
        for k in 1..=3u8 {
            let peers = s.peers_of::<SocketAddrV4>(&[k; 20]).expect("swarm lost");
            assert_eq!(peers.len(), 1);
            assert_eq!(peers[0].0, p4(k));
        }
        assert_eq!(s.audit::<SocketAddrV4>().0, 3);
        assert_eq!(s.stats().v4.swarms, 3);
        consistent::<SocketAddrV4>(&s, 0);
    });
}

/// A stop racing the migration that an insert starts (the 1-slot block is full): the stopper
/// helps the migration, then removes the peer from the successor while the inserter may still
/// be copying it there. The keyed tombstone must keep the late copy from resurrecting it.
#[test]
fn late_copier_does_not_resurrect() {
    loom::model(|| {
        let s = store();
        ann(&s, p4(1), AnnounceEvent::Started, NOW);
        let s2 = s.clone();
        let t = thread::spawn(move || ann(&s2, p4(2), AnnounceEvent::Started, NOW));
        assert_eq!(
            ann(&s, p4(1), AnnounceEvent::Stopped, NOW),
            PeerStatus::Removed
        );
        assert_eq!(t.join().unwrap(), PeerStatus::Inserted);
        let got: Vec<_> = s
            .peers_of::<SocketAddrV4>(&H)
            .unwrap()
            .into_iter()
            .map(|p| p.0)
            .collect();
        assert_eq!(got, [p4(2)]);
        assert_eq!(consistent::<SocketAddrV4>(&s, 0), 1);
    });
}

/// A completion racing the migration of its swarm's block (a second peer fills the 1-slot
/// block): the completion lands after the freeze of the old block's counter in some
/// interleavings and must then be counted in the successor, exactly once.
#[test]
fn completed_racing_migration() {
    loom::model(|| {
        let s = store();
        ann(&s, p4(1), AnnounceEvent::Started, NOW); // leecher; the block of 1 slot is full
        let s2 = s.clone();
        let t = thread::spawn(move || ann(&s2, p4(2), AnnounceEvent::Started, NOW));
        let mut out = Vec::new();
        let c = s.announce(&H, p4(1), 0, AnnounceEvent::Completed, 0, NOW, 0, &mut out);
        assert_eq!(c.status, PeerStatus::Updated);
        assert_eq!(t.join().unwrap(), PeerStatus::Inserted);
        let mut rows = Vec::new();
        s.scrape::<SocketAddrV4>(&[H], &mut rows);
        assert_eq!(
            (rows[0].seeders, rows[0].completed, rows[0].leechers),
            (1, 1, 1)
        );
        assert_eq!(s.stats().v4.completed, 1);
        assert_eq!(consistent::<SocketAddrV4>(&s, 0), 2);
    });
}

/// A swarm's block is replaced (its 1-slot block is full) while a new swarm makes the map
/// shard grow: the replacement must land in whichever map table is current, and the late
/// copy of the old entry must not bring the replaced block back.
#[test]
fn block_move_racing_map_growth() {
    loom::model(|| {
        let s = store();
        ann_in(&s, &[1; 20], p4(1), AnnounceEvent::Started, NOW);
        ann_in(&s, &[2; 20], p4(2), AnnounceEvent::Started, NOW);
        let s2 = s.clone();
        let t = thread::spawn(move || ann_in(&s2, &[1; 20], p4(9), AnnounceEvent::Started, NOW));
        let a = ann_in(&s, &[3; 20], p4(3), AnnounceEvent::Started, NOW);
        assert_eq!(a, PeerStatus::Inserted);
        assert_eq!(t.join().unwrap(), PeerStatus::Inserted);
        let mut one: Vec<_> = s
            .peers_of::<SocketAddrV4>(&[1; 20])
            .expect("swarm lost")
            .into_iter()
            .map(|p| p.0)
            .collect();
        one.sort();
        assert_eq!(one, [p4(1), p4(9)]);
        assert_eq!(s.peers_of::<SocketAddrV4>(&[3; 20]).unwrap().len(), 1);
        assert_eq!(s.audit::<SocketAddrV4>().0, 3);
        assert_eq!(s.stats().v4.swarms, 3);
        assert_eq!(consistent::<SocketAddrV4>(&s, 0), 4);
    });
}

/// clean() frees an empty swarm (its map entry becomes a corpse's tombstone) while a new
/// swarm makes the map shard grow: the freed swarm must stay gone (no late copy brings it
/// back), the others stay, and a later announce creates it afresh.
#[test]
fn swarm_free_racing_map_growth() {
    loom::model(|| {
        let s = store();
        ann_in(&s, &[1; 20], p4(1), AnnounceEvent::Started, NOW - 1_000);
        ann_in(&s, &[2; 20], p4(2), AnnounceEvent::Started, NOW);
        let s2 = s.clone();
        let t = thread::spawn(move || s2.clean(NOW, 10));
        let a = ann_in(&s, &[3; 20], p4(3), AnnounceEvent::Started, NOW);
        assert_eq!(a, PeerStatus::Inserted);
        let rep = t.join().unwrap();
        assert_eq!(rep.peers_expired, 1);
        // The clean may have stopped before freeing swarm 1 (its budget or a migration met
        // on the way); a second pass finishes it.
        s.clean(NOW, 10);
        assert!(
            s.peers_of::<SocketAddrV4>(&[1; 20]).is_none(),
            "freed swarm came back"
        );
        assert_eq!(s.audit::<SocketAddrV4>().0, 2);
        assert_eq!(s.stats().v4.swarms, 2);
        let o = ann_in(&s, &[1; 20], p4(5), AnnounceEvent::Started, NOW);
        assert_eq!(o, PeerStatus::Inserted);
        assert_eq!(s.audit::<SocketAddrV4>().0, 3);
        assert_eq!(consistent::<SocketAddrV4>(&s, 0), 3);
    });
}
