//! One address family: its swarm map, its striped counters, and every operation on its swarms
//! and their blocks. Two lock-free protocols live here, argued separately in
//! docs/architecture.md ("Peer store"), one module each, with the machinery they share:
//!
//! * [`map`]: the swarm map, sharded open-addressing tables of [`MapValue`](map::MapValue)s
//!   that name each swarm's newest block: lookup, creation, replacement of a block by its
//!   successor, map migration (growth and shrinking), and the freeing of maps in `Drop`;
//! * [`peers`]: the peers of one swarm, in the slots of its block: upsert, remove, select,
//!   counts and `completed`;
//! * [`migrate`]: the freeze-and-copy migration of a block (growth, compaction, the freeing of
//!   an empty swarm) and the cleaner's visit of one swarm, which starts them;
//! * [`snapshot`]: a shard's swarms for a snapshot, and the restoring of peers;
//! * [`walk`]: test and debug walkers over the swarms of a family.
//!
//! Every view of a block or table here carries the lifetime of the epoch guard it was read
//! under (`Block<'g>`, `Table<'g>`), so no view outlives its pin.

mod map;
mod migrate;
mod peers;
mod snapshot;
mod walk;

use std::sync::Arc;

use crossbeam_utils::CachePadded;

use crate::addr::{IpFamily, mix};
use crate::slab::Slab;
use crate::sync::{AtomicI64, AtomicUsize, Ordering::Relaxed};

pub(crate) use map::MapSlot;
pub(crate) use migrate::{Migrated, Publisher};
pub(crate) use peers::{Remove, Upsert};

#[cfg(not(any(loom, fuzzing)))]
pub(crate) const SHARDS: usize = 1024;
#[cfg(loom)]
pub(crate) const SHARDS: usize = 1;
/// Under cargo-fuzz: few shards, so that a clean cycle of a small store is a short walk and
/// the fuzzer runs many more operation sequences (the code paths are the same).
#[cfg(all(fuzzing, not(loom)))]
pub(crate) const SHARDS: usize = 8;
#[cfg(not(loom))]
pub(crate) const STRIPES: usize = 64;
#[cfg(loom)]
pub(crate) const STRIPES: usize = 1;

/// Store-wide context shared by both families.
pub(crate) struct Ctx {
    pub(crate) seed: u64,
    pub(crate) timeout_units: u64,
    pub(crate) max_peers: i64,
    pub(crate) max_swarms: i64,
    /// Peers stored (both families); one RMW per *new* peer, none per refresh.
    pub(crate) peers: CachePadded<AtomicI64>,
    /// Swarms allocated (both families); one RMW per new or freed swarm.
    pub(crate) swarms: CachePadded<AtomicI64>,
}

impl Ctx {
    fn reserve(counter: &AtomicI64, max: i64) -> bool {
        if counter.load(Relaxed) >= max {
            return false;
        }
        if counter.fetch_add(1, Relaxed) >= max {
            counter.fetch_sub(1, Relaxed);
            return false;
        }
        true
    }
    pub(crate) fn reserve_peer(&self) -> bool {
        Self::reserve(&self.peers, self.max_peers)
    }
    pub(crate) fn release_peer(&self) {
        self.peers.fetch_sub(1, Relaxed);
    }
    fn reserve_swarm(&self) -> bool {
        Self::reserve(&self.swarms, self.max_swarms)
    }
    fn release_swarm(&self) {
        self.swarms.fetch_sub(1, Relaxed);
    }
}

#[inline]
pub(crate) fn info_hash_hash(ih: &[u8; 20], seed: u64) -> u64 {
    let a = u64::from_le_bytes(ih[0..8].try_into().expect("8 bytes"));
    let b = u64::from_le_bytes(ih[8..16].try_into().expect("8 bytes"));
    let c = u32::from_le_bytes(ih[16..20].try_into().expect("4 bytes"));
    mix(mix(a ^ seed) ^ b) ^ mix(u64::from(c) ^ seed.rotate_left(29))
}
#[inline]
pub(crate) fn stripe_of(h: u64) -> usize {
    ((h >> 40) as usize) & (STRIPES - 1)
}

fn counters(n: usize) -> Box<[CachePadded<AtomicI64>]> {
    (0..n)
        .map(|_| CachePadded::new(AtomicI64::new(0)))
        .collect()
}

pub(crate) struct Family {
    pub(crate) fam: IpFamily,
    /// Where this family's blocks live (shared with the other family and with deferred frees).
    pub(crate) slab: Arc<Slab>,
    /// Each shard's current map table, as a shard word (see `map::shard_word`).
    shards: Box<[AtomicUsize]>,
    pub(crate) seeders: Box<[CachePadded<AtomicI64>]>,
    pub(crate) leechers: Box<[CachePadded<AtomicI64>]>,
    pub(crate) completed: Box<[CachePadded<AtomicI64>]>,
    pub(crate) swarms: CachePadded<AtomicI64>,
}

impl Family {
    pub(crate) fn new(fam: IpFamily, slab: Arc<Slab>) -> Self {
        Family {
            fam,
            shards: map::empty_shards(&slab),
            slab,
            seeders: counters(STRIPES),
            leechers: counters(STRIPES),
            completed: counters(STRIPES),
            swarms: CachePadded::new(AtomicI64::new(0)),
        }
    }

    /// `AtomicU64` words per peer slot.
    #[inline]
    fn words(&self) -> usize {
        self.fam.words()
    }
}
