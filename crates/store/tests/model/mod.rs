//! The store against a simple model, driven by arbitrary bytes: shared by the `store_ops`
//! fuzz target (fuzz/fuzz_targets/store_ops.rs) and the corpus replay in `cargo test`.
//!
//! The bytes pick a configuration (timeout, clean cycle, small limits) and then a sequence of
//! operations over four swarms and eight peers of each family: announces with every event,
//! seeder state and `num_want`, port 0, stops, clean slices with random budgets, scrapes and
//! clock steps (jumps included). After every step the store must agree with the model:
//! * every stored peer is in the model, with its seeder flag: none revived, invented or
//!   duplicated; every peer the model holds as clearly fresh is stored: none lost;
//! * announce and scrape counts equal the model's (expired peers count until cleaned);
//!   `completed` is exact; statuses are the model's (limits included);
//! * selections hold only fresh peers of the swarm, never the requester, leechers only for a
//!   seeder, and as many as the model allows;
//! * `clean` returns, and a departed peer is gone within timeout + 2 × (cycle + interval) + 8 s
//!   (two visits of a swarm are at most two cycles apart).
//!
//! Clean's partial walk is the one thing the model does not predict: after each clean the
//! model drops what the store dropped, once it has checked that the store was allowed to.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use fjord_store::{
    AnnounceEvent, NotStoredReason, PeerAddress, PeerStatus, PeerStore, StoreConfig,
};

/// The harness calls `clean` at least this often (the store's contract); larger clock jumps
/// are cut into steps of at most this, each followed by a slice.
pub const MAX_INTERVAL: u32 = 300;

struct Bytes<'a>(&'a [u8]);
impl Bytes<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
}

#[derive(Clone, Copy, Debug)]
struct PeerModel {
    last: u32,
    seeder: bool,
}

#[derive(Default, Debug)]
struct SwarmModel {
    peers: HashMap<u8, PeerModel>,
    completed: u32,
}

struct Harness {
    store: PeerStore,
    timeout: u32,
    cycle: u32,
    max_peers: usize,
    max_swarms: usize,
    now: u32,
    last_clean: u32,
    /// (family 0/1, swarm) -> model.
    swarms: HashMap<(u8, u8), SwarmModel>,
    completed_total: u64,
}

fn info_hash(k: u8) -> [u8; 20] {
    let mut h = [k.wrapping_mul(37) ^ 0x5a; 20];
    h[0] = k;
    h
}

fn peer(fam: u8, p: u8) -> SocketAddr {
    // Peers 0 and 1 share an address (other ports), so keys differ by port only.
    let host = if p <= 1 { 1 } else { p };
    let port = 6881 + u16::from(p & 1) + u16::from(p >= 2) * 10;
    if fam == 0 {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, host), port))
    } else {
        SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 7, u16::from(host)),
            port,
            0,
            0,
        ))
    }
}

fn peer_index(fam: u8, a: SocketAddr) -> u8 {
    (0..8)
        .find(|&p| peer(fam, p) == a)
        .unwrap_or_else(|| panic!("the store handed out {a}, which no announce stored"))
}

impl Harness {
    fn new(b: &mut Bytes<'_>) -> Harness {
        let c = b.byte().unwrap_or(0);
        let timeout =
            [60, 300, 2_700, 20_000, fjord_store::MAX_PEER_TIMEOUT_SECS][usize::from(c % 5)];
        let cycle = [30, 300, 3_600, u32::MAX][usize::from((c >> 3) % 4)];
        let limits = b.byte().unwrap_or(0);
        let max_peers = [1_000, 3, 9][usize::from(limits % 3)];
        let max_swarms = [1_000, 2, 5][usize::from((limits >> 2) % 3)];
        let config = StoreConfig {
            peer_timeout_secs: timeout,
            clean_cycle_secs: cycle,
            max_peers,
            max_swarms,
            ..StoreConfig::default()
        };
        let cycle = config.clean_cycle_secs.min(config.max_clean_cycle_secs());
        Harness {
            store: PeerStore::new(config),
            timeout,
            cycle,
            max_peers,
            max_swarms,
            now: 10_000,
            last_clean: 10_000,
            swarms: HashMap::new(),
            completed_total: 0,
        }
    }

    /// Clearly fresh: the store cannot have expired it (8-second stamps).
    fn fresh(&self, p: &PeerModel) -> bool {
        self.now - p.last + 8 <= self.timeout
    }
    /// Possibly fresh: the store may still hand it out.
    fn maybe_fresh(&self, p: &PeerModel) -> bool {
        self.now - p.last < self.timeout + 8
    }
    fn peer_count(&self) -> usize {
        self.swarms.values().map(|s| s.peers.len()).sum()
    }

    fn announce(&mut self, b: &mut Bytes<'_>) -> Option<()> {
        let x = b.byte()?;
        let y = b.byte()?;
        let (fam, k, p) = (x & 1, (x >> 1) & 3, (x >> 3) & 7);
        let left = [0i64, 1, i64::MAX, -1][usize::from(y & 3)];
        let event = [
            AnnounceEvent::None,
            AnnounceEvent::Started,
            AnnounceEvent::Completed,
            AnnounceEvent::Stopped,
        ][usize::from((y >> 2) & 3)];
        let num_want = [-1, 0, 1, 2, 5, 300, 3, 7][usize::from((y >> 4) & 7)];
        let port0 = y >> 7 == 1 && event != AnnounceEvent::Stopped && p == 7;
        let random = u64::from(b.byte().unwrap_or(0)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let ih = info_hash(k);
        let addr = if port0 {
            let mut a = peer(fam, p);
            a.set_port(0);
            a
        } else {
            peer(fam, p)
        };
        let (status, seeders, leechers, out): (_, _, _, Vec<SocketAddr>) = match addr {
            SocketAddr::V4(a) => self.call(&ih, a, left, event, num_want, random),
            SocketAddr::V6(a) => self.call(&ih, a, left, event, num_want, random),
        };
        let seeder = left == 0;
        let key = (fam, k);
        // The status the model expects, and the model's update.
        let exists = self.swarms.contains_key(&key);
        let present = self.swarms.get(&key).and_then(|s| s.peers.get(&p)).copied();
        let expected = if event == AnnounceEvent::Stopped {
            match present {
                Some(_) => {
                    self.swarms.get_mut(&key)?.peers.remove(&p);
                    PeerStatus::Removed
                }
                None => PeerStatus::NotStored(NotStoredReason::UnknownPeerStopped),
            }
        } else if port0 {
            PeerStatus::NotStored(NotStoredReason::InvalidPort)
        } else if let Some(was) = present {
            let done = event == AnnounceEvent::Completed && seeder && !was.seeder;
            self.store_peer(key, p, seeder, done);
            PeerStatus::Updated
        } else if !exists && self.peer_count() >= self.max_peers {
            PeerStatus::NotStored(NotStoredReason::StoreFull)
        } else if !exists && self.swarms.len() >= self.max_swarms {
            PeerStatus::NotStored(NotStoredReason::SwarmLimit)
        } else if self.peer_count() >= self.max_peers {
            PeerStatus::NotStored(NotStoredReason::StoreFull)
        } else {
            self.store_peer(key, p, seeder, event == AnnounceEvent::Completed && seeder);
            PeerStatus::Inserted
        };
        assert_eq!(
            status, expected,
            "announce {fam}/{k}/{p} {event:?} left {left}"
        );
        // Counts (expired peers count until cleaned) and the selection.
        let Some(sw) = self.swarms.get(&key) else {
            assert_eq!((seeders, leechers), (0, 0));
            assert!(out.is_empty());
            return Some(());
        };
        let s = sw.peers.values().filter(|q| q.seeder).count() as u32;
        assert_eq!(
            (seeders, leechers),
            (s, sw.peers.len() as u32 - s),
            "counts of {fam}/{k}"
        );
        if event == AnnounceEvent::Stopped {
            assert!(out.is_empty(), "a stop gets no peers");
            return Some(());
        }
        // The requester is left out; with port 0 it is no stored peer (its address differs).
        let me = (!port0).then_some(p);
        let eligible = |q: u8, m: &PeerModel| Some(q) != me && !(seeder && m.seeder);
        let mut seen = Vec::new();
        for a in &out {
            let q = peer_index(fam, *a);
            let m = sw
                .peers
                .get(&q)
                .unwrap_or_else(|| panic!("{a} handed out but not stored"));
            assert!(
                eligible(q, m),
                "{a} is the requester or a seeder for a seeder"
            );
            assert!(
                self.maybe_fresh(m),
                "stale peer {a} handed out (last {}, now {})",
                m.last,
                self.now
            );
            assert!(!seen.contains(&q), "{a} handed out twice");
            seen.push(q);
        }
        let want = if num_want < 0 { 50 } else { num_want as usize };
        let lo = sw
            .peers
            .iter()
            .filter(|(q, m)| eligible(**q, m) && self.fresh(m))
            .count();
        let hi = sw
            .peers
            .iter()
            .filter(|(q, m)| eligible(**q, m) && self.maybe_fresh(m))
            .count();
        assert!(
            (want.min(lo)..=want.min(hi)).contains(&out.len()),
            "{} peers handed out, {lo}..={hi} eligible, {want} wanted",
            out.len()
        );
        Some(())
    }

    /// The model's side of a stored announce: the peer heard from now, with its flag, and a
    /// completion if `completed`.
    fn store_peer(&mut self, key: (u8, u8), p: u8, seeder: bool, completed: bool) {
        let sw = self.swarms.entry(key).or_default();
        if completed {
            sw.completed += 1;
            self.completed_total += 1;
        }
        let last = self.now;
        sw.peers.insert(p, PeerModel { last, seeder });
    }

    fn call<A: PeerAddress + Into<SocketAddr>>(
        &self,
        ih: &[u8; 20],
        a: A,
        left: i64,
        event: AnnounceEvent,
        num_want: i32,
        random: u64,
    ) -> (PeerStatus, u32, u32, Vec<SocketAddr>) {
        let mut out = Vec::new();
        let o = self
            .store
            .announce(ih, a, left, event, num_want, self.now, random, &mut out);
        (
            o.status,
            o.seeders,
            o.leechers,
            out.into_iter().map(Into::into).collect(),
        )
    }

    fn clean(&mut self, budget: usize) {
        self.store.clean(self.now, budget);
        self.last_clean = self.now;
        // Drop from the model what the store was allowed to drop and did.
        let keys: Vec<_> = self.swarms.keys().copied().collect();
        for key in keys {
            let stored = self.stored(key);
            let sw = &self.swarms[&key];
            match stored {
                None => {
                    for (q, m) in &sw.peers {
                        assert!(!self.fresh(m), "swarm {key:?} freed with fresh peer {q}");
                    }
                    self.swarms.remove(&key);
                }
                Some(peers) => {
                    let gone: Vec<u8> = sw
                        .peers
                        .keys()
                        .copied()
                        .filter(|q| !peers.iter().any(|(x, _)| x == q))
                        .collect();
                    for q in &gone {
                        assert!(!self.fresh(&sw.peers[q]), "fresh peer {q} of {key:?} lost");
                    }
                    let sw = self.swarms.get_mut(&key).expect("swarm");
                    for q in gone {
                        sw.peers.remove(&q);
                    }
                }
            }
        }
    }

    /// The stored peers of a swarm as (index, seeder), `None` if the swarm does not exist.
    fn stored(&self, (fam, k): (u8, u8)) -> Option<Vec<(u8, bool)>> {
        let ih = info_hash(k);
        let peers: Vec<(SocketAddr, bool)> = if fam == 0 {
            let v = self.store.peers_of::<SocketAddrV4>(&ih)?;
            v.into_iter().map(|(a, s)| (a.into(), s)).collect()
        } else {
            let v = self.store.peers_of::<SocketAddrV6>(&ih)?;
            v.into_iter().map(|(a, s)| (a.into(), s)).collect()
        };
        Some(
            peers
                .into_iter()
                .map(|(a, s)| (peer_index(fam, a), s))
                .collect(),
        )
    }

    fn advance(&mut self, secs: u32) {
        let target = self.now + secs;
        while self.now < target {
            let step = (target - self.now).min(MAX_INTERVAL - (self.now - self.last_clean));
            self.now += step;
            if self.now - self.last_clean >= MAX_INTERVAL {
                self.clean(0);
            }
        }
    }

    /// The store equals the model, swarm by swarm and in its global counters; with `audit`,
    /// also per-swarm counters against a walk of every shard (slow: 2,048 shard tables).
    fn check(&self, audit: bool) {
        for fam in 0..2u8 {
            for k in 0..4u8 {
                let key = (fam, k);
                let stored = self.stored(key);
                let Some(sw) = self.swarms.get(&key) else {
                    assert!(stored.is_none(), "swarm {key:?} exists in the store only");
                    continue;
                };
                let mut stored = stored.unwrap_or_else(|| panic!("swarm {key:?} lost"));
                stored.sort();
                let mut model: Vec<(u8, bool)> =
                    sw.peers.iter().map(|(q, m)| (*q, m.seeder)).collect();
                model.sort();
                assert_eq!(stored, model, "peers of swarm {key:?}");
                for (q, m) in &sw.peers {
                    assert!(
                        self.now - m.last <= self.timeout + 8 + 2 * (self.cycle + MAX_INTERVAL),
                        "departed peer {q} of {key:?} still stored (last {}, now {}; timeout {}, cycle {}, {:?})",
                        m.last,
                        self.now,
                        self.timeout,
                        self.cycle,
                        self.store.clean_stats()
                    );
                }
                let row = if fam == 0 {
                    self.store.scrape_one::<SocketAddrV4>(&info_hash(k))
                } else {
                    self.store.scrape_one::<SocketAddrV6>(&info_hash(k))
                };
                let s = sw.peers.values().filter(|m| m.seeder).count() as u32;
                assert_eq!(
                    (row.seeders, row.leechers, row.completed),
                    (s, sw.peers.len() as u32 - s, sw.completed),
                    "scrape of {key:?}"
                );
            }
        }
        let st = self.store.stats();
        let stored = st.v4.seeders + st.v4.leechers + st.v6.seeders + st.v6.leechers;
        assert_eq!(stored as usize, self.peer_count(), "global peer counters");
        assert_eq!(
            (st.v4.swarms + st.v6.swarms) as usize,
            self.swarms.len(),
            "swarm counters"
        );
        assert_eq!(st.v4.completed + st.v6.completed, self.completed_total);
        if audit {
            let (sw4, peers4, counted4) = self.store.audit::<SocketAddrV4>();
            let (sw6, peers6, counted6) = self.store.audit::<SocketAddrV6>();
            assert_eq!((peers4 as i64, peers6 as i64), (counted4, counted6));
            assert_eq!(sw4 + sw6, self.swarms.len(), "swarms found by a walk");
        }
    }
}

/// Runs the operations `data` encodes and checks the store against the model after each.
pub fn store_ops(data: &[u8]) {
    let mut b = Bytes(data);
    let mut h = Harness::new(&mut b);
    let mut ops = 0u32;
    while let Some(op) = b.byte() {
        ops += 1;
        match op % 8 {
            0..=3 => {
                if h.announce(&mut b).is_none() {
                    break;
                }
            }
            4 => {
                let budget = [0, 1, 3, usize::MAX][usize::from((op >> 3) & 3)];
                h.clean(budget);
            }
            5 | 6 => {
                let d = u32::from(b.byte().unwrap_or(0));
                // Small steps, or jumps of up to ~4 hours (cut into clean intervals; the
                // stamps wrap after 18.2 h of such steps).
                let secs = if op & 0x80 == 0 { d } else { d * 60 };
                h.advance(secs);
            }
            _ => {
                // A full cycle now: the store must then hold no expired peer at all.
                h.clean(usize::MAX);
                for sw in h.swarms.values() {
                    for m in sw.peers.values() {
                        assert!(h.maybe_fresh(m), "an expired peer survived a full clean");
                    }
                }
            }
        }
        h.check(ops.is_multiple_of(16));
    }
    h.check(true);
}
