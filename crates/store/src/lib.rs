//! fjord-store: the lock-free peer store of the fjord UDP tracker.
//!
//! Announces, scrapes and expiry run concurrently from any number of threads without locks:
//! a swarm is one allocation (a 32- or 48-byte header and an open-addressing table of slots),
//! every IPv4 peer is one `AtomicU64` slot, IPv6 peers take three words; blocks grow, shrink
//! and are freed by a cooperative freeze-and-copy migration that replaces the swarm's entry in
//! a sharded swarm map, and memory is reclaimed with crossbeam-epoch. See `docs/architecture.md` ("Peer store") for
//! the layout, the memory orderings and the linearizability argument.
//!
//! The store is sans-IO: time (`now_secs`) and randomness (`random`) come from the caller.
//!
//! ```
//! use std::net::SocketAddrV4;
//! use fjord_store::{AnnounceEvent, PeerStatus, PeerStore, StoreConfig};
//!
//! let store = PeerStore::new(StoreConfig::default());
//! let mut out = Vec::new();
//! let a: SocketAddrV4 = "10.0.0.1:6881".parse().unwrap();
//! let o = store.announce(&[7; 20], a, 100, AnnounceEvent::Started, -1, 1_000, 42, &mut out);
//! assert_eq!(o.status, PeerStatus::Inserted);
//! assert_eq!((o.seeders, o.leechers), (0, 1));
//! assert!(out.is_empty()); // nobody else in the swarm
//! ```

mod addr;
mod block;
mod clean;
mod family;
mod pinned;
mod slab;
mod snapshot;
mod sync;
mod table;
#[cfg(test)]
mod test_hooks;
#[cfg(test)]
mod tests;

pub use addr::{IpFamily, PeerAddress};
pub use pinned::{PeerSink, Pinned, SwarmKey};

use crossbeam_utils::CachePadded;
use family::{Ctx, Family, info_hash_hash};
use sync::{AtomicI64, Ordering::Relaxed, epoch};

/// Limits and defaults of a [`PeerStore`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// Peers stored at most, both families together. Default 50,000,000.
    pub max_peers: usize,
    /// Swarms at most, both families together. Default 10,000,000.
    pub max_swarms: usize,
    /// A peer not heard from for longer than this is expired (8-second granularity; at most
    /// [`MAX_PEER_TIMEOUT_SECS`]). Default 2,700 (the announce interval is 1,800 by default).
    pub peer_timeout_secs: u32,
    /// Longest time one clean cycle (a visit of every swarm) may take: [`PeerStore::clean`]
    /// raises its budget as needed to finish each cycle within it (plus one call interval).
    /// Two visits of a swarm are then at most two cycles apart, so a departed peer is gone
    /// within `peer_timeout_secs` + 2 × (`clean_cycle_secs` + the call interval) + 8 s (about
    /// one cycle in practice: the walk advances evenly). At most
    /// [`StoreConfig::max_clean_cycle_secs`]. Default 300.
    pub clean_cycle_secs: u32,
    /// Peers returned when the request's `num_want` is negative. Default 50.
    pub default_num_want: usize,
    /// Cap on IPv4 peers per reply. Default 200 (a 1,220-byte reply).
    pub max_num_want_v4: usize,
    /// Cap on IPv6 peers per reply. Default 66 (a 1,208-byte reply).
    pub max_num_want_v6: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            max_peers: 50_000_000,
            max_swarms: 10_000_000,
            peer_timeout_secs: 2_700,
            clean_cycle_secs: 300,
            default_num_want: 50,
            max_num_want_v4: 200,
            max_num_want_v6: 66,
        }
    }
}

/// Largest `peer_timeout_secs` (4,095 stamp units of 8 s).
pub const MAX_PEER_TIMEOUT_SECS: u32 = 32_767;

impl StoreConfig {
    /// The longest clean cycle (call interval included) that still removes every expired peer
    /// before its 13-bit stamp (8 s units, wrapping every 18.2 h) wraps, for this
    /// `peer_timeout_secs`: half of what the stamp range leaves after the timeout, the future
    /// tolerance and two units of rounding, since two visits of a swarm may be two cycles
    /// apart.
    ///
    /// ```
    /// use fjord_store::{MAX_PEER_TIMEOUT_SECS, StoreConfig};
    /// assert_eq!(StoreConfig::default().max_clean_cycle_secs(), 31_348); // ~8.7 h
    /// let slowest = StoreConfig { peer_timeout_secs: MAX_PEER_TIMEOUT_SECS, ..Default::default() };
    /// assert_eq!(slowest.max_clean_cycle_secs(), 16_316); // ~4.5 h
    /// ```
    pub fn max_clean_cycle_secs(&self) -> u32 {
        let t = u64::from(self.peer_timeout_secs.min(MAX_PEER_TIMEOUT_SECS) >> addr::STAMP_SHIFT);
        let units = addr::STAMP_RANGE - addr::FUTURE_UNITS - t.max(1) - 2;
        ((units << addr::STAMP_SHIFT) / 2) as u32
    }
}

/// The announce event, as the store sees it (independent of the wire codec).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AnnounceEvent {
    /// A regular announce (or an event code the codec did not know).
    #[default]
    None,
    /// The client started the torrent.
    Started,
    /// The download finished. With `left == 0`, a stored leecher or an unknown peer counts once
    /// in `completed`; a stored seeder repeating it, or `left > 0`, does not count.
    Completed,
    /// The client left: the peer is removed and no peers are returned.
    Stopped,
}

/// What an announce did, and the swarm's counts after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnnounceOutcome {
    /// Seeders in the swarm after the announce (expired peers count until `clean` removes them).
    pub seeders: u32,
    /// Leechers in the swarm after the announce.
    pub leechers: u32,
    /// What happened to the announcing peer.
    pub status: PeerStatus,
}

/// What happened to the announcing peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerStatus {
    /// A new peer was stored.
    Inserted,
    /// A stored peer was refreshed (time stamp, seeder flag).
    Updated,
    /// The peer was removed (event stopped).
    Removed,
    /// Nothing was stored; the announce was still answered.
    NotStored(NotStoredReason),
}

/// Why an announce stored nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotStoredReason {
    /// `max_peers` reached.
    StoreFull,
    /// `max_swarms` reached and the swarm does not exist.
    SwarmLimit,
    /// Port 0 is never stored.
    InvalidPort,
    /// `stopped` from a peer that is not stored: nothing changes.
    UnknownPeerStopped,
}

/// One scrape row (BEP 15 order: seeders, completed, leechers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SwarmCounts {
    /// Peers with `left == 0`.
    pub seeders: u32,
    /// Downloads completed in this swarm since it was created.
    pub completed: u32,
    /// Peers still downloading.
    pub leechers: u32,
}

/// What one [`PeerStore::clean`] call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CleanReport {
    /// Swarms examined by this call.
    pub swarms_visited: usize,
    /// Peers removed because they had not announced within the peer timeout.
    pub peers_expired: usize,
    /// Empty swarms freed.
    pub swarms_freed: usize,
    /// The cursor went past the end of the last shard: every swarm was visited since the
    /// cycle started.
    pub cycle_complete: bool,
    /// The length in seconds of the cycle that completed in this call, if one did.
    pub cycle_secs: Option<u32>,
    /// The budget this call used: the caller's minimum, raised to finish the cycle in time.
    pub budget: usize,
    /// The cycle was due: this call walked at least to its end, whatever its budget.
    pub overdue: bool,
    /// Swarm-map tables rebuilt smaller (tombstones dropped, corpses freed) by this call.
    pub maps_shrunk: usize,
}

/// One swarm as [`PeerStore::clean_observed`] left it: what statistics gathered on the
/// cleaner's walk (the largest swarms, say) need, with no walk of their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwarmSummary {
    /// The swarm's info hash.
    pub info_hash: [u8; 20],
    /// Its address family.
    pub family: IpFamily,
    /// Seeders after the clean.
    pub seeders: u32,
    /// Leechers after the clean.
    pub leechers: u32,
    /// Downloads completed since the swarm was created.
    pub completed: u32,
}

/// How the clean cycle keeps up (see [`PeerStore::clean`]); read without a lock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CleanStats {
    /// Length in seconds of the last complete cycle (`None` before the first completes).
    pub last_cycle_secs: Option<u32>,
    /// Cycles completed since the store was created.
    pub cycles: u64,
    /// The configured bound on a cycle's length (`clean_cycle_secs`, after clamping).
    pub cycle_limit_secs: u32,
}

/// Counts of one address family.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FamilyStats {
    /// Swarms of this family.
    pub swarms: u64,
    /// Seeders stored.
    pub seeders: u64,
    /// Leechers stored.
    pub leechers: u64,
    /// Completions counted by the swarms since start; never decreases (freeing a swarm keeps it).
    pub completed: u64,
}

/// Counts of both families, from striped counters (no walk over swarms).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// IPv4 swarms and peers.
    pub v4: FamilyStats,
    /// IPv6 swarms and peers.
    pub v6: FamilyStats,
}

/// Signed sums of the striped counters (test helper: proves they never go negative).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawFamilyStats {
    pub swarms: i64,
    pub seeders: i64,
    pub leechers: i64,
    pub completed: i64,
}

/// The peer store: swarms of IPv4 and IPv6 peers, kept apart. `Send + Sync`; share it through
/// an `Arc`. No operation takes a lock.
pub struct PeerStore {
    config: StoreConfig,
    ctx: Ctx,
    fams: [Family; 2],
    /// The clean cursor and cycle (see [`PeerStore::clean`]).
    cleaner: clean::Cleaner,
}

/// Dropping the store frees its swarms now, and drains what reclamation this thread can
/// (retired blocks and tables waiting for their epoch: crossbeam would otherwise run them at
/// some later pin, or never if none comes, which memcheck reports as leaks).
impl Drop for PeerStore {
    fn drop(&mut self) {
        epoch::drain();
    }
}

// The store is shared by workers through an `Arc`.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<PeerStore>();
};

fn random_seed() -> u64 {
    #[cfg(loom)]
    {
        0x9e37_79b9_7f4a_7c15
    }
    #[cfg(not(loom))]
    {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x9e37_79b9_7f4a_7c15);
        h.finish()
    }
}

impl PeerStore {
    /// An empty store with these limits. The swarm maps start small and grow on demand.
    pub fn new(config: StoreConfig) -> Self {
        let timeout_units =
            u64::from(config.peer_timeout_secs.min(MAX_PEER_TIMEOUT_SECS) >> addr::STAMP_SHIFT)
                .max(1);
        let window = config.max_clean_cycle_secs();
        let cycle_limit = config.clean_cycle_secs.clamp(1, window);
        PeerStore {
            ctx: Ctx {
                seed: random_seed(),
                timeout_units,
                max_peers: i64::try_from(config.max_peers).unwrap_or(i64::MAX),
                max_swarms: i64::try_from(config.max_swarms).unwrap_or(i64::MAX),
                peers: CachePadded::new(AtomicI64::new(0)),
                swarms: CachePadded::new(AtomicI64::new(0)),
            },
            config,
            fams: {
                let slab = std::sync::Arc::new(slab::Slab::new());
                [IpFamily::V4, IpFamily::V6].map(|f| Family::new(f, std::sync::Arc::clone(&slab)))
            },
            cleaner: clean::Cleaner::new(cycle_limit, window),
        }
    }

    /// The limits and defaults this store was created with.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    #[inline]
    pub(crate) fn family<A: PeerAddress>(&self) -> &Family {
        match A::FAM {
            IpFamily::V4 => &self.fams[0],
            IpFamily::V6 => &self.fams[1],
        }
    }

    /// Handles one announce (pins the epoch for it; see [`PeerStore::pin`] to handle many
    /// under one pin, with prefetching).
    ///
    /// `now_secs`: seconds on the caller's monotonic clock. `random`: a fresh random u64 from
    /// the caller (the store has no RNG). `out` is cleared, then filled with the selected
    /// peers: a random run of the swarm's table, no duplicates, never the requester, never an
    /// expired peer, at most `min(num_want, family cap)` (negative = `default_num_want`).
    /// A seeder gets leechers only; a leecher gets seeders and leechers. `stopped` returns no
    /// peers. Port 0 is answered but never stored.
    #[allow(clippy::too_many_arguments)]
    pub fn announce<A: PeerAddress>(
        &self,
        info_hash: &[u8; 20],
        peer: A,
        left: i64,
        event: AnnounceEvent,
        num_want: i32,
        now_secs: u32,
        random: u64,
        out: &mut Vec<A>,
    ) -> AnnounceOutcome {
        let key = self.swarm_key(info_hash);
        out.clear();
        self.pin()
            .announce(&key, peer, left, event, num_want, now_secs, random, out)
    }

    /// Appends one row per hash, in request order, duplicates kept, zeros for unknown hashes.
    pub fn scrape<A: PeerAddress>(&self, info_hashes: &[[u8; 20]], out: &mut Vec<SwarmCounts>) {
        let guard = epoch::pin();
        out.extend(info_hashes.iter().map(|ih| self.counts_in::<A>(ih, &guard)));
    }

    /// The scrape row of one swarm (zeros if unknown).
    pub fn scrape_one<A: PeerAddress>(&self, info_hash: &[u8; 20]) -> SwarmCounts {
        self.counts_in::<A>(info_hash, &epoch::pin())
    }

    #[inline]
    pub(crate) fn counts_in<A: PeerAddress>(
        &self,
        ih: &[u8; 20],
        guard: &epoch::Guard,
    ) -> SwarmCounts {
        let fam = self.family::<A>();
        match fam.lookup(ih, info_hash_hash(ih, self.ctx.seed), &self.ctx, guard) {
            Some(b) => {
                let (seeders, leechers) = fam.counts(b);
                SwarmCounts {
                    seeders,
                    completed: Family::completed_of(b),
                    leechers,
                }
            }
            None => SwarmCounts::default(),
        }
    }

    /// Cheap (no walk over swarms): counts for metrics.
    pub fn stats(&self) -> StoreStats {
        let f = |i: usize| {
            let r = self.raw_stats(i);
            FamilyStats {
                swarms: r.swarms.max(0) as u64,
                seeders: r.seeders.max(0) as u64,
                leechers: r.leechers.max(0) as u64,
                completed: r.completed.max(0) as u64,
            }
        };
        StoreStats { v4: f(0), v6: f(1) }
    }

    /// Signed counter sums of family `i` (0 = IPv4, 1 = IPv6).
    #[doc(hidden)]
    pub fn raw_stats(&self, i: usize) -> RawFamilyStats {
        let fam = &self.fams[i];
        let sum = |c: &[CachePadded<AtomicI64>]| c.iter().map(|x| x.load(Relaxed)).sum::<i64>();
        RawFamilyStats {
            swarms: fam.swarms.load(Relaxed),
            seeders: sum(&fam.seeders),
            leechers: sum(&fam.leechers),
            completed: sum(&fam.completed),
        }
    }

    /// Test/debug: the stored peers `(address, seeder)` of a swarm (expired ones included),
    /// or `None` if the swarm does not exist. Walks the swarm's table.
    #[doc(hidden)]
    pub fn peers_of<A: PeerAddress>(&self, info_hash: &[u8; 20]) -> Option<Vec<(A, bool)>> {
        let guard = epoch::pin();
        self.family::<A>().peers_of(info_hash, &self.ctx, &guard)
    }

    /// Test/debug: raw swarm counters `(seeders, leechers, completed)` as signed values.
    #[doc(hidden)]
    pub fn raw_counts<A: PeerAddress>(&self, info_hash: &[u8; 20]) -> Option<(i32, i32, u32)> {
        let guard = epoch::pin();
        self.family::<A>().raw_counts(info_hash, &self.ctx, &guard)
    }

    /// Test/debug: walks every swarm of a family: (swarms, peers stored, seeders+leechers sum).
    #[doc(hidden)]
    pub fn audit<A: PeerAddress>(&self) -> (usize, usize, i64) {
        let guard = epoch::pin();
        self.family::<A>().audit::<A>(&guard)
    }

    /// Test/debug: the block slabs' (bytes of chunks, bytes of objects in use, bytes free).
    #[doc(hidden)]
    pub fn slab_usage(&self) -> (usize, usize, usize) {
        self.fams[0].slab.usage()
    }

    /// Test/debug: per slab class, (object size, bytes of chunks, bytes in use, bytes free).
    #[doc(hidden)]
    pub fn slab_usage_by_class(&self) -> Vec<(usize, usize, usize, usize)> {
        self.fams[0].slab.usage_by_class()
    }

    /// Test/debug: bytes requested from the allocator by live structures of a family
    /// (swarms, their tables, map tables), by a walk: `(swarm headers, peer tables, map)`.
    #[doc(hidden)]
    pub fn allocated_bytes<A: PeerAddress>(&self) -> (usize, usize, usize) {
        let guard = epoch::pin();
        self.family::<A>().allocated_bytes(&guard)
    }
}
