//! Many operations under one epoch pin, with prefetching: the request pipeline's store API.
//!
//! A worker that received a batch of announces pins once ([`PeerStore::pin`]), then goes over
//! the batch in stages so that the cache misses of its requests overlap instead of queueing
//! (the batch-and-prefetch technique of MICA and DPDK's hash library):
//! 1. [`Pinned::prefetch_map`] hashes each info hash and prefetches its swarm-map slot;
//! 2. [`Pinned::prefetch_block`] reads the slot (now in cache) and prefetches the swarm's block;
//! 3. [`Pinned::prefetch_peers`] finds the block (now in cache) and, for a big swarm,
//!    prefetches the lines the announce's upsert and selection will read first;
//! 4. [`Pinned::announce`] does each announce, on warm lines.
//!
//! Prefetches are hints: they never fault and change nothing, so a stale or wrong guess (the
//! swarm moved, the slot holds another swarm) costs one wasted line and nothing else.

use crate::addr::{IpFamily, PeerAddress, stamp_of};
use crate::family::{Remove, Upsert, info_hash_hash, stripe_of};
use crate::sync::{Ordering::Relaxed, epoch};
use crate::{AnnounceEvent, AnnounceOutcome, NotStoredReason, PeerStatus, PeerStore, SwarmCounts};

/// An info hash with its hash under the store's seed: made once per request by
/// [`Pinned::prefetch_map`] (or [`PeerStore::swarm_key`]) and passed to the later stages, so
/// the hash is computed once and always belongs to its info hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwarmKey {
    hash: u64,
    info_hash: [u8; 20],
}

impl SwarmKey {
    /// The info hash.
    pub fn info_hash(&self) -> &[u8; 20] {
        &self.info_hash
    }
    #[inline]
    pub(crate) fn hash(&self) -> u64 {
        self.hash
    }
}

/// The store, pinned: every operation on it runs under one epoch pin (retired memory waits
/// for it to be dropped, so keep one per batch, not longer). Not `Send`.
pub struct Pinned<'s> {
    store: &'s PeerStore,
    guard: epoch::Guard,
}

impl PeerStore {
    /// Pins the epoch for a batch of operations (see [`Pinned`]).
    pub fn pin(&self) -> Pinned<'_> {
        Pinned {
            store: self,
            guard: epoch::pin(),
        }
    }

    /// The key of `info_hash` in this store (its seeded hash).
    #[inline]
    pub fn swarm_key(&self, info_hash: &[u8; 20]) -> SwarmKey {
        SwarmKey {
            hash: info_hash_hash(info_hash, self.ctx.seed),
            info_hash: *info_hash,
        }
    }
}

impl Pinned<'_> {
    /// Stage 1: the key of `info_hash`, with its swarm-map slot prefetched for family `A`.
    #[inline]
    pub fn prefetch_map<A: PeerAddress>(&self, info_hash: &[u8; 20]) -> SwarmKey {
        let key = self.store.swarm_key(info_hash);
        self.store
            .family::<A>()
            .prefetch_map_slot(key.hash, &self.guard);
        key
    }

    /// Stage 2: reads the swarm's map slot and prefetches its block (its header and first
    /// slots), if the slot names it.
    #[inline]
    pub fn prefetch_block<A: PeerAddress>(&self, key: &SwarmKey) {
        self.store
            .family::<A>()
            .prefetch_block(key.hash, &self.guard);
    }

    /// Stage 3: for the announce of `peer` with `random` that will follow (pass the same
    /// `random` to [`Pinned::announce`]), prefetches the lines of the swarm's block its upsert
    /// and its selection read first, if the block is big enough for them to be elsewhere than
    /// the lines stage 2 brought.
    #[inline]
    pub fn prefetch_peers<A: PeerAddress>(&self, key: &SwarmKey, peer: &A, random: u64) {
        let store = self.store;
        let pk_hash = peer.peer_key(store.ctx.seed).hash;
        store
            .family::<A>()
            .prefetch_peers(&key.info_hash, key.hash, pk_hash, random, &self.guard);
    }

    /// [`PeerStore::announce`] under this pin, for the swarm of `key`; the selected peers are
    /// handed to `out` one by one (a `Vec` is appended to, not cleared first).
    #[allow(clippy::too_many_arguments)]
    pub fn announce<A: PeerAddress>(
        &self,
        key: &SwarmKey,
        peer: A,
        left: i64,
        event: AnnounceEvent,
        num_want: i32,
        now_secs: u32,
        random: u64,
        out: &mut impl PeerSink<A>,
    ) -> AnnounceOutcome {
        let store = self.store;
        let fam = store.family::<A>();
        let ctx = &store.ctx;
        let guard = &self.guard;
        let seeder = left == 0;
        let now_stamp = stamp_of(now_secs);
        let pk = peer.peer_key(ctx.seed);
        let (h, info_hash) = (key.hash, &key.info_hash);
        let stripe = stripe_of(h);
        let cap = match A::FAM {
            IpFamily::V4 => store.config.max_num_want_v4,
            IpFamily::V6 => store.config.max_num_want_v6,
        };
        let want = match event {
            AnnounceEvent::Stopped => 0,
            _ if num_want < 0 => store.config.default_num_want.min(cap),
            _ => (num_want as usize).min(cap),
        };
        let zero = |status| AnnounceOutcome {
            seeders: 0,
            leechers: 0,
            status,
        };
        loop {
            let status;
            let block = if event == AnnounceEvent::Stopped {
                let Some(b) = fam.lookup(info_hash, h, ctx, guard) else {
                    return zero(PeerStatus::NotStored(NotStoredReason::UnknownPeerStopped));
                };
                let (r, b) = fam.remove(b, stripe, &pk, ctx, guard);
                status = match r {
                    Remove::Removed => PeerStatus::Removed,
                    Remove::NotFound => PeerStatus::NotStored(NotStoredReason::UnknownPeerStopped),
                    Remove::Dead => continue,
                };
                b
            } else if peer.port() == 0 {
                let Some(sw) = fam.lookup(info_hash, h, ctx, guard) else {
                    return zero(PeerStatus::NotStored(NotStoredReason::InvalidPort));
                };
                status = PeerStatus::NotStored(NotStoredReason::InvalidPort);
                sw
            } else {
                let found = match fam.lookup(info_hash, h, ctx, guard) {
                    Some(sw) => Some(sw),
                    None if ctx.peers.load(Relaxed) >= ctx.max_peers => {
                        return zero(PeerStatus::NotStored(NotStoredReason::StoreFull));
                    }
                    None => fam.get_or_insert(info_hash, h, ctx, guard),
                };
                let Some(sw) = found else {
                    return zero(PeerStatus::NotStored(NotStoredReason::SwarmLimit));
                };
                // A finished download: `completed` with nothing left. Counted when the peer is
                // new or was a leecher, so at most once per download (not per announce).
                let completed = event == AnnounceEvent::Completed && seeder;
                let (r, b) = fam.upsert(sw, stripe, &pk, seeder, completed, now_stamp, ctx, guard);
                status = match r {
                    Upsert::Inserted => PeerStatus::Inserted,
                    Upsert::Updated => PeerStatus::Updated,
                    Upsert::Full => PeerStatus::NotStored(NotStoredReason::StoreFull),
                    Upsert::Dead => continue,
                };
                b
            };
            fam.select(block, &pk, seeder, want, now_stamp, ctx, random, out);
            let (seeders, leechers) = fam.counts(block);
            return AnnounceOutcome {
                seeders,
                leechers,
                status,
            };
        }
    }

    /// [`PeerStore::scrape_one`] under this pin.
    pub fn scrape_one<A: PeerAddress>(&self, info_hash: &[u8; 20]) -> SwarmCounts {
        self.store.counts_in::<A>(info_hash, &self.guard)
    }
}

/// Where an announce puts the peers it selects, one by one: a `Vec` (appended), or the
/// caller's own writer (the server writes them straight into the reply datagram).
pub trait PeerSink<A> {
    /// Takes one selected peer. The store calls it at most `num_want` times per announce.
    fn push(&mut self, peer: A);
}

impl<A> PeerSink<A> for Vec<A> {
    #[inline]
    fn push(&mut self, peer: A) {
        Vec::push(self, peer);
    }
}
