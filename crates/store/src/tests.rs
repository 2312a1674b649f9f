//! Unit tests that need the store's insides: a preempted IPv6 inserter (stalled between its
//! reservation and its publication through a test hook) must not make anyone wait for it.

use std::net::{Ipv6Addr, SocketAddrV6};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::test_hooks::{self, Publisher};
use crate::{AnnounceEvent, PeerStatus, PeerStore, StoreConfig};

const NOW: u32 = 50_000;
const LIMIT: Duration = Duration::from_secs(20);

fn p6(i: u16) -> SocketAddrV6 {
    SocketAddrV6::new(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 1, i), 6881, 0, 0)
}

fn ann(s: &PeerStore, ih: &[u8; 20], p: SocketAddrV6, ev: AnnounceEvent) -> PeerStatus {
    s.announce(ih, p, 1, ev, 0, NOW, 0, &mut Vec::new()).status
}

/// Starts a thread that announces `p` to `ih` and stalls after `who` reserved a slot, until
/// the returned sender is dropped or sent to. Returns once the reservation is made.
fn stalled(
    who: Publisher,
    s: &Arc<PeerStore>,
    ih: [u8; 20],
    p: SocketAddrV6,
) -> (std::sync::mpsc::Sender<()>, JoinHandle<PeerStatus>) {
    let (reserved_tx, reserved_rx) = channel();
    let (release_tx, release_rx): (_, Receiver<()>) = channel();
    let s = Arc::clone(s);
    let t = std::thread::spawn(move || {
        test_hooks::arm_before_publish(who, move || {
            reserved_tx.send(()).unwrap();
            let _ = release_rx.recv();
        });
        ann(&s, &ih, p, AnnounceEvent::Started)
    });
    reserved_rx
        .recv_timeout(LIMIT)
        .expect("the inserter reached its reservation");
    (release_tx, t)
}

/// Runs `f` on a thread; fails if it has not returned within `LIMIT` (it would be waiting for
/// the stalled inserter, which is released only after `f` returns).
fn without_waiting<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let start = Instant::now();
        let v = f();
        let _ = tx.send((v, start.elapsed()));
    });
    let (v, took) = rx
        .recv_timeout(LIMIT)
        .unwrap_or_else(|_| panic!("{what} waited for the stalled thread"));
    eprintln!("{what}: {took:?} while the inserter was stalled");
    v
}

fn consistent(s: &PeerStore) -> usize {
    let (_, peers, counted) = s.audit::<SocketAddrV6>();
    assert_eq!(peers as i64, counted);
    let r = s.raw_stats(1);
    assert_eq!(r.seeders + r.leechers, peers as i64);
    peers
}

/// A second inserter of the same peer waits a few microseconds, then cancels the stalled
/// reservation by migrating the block, and stores the peer; a stop and a re-announce of it
/// go through too. The stalled thread, released, finds its slot frozen and updates the peer.
#[test]
fn same_peer_does_not_wait_for_a_stalled_inserter() {
    let s = Arc::new(PeerStore::new(StoreConfig::default()));
    let ih = [5; 20];
    for i in 0..3 {
        ann(&s, &ih, p6(i), AnnounceEvent::Started);
    }
    let (release, stalled) = stalled(Publisher::Inserter, &s, ih, p6(100));
    let s2 = Arc::clone(&s);
    without_waiting("insert, stop and insert of the same peer", move || {
        assert_eq!(
            ann(&s2, &ih, p6(100), AnnounceEvent::Started),
            PeerStatus::Inserted
        );
        assert_eq!(
            ann(&s2, &ih, p6(100), AnnounceEvent::Stopped),
            PeerStatus::Removed
        );
        assert_eq!(
            ann(&s2, &ih, p6(100), AnnounceEvent::Started),
            PeerStatus::Inserted
        );
    });
    release.send(()).unwrap();
    assert_eq!(stalled.join().unwrap(), PeerStatus::Updated);
    let peers = s.peers_of::<SocketAddrV6>(&ih).unwrap();
    assert_eq!(peers.iter().filter(|(p, _)| *p == p6(100)).count(), 1);
    assert_eq!(consistent(&s), 4);
}

/// A stop of the stalled peer does not wait (it linearizes before the insert), nor do the
/// growth of the swarm's block past the reservation, nor `clean`; the stalled insert then
/// lands in the newest block.
#[test]
fn migrations_stops_and_clean_do_not_wait_for_a_stalled_inserter() {
    let s = Arc::new(PeerStore::new(StoreConfig::default()));
    let ih = [6; 20];
    ann(&s, &ih, p6(0), AnnounceEvent::Started);
    let (release, stalled) = stalled(Publisher::Inserter, &s, ih, p6(100));
    let s2 = Arc::clone(&s);
    without_waiting("stop, 40 inserts (growth) and clean", move || {
        assert_eq!(
            ann(&s2, &ih, p6(100), AnnounceEvent::Stopped),
            PeerStatus::NotStored(crate::NotStoredReason::UnknownPeerStopped)
        );
        for i in 1..=40 {
            assert_eq!(
                ann(&s2, &ih, p6(i), AnnounceEvent::Started),
                PeerStatus::Inserted
            );
        }
        s2.clean(NOW, usize::MAX);
    });
    release.send(()).unwrap();
    assert_eq!(stalled.join().unwrap(), PeerStatus::Inserted);
    assert_eq!(consistent(&s), 42);
    assert!(
        s.peers_of::<SocketAddrV6>(&ih)
            .unwrap()
            .contains(&(p6(100), false))
    );
}

/// A migration whose copier stalls between reserving a slot in the successor and publishing
/// the copied peer: a fellow helper publishes that peer for it (same value, same address)
/// instead of waiting, finishes the copy and installs the successor.
#[test]
fn fellow_copiers_do_not_wait_for_a_stalled_copier() {
    let s = Arc::new(PeerStore::new(StoreConfig::default()));
    let ih = [7; 20];
    // A one-peer block is full: the next insert migrates it, and copies p6(0).
    ann(&s, &ih, p6(0), AnnounceEvent::Started);
    let (release, stalled) = stalled(Publisher::Copier, &s, ih, p6(100));
    let s2 = Arc::clone(&s);
    without_waiting("a second helper of the same migration", move || {
        assert_eq!(
            ann(&s2, &ih, p6(1), AnnounceEvent::Started),
            PeerStatus::Inserted
        );
        assert_eq!(
            ann(&s2, &ih, p6(0), AnnounceEvent::None),
            PeerStatus::Updated
        );
    });
    release.send(()).unwrap();
    assert_eq!(stalled.join().unwrap(), PeerStatus::Inserted);
    assert_eq!(consistent(&s), 3);
}
