//! TEMPORARY stand-in for `fjord-store` with its announced API (a mutex around a map), used only
//! until the real lock-free store lands. Not for production.
#![allow(missing_docs, dead_code)]

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{SocketAddrV4, SocketAddrV6};

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub max_peers: usize,
    pub max_swarms: usize,
    pub peer_timeout_secs: u32,
    pub default_num_want: usize,
    pub max_num_want_v4: usize,
    pub max_num_want_v6: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    None,
    Started,
    Completed,
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStoredReason {
    StoreFull,
    SwarmLimit,
    InvalidPort,
    UnknownPeerStopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerStatus {
    Inserted,
    Updated,
    Removed,
    NotStored(NotStoredReason),
}

#[derive(Debug, Clone, Copy)]
pub struct AnnounceOutcome {
    pub seeders: u32,
    pub leechers: u32,
    pub status: PeerStatus,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SwarmCounts {
    pub seeders: u32,
    pub completed: u32,
    pub leechers: u32,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct CleanReport {
    pub removed: usize,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct FamilyStats {
    pub swarms: u64,
    pub seeders: u64,
    pub leechers: u64,
    pub completed: u64,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct StoreStats {
    pub v4: FamilyStats,
    pub v6: FamilyStats,
}

pub trait PeerAddress: Copy + Eq + Hash + Send + std::fmt::Debug + 'static {
    const IS_V6: bool;
    fn port(&self) -> u16;
    fn wrap(self) -> Addr;
    fn unwrap(a: Addr) -> Option<Self>;
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Addr {
    V4(SocketAddrV4),
    V6(SocketAddrV6),
}

impl PeerAddress for SocketAddrV4 {
    const IS_V6: bool = false;
    fn port(&self) -> u16 {
        SocketAddrV4::port(self)
    }
    fn wrap(self) -> Addr {
        Addr::V4(self)
    }
    fn unwrap(a: Addr) -> Option<Self> {
        if let Addr::V4(a) = a { Some(a) } else { None }
    }
}

impl PeerAddress for SocketAddrV6 {
    const IS_V6: bool = true;
    fn port(&self) -> u16 {
        SocketAddrV6::port(self)
    }
    fn wrap(self) -> Addr {
        Addr::V6(self)
    }
    fn unwrap(a: Addr) -> Option<Self> {
        if let Addr::V6(a) = a { Some(a) } else { None }
    }
}

#[derive(Default)]
struct Swarm {
    peers: HashMap<Addr, (bool, u32)>,
    completed: u32,
}

#[derive(Debug)]
pub struct PeerStore {
    config: StoreConfig,
    inner: parking_lot::Mutex<HashMap<(bool, [u8; 20]), SwarmDbg>>,
}

#[derive(Default)]
struct SwarmDbg(Swarm);
impl std::fmt::Debug for SwarmDbg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Swarm")
    }
}

impl PeerStore {
    pub fn new(config: StoreConfig) -> Self {
        PeerStore {
            config,
            inner: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn announce<A: PeerAddress>(
        &self,
        info_hash: &[u8; 20],
        peer: A,
        left: i64,
        event: Event,
        num_want: i32,
        now_secs: u32,
        random: u64,
        out: &mut Vec<A>,
    ) -> AnnounceOutcome {
        let mut g = self.inner.lock();
        let total: usize = g.values().map(|s| s.0.peers.len()).sum();
        let nswarms = g.len();
        let key = (A::IS_V6, *info_hash);
        let counts = |s: &Swarm| {
            let seeders = s.peers.values().filter(|p| p.0).count() as u32;
            (seeders, s.peers.len() as u32 - seeders)
        };
        let status = if peer.port() == 0 {
            PeerStatus::NotStored(NotStoredReason::InvalidPort)
        } else if event == Event::Stopped {
            match g.get_mut(&key).and_then(|s| s.0.peers.remove(&peer.wrap())) {
                Some(_) => PeerStatus::Removed,
                None => PeerStatus::NotStored(NotStoredReason::UnknownPeerStopped),
            }
        } else if !g.contains_key(&key) && nswarms >= self.config.max_swarms {
            PeerStatus::NotStored(NotStoredReason::SwarmLimit)
        } else {
            let s = &mut g.entry(key).or_default().0;
            if event == Event::Completed {
                s.completed += 1;
            }
            if let Some(p) = s.peers.get_mut(&peer.wrap()) {
                *p = (left == 0, now_secs);
                PeerStatus::Updated
            } else if total >= self.config.max_peers {
                PeerStatus::NotStored(NotStoredReason::StoreFull)
            } else {
                s.peers.insert(peer.wrap(), (left == 0, now_secs));
                PeerStatus::Inserted
            }
        };
        let (seeders, leechers) = g.get(&key).map(|s| counts(&s.0)).unwrap_or((0, 0));
        if let Some(s) = g.get(&key) {
            let cap = if A::IS_V6 {
                self.config.max_num_want_v6
            } else {
                self.config.max_num_want_v4
            };
            let want = if event == Event::Stopped {
                0
            } else if num_want < 0 {
                self.config.default_num_want.min(cap)
            } else {
                (num_want as usize).min(cap)
            };
            let mut all: Vec<A> =
                s.0.peers
                    .keys()
                    .filter_map(|a| A::unwrap(*a))
                    .filter(|a| *a != peer)
                    .collect();
            all.sort_by_key(|a| format!("{a:?}"));
            let n = all.len();
            if n > 0 {
                let start = (random % n as u64) as usize;
                out.extend(
                    all.iter()
                        .cycle()
                        .skip(start)
                        .take(n.min(want.max(0) as usize)),
                );
            }
        }
        AnnounceOutcome {
            seeders,
            leechers,
            status,
        }
    }

    pub fn scrape<A: PeerAddress>(&self, hashes: &[[u8; 20]], out: &mut Vec<SwarmCounts>) {
        let g = self.inner.lock();
        for h in hashes {
            let c = g.get(&(A::IS_V6, *h)).map(|s| {
                let seeders = s.0.peers.values().filter(|p| p.0).count() as u32;
                SwarmCounts {
                    seeders,
                    completed: s.0.completed,
                    leechers: s.0.peers.len() as u32 - seeders,
                }
            });
            out.push(c.unwrap_or_default());
        }
    }

    pub fn clean(&self, now_secs: u32, _max_swarms: usize) -> CleanReport {
        let mut g = self.inner.lock();
        let t = self.config.peer_timeout_secs;
        let mut removed = 0;
        for s in g.values_mut() {
            let before = s.0.peers.len();
            s.0.peers.retain(|_, p| now_secs.saturating_sub(p.1) <= t);
            removed += before - s.0.peers.len();
        }
        CleanReport { removed }
    }

    pub fn stats(&self) -> StoreStats {
        let g = self.inner.lock();
        let mut st = StoreStats::default();
        for ((v6, _), s) in g.iter() {
            let f = if *v6 { &mut st.v6 } else { &mut st.v4 };
            f.swarms += 1;
            let seeders = s.0.peers.values().filter(|p| p.0).count() as u64;
            f.seeders += seeders;
            f.leechers += s.0.peers.len() as u64 - seeders;
            f.completed += u64::from(s.0.completed);
        }
        st
    }
}
