//! Stress tests on scoped threads with asserted invariants.
//!
//! * `owned_peers_*`: every thread owns its own peers (its own IP) in a few shared swarms with
//!   tiny tables, so each thread has an exact sequential model of them: every status it gets
//!   back is checked against the model, and at the end the stored set (address and seeder
//!   flag) must equal the union of the models: no peer lost, none duplicated.
//! * `swarm_churn_*`: the same with many swarms (12k–20k) that are emptied, freed by the
//!   cleaner and created again while the swarm maps grow, and 3 hot swarms that grow into big
//!   blocks; after a full clean only the non-empty swarms may remain.
//! * `completed_exact_*`: completions counted exactly once while the swarm's block migrates.
//! * `shared_peers_*`: all threads hammer the *same* few peers. Per peer, the statuses seen
//!   (Inserted / Removed) must alternate in some linearization, so across threads
//!   `#Inserted - #Removed` is 0 or 1 and equals the peer's final presence.
//! * Throughout both, a checker thread asserts that no counter (per swarm, global) is ever
//!   negative, and a cleaner thread runs `clean` (compaction, freeing of empty swarms) against
//!   the writers. At the end seeders + leechers equal the peers stored, per swarm and globally.
//!
//! Default sizes run in well under a second; `cargo test -p fjord-store --release --test
//! stress -- --ignored` runs the heavy variant (or set FJORD_STRESS_OPS).

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use fjord_store::{
    AnnounceEvent, AnnounceOutcome, NotStoredReason, PeerAddress, PeerStatus, PeerStore,
    StoreConfig,
};

const NOW: u32 = 50_000;

fn ops(default: usize) -> usize {
    std::env::var("FJORD_STRESS_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn swarm(k: u8) -> [u8; 20] {
    let mut h = [0xAB; 20];
    h[0] = k;
    h
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

trait Mk: PeerAddress + std::hash::Hash + Eq + std::fmt::Debug {
    fn mk(owner: u32, port: u16) -> Self;
    fn fam() -> usize;
}
impl Mk for SocketAddrV4 {
    fn mk(owner: u32, port: u16) -> Self {
        SocketAddrV4::new(Ipv4Addr::from(0x0a00_0000 + owner), port)
    }
    fn fam() -> usize {
        0
    }
}
impl Mk for SocketAddrV6 {
    fn mk(owner: u32, port: u16) -> Self {
        SocketAddrV6::new(
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, owner as u16),
            port,
            0,
            0,
        )
    }
    fn fam() -> usize {
        1
    }
}

/// Checker + cleaner threads that run until `stop`; the checker watches the swarms `watch`.
fn background<'s, A: Mk>(
    sc: &'s std::thread::Scope<'s, '_>,
    store: &'s PeerStore,
    watch: Vec<[u8; 20]>,
    stop: &'s AtomicBool,
) {
    sc.spawn(move || {
        let mut checks = 0u64;
        while !stop.load(Ordering::Relaxed) || checks == 0 {
            let r = store.raw_stats(A::fam());
            assert!(
                r.seeders >= 0 && r.leechers >= 0 && r.swarms >= 0,
                "negative global count {r:?}"
            );
            for ih in &watch {
                if let Some((s, l, _)) = store.raw_counts::<A>(ih) {
                    assert!(s >= 0 && l >= 0, "negative swarm count {s} {l}");
                }
            }
            checks += 1;
        }
    });
    sc.spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            store.clean(NOW, 16);
            std::thread::yield_now();
        }
    });
}

fn assert_counts_match<A: Mk>(store: &PeerStore) {
    let (_, peers, counted) = store.audit::<A>();
    assert_eq!(
        peers as i64, counted,
        "per-swarm seeders+leechers != stored peers"
    );
    let r = store.raw_stats(A::fam());
    assert_eq!(
        r.seeders + r.leechers,
        peers as i64,
        "global seeders+leechers != stored peers"
    );
}

/// Checks one announce of a thread-owned peer against the thread's model (status, reply
/// without the requester or duplicates), then updates the model.
fn check_owned<A: Mk, K: Copy + Eq + std::hash::Hash + std::fmt::Debug>(
    model: &mut HashMap<(K, u16), bool>,
    key: (K, u16),
    peer: A,
    stopping: bool,
    seeder: bool,
    o: &AnnounceOutcome,
    out: &[A],
) {
    let expect = match (stopping, model.contains_key(&key)) {
        (true, true) => PeerStatus::Removed,
        (true, false) => PeerStatus::NotStored(NotStoredReason::UnknownPeerStopped),
        (false, true) => PeerStatus::Updated,
        (false, false) => PeerStatus::Inserted,
    };
    assert_eq!(o.status, expect, "peer {peer:?} swarm {:?}", key.0);
    assert!(!out.contains(&peer), "requester handed out");
    assert_eq!(
        out.iter().collect::<HashSet<_>>().len(),
        out.len(),
        "duplicate in reply"
    );
    if stopping {
        model.remove(&key);
    } else {
        model.insert(key, seeder);
    }
}

/// Asserts that swarm `ih` stores exactly `want` (address → seeder), once each, and that its
/// counts agree.
fn check_swarm<A: Mk>(store: &PeerStore, ih: &[u8; 20], want: &HashMap<A, bool>) {
    let got_list = store.peers_of::<A>(ih).unwrap_or_default();
    let got: HashMap<A, bool> = got_list.iter().copied().collect();
    assert_eq!(
        got.len(),
        got_list.len(),
        "duplicate peer stored in swarm {ih:?}"
    );
    assert_eq!(&got, want, "stored set != model in swarm {ih:?}");
    if let Some((s, l, _)) = store.raw_counts::<A>(ih) {
        let seeders = want.values().filter(|s| **s).count() as i32;
        assert_eq!(
            (s, l),
            (seeders, want.len() as i32 - seeders),
            "swarm {ih:?} counts"
        );
    }
}

fn shared_peers<A: Mk>(threads: u32, ops_per_thread: usize, peers: u16, swarms: u8) {
    let store = PeerStore::new(StoreConfig::default());
    let stop = AtomicBool::new(false);
    let n = usize::from(peers) * usize::from(swarms);
    let balance: Vec<AtomicI64> = (0..n).map(|_| AtomicI64::new(0)).collect();
    std::thread::scope(|sc| {
        background::<A>(sc, &store, (0..swarms).map(swarm).collect(), &stop);
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (store, balance) = (&store, &balance);
                sc.spawn(move || {
                    let mut rng = Rng(0x51_7cc1_b727_220a + u64::from(t) * 104_729);
                    let mut out = Vec::new();
                    for _ in 0..ops_per_thread {
                        let x = rng.next();
                        let k = (x % u64::from(swarms)) as u8;
                        let port = 1 + ((x >> 8) % u64::from(peers)) as u16;
                        let ev = if (x >> 32).is_multiple_of(3) {
                            AnnounceEvent::Stopped
                        } else {
                            AnnounceEvent::Started
                        };
                        let o = store.announce(
                            &swarm(k),
                            A::mk(0, port),
                            ((x >> 40) % 2) as i64,
                            ev,
                            4,
                            NOW,
                            x,
                            &mut out,
                        );
                        let b =
                            &balance[usize::from(k) * usize::from(peers) + usize::from(port - 1)];
                        match o.status {
                            PeerStatus::Inserted => {
                                b.fetch_add(1, Ordering::Relaxed);
                            }
                            PeerStatus::Removed => {
                                b.fetch_sub(1, Ordering::Relaxed);
                            }
                            _ => {}
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        stop.store(true, Ordering::Relaxed);
    });
    for k in 0..swarms {
        let got_list = store.peers_of::<A>(&swarm(k)).unwrap_or_default();
        let got: HashSet<A> = got_list.iter().map(|p| p.0).collect();
        assert_eq!(
            got.len(),
            got_list.len(),
            "duplicate peer stored in swarm {k}"
        );
        for port in 1..=peers {
            let b = balance[usize::from(k) * usize::from(peers) + usize::from(port - 1)]
                .load(Ordering::Relaxed);
            let present = got.contains(&A::mk(0, port));
            assert_eq!(
                b,
                i64::from(present),
                "swarm {k} port {port}: inserted-removed = {b}, present = {present}"
            );
        }
    }
    assert_counts_match::<A>(&store);
}

/// Peers expire while they are refreshed: writers advance their clock, the cleaner expires
/// and frees swarms concurrently (kills racing inserts). At the end no peer is duplicated,
/// counts match the stored peers, and a final clean far in the future expires everything and
/// frees every swarm, with every counter back at exactly zero.
fn expiry_churn<A: Mk>(threads: u32, ops_per_thread: usize, peers: u16, swarms: u8) {
    let store = PeerStore::new(StoreConfig {
        peer_timeout_secs: 64,
        ..StoreConfig::default()
    });
    let stop = AtomicBool::new(false);
    let clock = std::sync::atomic::AtomicU32::new(NOW);
    std::thread::scope(|sc| {
        let (store_r, stop_r, clock_r) = (&store, &stop, &clock);
        sc.spawn(move || {
            while !stop_r.load(Ordering::Relaxed) {
                let r = store_r.raw_stats(A::fam());
                assert!(
                    r.seeders >= 0 && r.leechers >= 0 && r.swarms >= 0,
                    "negative global count {r:?}"
                );
                store_r.clean(clock_r.load(Ordering::Relaxed), 8);
            }
        });
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (store, clock) = (&store, &clock);
                sc.spawn(move || {
                    let mut rng = Rng(0x2545_f491_4f6c_dd1d + u64::from(t) * 31);
                    let mut out = Vec::new();
                    for i in 0..ops_per_thread {
                        let now = NOW + (i / 16) as u32;
                        clock.fetch_max(now, Ordering::Relaxed);
                        let x = rng.next();
                        let k = (x % u64::from(swarms)) as u8;
                        let port = 1 + ((x >> 8) % u64::from(peers)) as u16;
                        let ev = if (x >> 32).is_multiple_of(5) {
                            AnnounceEvent::Stopped
                        } else {
                            AnnounceEvent::None
                        };
                        store.announce(
                            &swarm(k),
                            A::mk(t, port),
                            ((x >> 40) % 2) as i64,
                            ev,
                            8,
                            now,
                            x,
                            &mut out,
                        );
                        assert_eq!(
                            out.iter().collect::<HashSet<_>>().len(),
                            out.len(),
                            "duplicate in reply"
                        );
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        stop.store(true, Ordering::Relaxed);
    });
    for k in 0..swarms {
        let list = store.peers_of::<A>(&swarm(k)).unwrap_or_default();
        assert_eq!(
            list.iter().map(|p| p.0).collect::<HashSet<_>>().len(),
            list.len(),
            "duplicate stored"
        );
    }
    assert_counts_match::<A>(&store);
    let far = clock.load(Ordering::Relaxed) + 1_000;
    while !store.clean(far, 1_000).cycle_complete {}
    store.clean(far, 1_000);
    let r = store.raw_stats(A::fam());
    assert_eq!(
        (r.swarms, r.seeders, r.leechers),
        (0, 0, 0),
        "everything expired and freed"
    );
    assert_eq!(store.audit::<A>(), (0, 0, 0));
}

fn swarm32(k: u32) -> [u8; 20] {
    let mut h = [0xCD; 20];
    h[..4].copy_from_slice(&k.to_le_bytes());
    h[4..8].copy_from_slice(&k.wrapping_mul(0x9e37_79b9).to_le_bytes());
    h
}

/// Every thread owns its peers (its own address) and keeps a model of them, so each announce's
/// status is known, and at the end each swarm must hold exactly the union of the models.
/// With `churn`, swarms are many, often emptied (3 in 8 announces stop), freed by the
/// concurrent cleaner and created again while the swarm maps grow, and a quarter of the
/// announces go to 3 hot swarms that grow into big blocks.
fn owned_peers<A: Mk>(threads: u32, ops_per_thread: usize, ports: u16, swarms: u32, churn: bool) {
    let store = PeerStore::new(StoreConfig::default());
    let stop = AtomicBool::new(false);
    let watch = (0..swarms.min(3)).map(swarm32).collect();
    let models: Vec<HashMap<(u32, u16), bool>> = std::thread::scope(|sc| {
        background::<A>(sc, &store, watch, &stop);
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let store = &store;
                sc.spawn(move || {
                    let mut rng = Rng(0x51ed_2701 + u64::from(t) * 104_729);
                    let mut model: HashMap<(u32, u16), bool> = HashMap::new();
                    let mut out = Vec::new();
                    for _ in 0..ops_per_thread {
                        let x = rng.next();
                        let k = if churn && x.is_multiple_of(4) {
                            ((x >> 4) % 3) as u32
                        } else {
                            ((x >> 4) % u64::from(swarms)) as u32
                        };
                        let port = 1 + ((x >> 24) % u64::from(ports)) as u16;
                        let peer = A::mk(t, port);
                        let seeder = (x >> 40).is_multiple_of(3);
                        let stopping = (x >> 44) % 8 < if churn { 3 } else { 2 };
                        let ev = if stopping {
                            AnnounceEvent::Stopped
                        } else {
                            AnnounceEvent::None
                        };
                        let left = if seeder { 0 } else { 7 };
                        let o = store.announce(&swarm32(k), peer, left, ev, 8, NOW, x, &mut out);
                        check_owned(&mut model, (k, port), peer, stopping, seeder, &o, &out);
                    }
                    model
                })
            })
            .collect();
        let models = workers.into_iter().map(|w| w.join().unwrap()).collect();
        stop.store(true, Ordering::Relaxed);
        models
    });
    let mut want: HashMap<u32, HashMap<A, bool>> = HashMap::new();
    for (t, m) in models.iter().enumerate() {
        for (&(k, port), &seeder) in m {
            want.entry(k)
                .or_default()
                .insert(A::mk(t as u32, port), seeder);
        }
    }
    let mut nonempty = 0;
    for k in 0..swarms {
        let w = want.remove(&k).unwrap_or_default();
        check_swarm(&store, &swarm32(k), &w);
        nonempty += usize::from(!w.is_empty());
    }
    assert_counts_match::<A>(&store);
    // Free every empty swarm, then the map must hold exactly the non-empty ones.
    while !store.clean(NOW, usize::MAX).cycle_complete {}
    store.clean(NOW, usize::MAX);
    assert_eq!(
        store.audit::<A>().0,
        nonempty,
        "empty swarms left after a full clean"
    );
    assert_eq!(store.raw_stats(A::fam()).swarms, nonempty as i64);
}

/// `completed` counts each leecher-to-seeder completion exactly once while the swarm's block
/// is migrated under the completing announces (the swarm never empties: an anchor stays).
fn completed_exact<A: Mk>(threads: u32, ops_per_thread: usize, ports: u16) {
    let store = PeerStore::new(StoreConfig::default());
    let mut out = Vec::new();
    let anchor = A::mk(9_999, 1);
    store.announce(
        &swarm32(7),
        anchor,
        0,
        AnnounceEvent::None,
        0,
        NOW,
        1,
        &mut out,
    );
    let counted: u32 = std::thread::scope(|sc| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let store = &store;
                sc.spawn(move || {
                    let mut rng = Rng(0x2545_f491 + u64::from(t) * 31);
                    // None = absent, Some(seeder)
                    let mut state: HashMap<u16, bool> = HashMap::new();
                    let mut counted = 0u32;
                    let mut out = Vec::new();
                    for _ in 0..ops_per_thread {
                        let x = rng.next();
                        let port = 1 + (x % u64::from(ports)) as u16;
                        let peer = A::mk(t, port);
                        let (ev, left) = match (x >> 20) % 4 {
                            0 => (AnnounceEvent::Stopped, 7),
                            1 => (AnnounceEvent::Completed, 0),
                            _ => (AnnounceEvent::None, 7),
                        };
                        store.announce(&swarm32(7), peer, left, ev, 0, NOW, x, &mut out);
                        match ev {
                            AnnounceEvent::Stopped => {
                                state.remove(&port);
                            }
                            AnnounceEvent::Completed => {
                                counted += u32::from(state.get(&port) != Some(&true));
                                state.insert(port, true);
                            }
                            _ => {
                                state.insert(port, false);
                            }
                        }
                    }
                    counted
                })
            })
            .collect();
        // Keep migrating the block while the workers run (clean compacts tombstones).
        let cleaner = sc.spawn(|| {
            for _ in 0..2_000 {
                store.clean(NOW, 4);
            }
        });
        cleaner.join().unwrap();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    let rows = {
        let mut v = Vec::new();
        store.scrape::<A>(&[swarm32(7)], &mut v);
        v
    };
    assert_eq!(
        rows[0].completed, counted,
        "completed counted exactly once each"
    );
    assert_counts_match::<A>(&store);
}

#[test]
fn swarm_churn_v4() {
    owned_peers::<SocketAddrV4>(3, ops(30_000), 6, 20_000, true);
}
#[test]
fn swarm_churn_v6() {
    owned_peers::<SocketAddrV6>(3, ops(20_000), 6, 12_000, true);
}
#[test]
fn completed_exact_v4() {
    completed_exact::<SocketAddrV4>(3, ops(20_000), 40);
}
#[test]
fn completed_exact_v6() {
    completed_exact::<SocketAddrV6>(3, ops(15_000), 40);
}

#[test]
fn expiry_churn_v4() {
    expiry_churn::<SocketAddrV4>(3, ops(4_000), 30, 4);
}
#[test]
fn expiry_churn_v6() {
    expiry_churn::<SocketAddrV6>(3, ops(3_000), 30, 4);
}

#[test]
fn owned_peers_v4() {
    owned_peers::<SocketAddrV4>(4, ops(4_000), 40, 3, false);
}
#[test]
fn owned_peers_v6() {
    owned_peers::<SocketAddrV6>(4, ops(3_000), 30, 3, false);
}
#[test]
fn shared_peers_v4() {
    shared_peers::<SocketAddrV4>(4, ops(4_000), 12, 2);
}
#[test]
fn shared_peers_v6() {
    shared_peers::<SocketAddrV6>(4, ops(3_000), 12, 2);
}

#[test]
#[ignore = "heavy: run with --release -- --ignored"]
fn heavy_stress() {
    let n = ops(300_000);
    owned_peers::<SocketAddrV4>(8, n, 500, 5, false);
    owned_peers::<SocketAddrV6>(8, n / 2, 300, 5, false);
    shared_peers::<SocketAddrV4>(8, n, 16, 3);
    shared_peers::<SocketAddrV6>(8, n / 2, 16, 3);
    expiry_churn::<SocketAddrV4>(8, n, 200, 8);
    expiry_churn::<SocketAddrV6>(8, n / 2, 200, 8);
    owned_peers::<SocketAddrV4>(8, n, 8, 100_000, true);
    owned_peers::<SocketAddrV6>(8, n / 2, 8, 50_000, true);
    completed_exact::<SocketAddrV4>(8, n, 200);
    completed_exact::<SocketAddrV6>(8, n / 2, 200);
}
