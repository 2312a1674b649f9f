//! One address family: its swarm map (sharded open-addressing tables of block pointers), its
//! striped counters, and every operation on swarms and their blocks, including migration
//! (freeze-and-copy growth, compaction and the freeing of empty swarms).

use crossbeam_utils::CachePadded;

use std::sync::Arc;

use crate::CleanReport;
use crate::addr::{
    FROZEN, IpFamily, KEY_MASK, PeerAddress, PeerKey, REMOVED, SEEDER, is_empty, is_expired,
    is_live, is_reserved, live_value, mix,
};
use crate::block::{
    Block, COMPLETED_FROZEN, NEXT_GROW, NEXT_KILL, NEXT_NONE, SMALL_MAX, block_bytes, peer_cap_for,
    peer_max_used,
};
use crate::slab::Slab;
use crate::sync::epoch::{Guard, retire};
use crate::sync::{AtomicI64, AtomicUsize, Backoff, Ordering::*};
use crate::table::{
    NEXT_GROW as MAP_GROW, NEXT_NONE as MAP_NONE, Table, index, map_cap_for, map_max_used,
};

#[cfg(not(any(loom, fuzzing)))]
pub(crate) const SHARDS: usize = 1024;
#[cfg(loom)]
pub(crate) const SHARDS: usize = 1;
/// Under cargo-fuzz: few shards, so that a clean cycle of a small store is a short walk and
/// the fuzzer runs many more operation sequences (the code paths are the same).
#[cfg(all(fuzzing, not(loom)))]
pub(crate) const SHARDS: usize = 8;
#[cfg(not(loom))]
const MAP_MIN_CAP: usize = 8;
#[cfg(loom)]
const MAP_MIN_CAP: usize = 2;
#[cfg(not(loom))]
pub(crate) const STRIPES: usize = 64;
#[cfg(loom)]
pub(crate) const STRIPES: usize = 1;

/// Map slot word: `ptr` (8-aligned, < 2^48) | tag << 48 | REMOVED | FROZEN. 0 = EMPTY.
/// A live slot names the newest block of a swarm; a REMOVED slot names the corpse of a freed
/// swarm, which lives (and keeps its info hash readable) as long as that map table.
const M_FROZEN: u64 = 1;
const M_REMOVED: u64 = 2;
const M_PTR: u64 = 0x0000_FFFF_FFFF_FFF8;

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
#[inline]
fn tag_of(h: u64) -> u64 {
    (h >> 16) & 0xFFFF
}

pub(crate) enum Migrated {
    /// The block was replaced by this successor.
    Moved(Block),
    /// The swarm is dead and no longer in the map; `true` if this call removed it.
    Dead(bool),
}
pub(crate) enum Upsert {
    Inserted,
    Updated,
    Full,
    Dead,
}
pub(crate) enum Remove {
    Removed,
    NotFound,
    Dead,
}

fn counters(n: usize) -> Box<[CachePadded<AtomicI64>]> {
    (0..n)
        .map(|_| CachePadded::new(AtomicI64::new(0)))
        .collect()
}

/// A shard word: the map table's address | its capacity << 48 (`SHARD_CAP_HEADER` if it does
/// not fit: read it from the header). A lookup then reads no table header.
const SHARD_CAP_HEADER: usize = 0xFFFF;
fn shard_word(t: Table) -> usize {
    let a = t.addr();
    assert!(a >> 48 == 0, "map table address does not fit 48 bits");
    a | (t.cap().min(SHARD_CAP_HEADER) << 48)
}
/// # Safety
/// `w` must be a shard word naming a live map table.
#[inline]
unsafe fn shard_table(w: usize) -> Table {
    let (a, c) = (w & ((1 << 48) - 1), w >> 48);
    if c == SHARD_CAP_HEADER {
        // SAFETY: per the contract.
        unsafe { Table::from_addr(a, 1) }
    } else {
        // SAFETY: per the contract; `c` is the capacity `shard_word` recorded.
        unsafe { Table::from_addr_cap(a, 1, c) }
    }
}

/// Frees a map table and the corpses its REMOVED slots own.
///
/// # Safety
/// The table must be unreachable for every thread, and freed at most once.
unsafe fn free_map_table(t: Table, words: usize, slab: &Slab) {
    for i in 0..t.cap() {
        let v = t.word(i, 0).load(Relaxed) & !M_FROZEN;
        if v & M_REMOVED != 0 {
            // SAFETY: a corpse is owned by the one REMOVED slot that names it (REMOVED slots
            // are never copied), and that slot's table is being freed.
            unsafe { Block::from_addr((v & M_PTR) as usize, words).free(slab) };
        }
    }
    // SAFETY: per the contract.
    unsafe { t.free(slab) };
}

pub(crate) struct Family {
    pub(crate) fam: IpFamily,
    /// Where this family's blocks live (shared with the other family and with deferred frees).
    pub(crate) slab: Arc<Slab>,
    /// Address of each shard's current map table (1 word per slot).
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
            shards: (0..SHARDS)
                .map(|_| AtomicUsize::new(shard_word(Table::alloc(&slab, MAP_MIN_CAP, 1, 1))))
                .collect(),
            slab,
            seeders: counters(STRIPES),
            leechers: counters(STRIPES),
            completed: counters(STRIPES),
            swarms: CachePadded::new(AtomicI64::new(0)),
        }
    }

    #[inline]
    fn words(&self) -> usize {
        self.fam.words()
    }

    /// The current map table of shard `s`.
    #[inline]
    pub(crate) fn map_table(&self, s: usize, _g: &Guard) -> Table {
        // SAFETY: shard words always name a live map table (words = 1) and its capacity; a
        // replaced table is retired through the epoch, and `_g` pins us.
        unsafe { shard_table(self.shards[s].load(Acquire)) }
    }

    /// The block a non-empty map slot value names.
    ///
    /// # Safety
    /// `m` must have been read under `_g` from a map table reachable under `_g`: a live slot's
    /// block is retired only after the slot stops naming it, a corpse only with its table.
    #[inline]
    unsafe fn block_of(&self, m: u64, _g: &Guard) -> Block {
        // SAFETY: per the contract the block is live for the guard's lifetime.
        unsafe { Block::from_addr((m & M_PTR) as usize, self.words()) }
    }

    /// The swarm's block if the non-empty, non-frozen map slot value `m` (read under `g`)
    /// names it: live, the tag of `h` matches, and the full info hash compares equal.
    #[inline]
    fn matching(&self, m: u64, h: u64, ih: &[u8; 20], g: &Guard) -> Option<Block> {
        if m & M_REMOVED != 0 || m >> 48 != tag_of(h) {
            return None;
        }
        // SAFETY: a slot value read under `g` (callers pass only non-empty values).
        let b = unsafe { self.block_of(m, g) };
        (b.info_hash() == ih).then_some(b)
    }

    /// The successor a block's state names.
    #[inline]
    fn successor(&self, addr: u64, _g: &Guard) -> Block {
        // SAFETY: published in `next` (read with Acquire) of a block we may read under `_g`;
        // a successor is retired only after it was replaced in the map, after its predecessor
        // was, so it outlives every guard that can still reach the predecessor.
        unsafe { Block::from_addr(addr as usize, self.words()) }
    }

    fn count(&self, b: Block, stripe: usize, seeder: bool, up: bool) {
        let g = if seeder {
            &self.seeders[stripe]
        } else {
            &self.leechers[stripe]
        };
        let c = b
            .big()
            .map(|x| if seeder { &x.seeders } else { &x.leechers });
        if up {
            if let Some(c) = c {
                c.fetch_add(1, Relaxed);
            }
            g.fetch_add(1, Relaxed);
        } else {
            if let Some(c) = c {
                c.fetch_sub(1, Relaxed);
            }
            g.fetch_sub(1, Relaxed);
        }
    }

    /// (seeders, leechers) of a block: its counters, or a scan of a small block's slots.
    #[inline]
    pub(crate) fn counts(&self, b: Block) -> (u32, u32) {
        if let Some(x) = b.big() {
            return (x.seeders.load(Relaxed), x.leechers.load(Relaxed));
        }
        let (mut s, mut l) = (0, 0);
        for i in 0..b.cap() {
            let m = b.word(i, 0).load(Acquire);
            if is_live(self.fam, m) {
                if m & SEEDER != 0 { s += 1 } else { l += 1 }
            }
        }
        (s, l)
    }

    /// Downloads completed in the swarm of block `b`.
    #[inline]
    pub(crate) fn completed_of(b: Block) -> u32 {
        b.head().completed.load(Relaxed) & !COMPLETED_FROZEN
    }

    /// Counts one completion in the swarm (after the peer's slot turned seeder). A frozen
    /// counter belongs to a block being migrated: the completion goes to the successor, whose
    /// counter starts from the frozen value, so it is counted exactly once.
    fn add_completed(&self, mut b: Block, stripe: usize, ctx: &Ctx, g: &Guard) {
        self.completed[stripe].fetch_add(1, Relaxed);
        loop {
            let c = &b.head().completed;
            let mut v = c.load(Relaxed);
            while v & COMPLETED_FROZEN == 0 {
                if v + 1 == COMPLETED_FROZEN {
                    return; // saturated
                }
                match c.compare_exchange_weak(v, v + 1, Relaxed, Relaxed) {
                    Ok(_) => return,
                    Err(x) => v = x,
                }
            }
            match self.help_migrate(b, ctx, g) {
                Migrated::Moved(n) => b = n,
                Migrated::Dead(_) => return,
            }
        }
    }

    /// True if meta `m` (published or removed, read with Acquire) at slot `i` is peer `pk`.
    #[inline]
    fn matches(&self, b: Block, i: usize, m: u64, pk: &PeerKey) -> bool {
        (m & KEY_MASK) == pk.key
            && (self.fam == IpFamily::V4
                || (b.word(i, 1).load(Relaxed) == pk.addr[0]
                    && b.word(i, 2).load(Relaxed) == pk.addr[1]))
    }
    #[inline]
    fn reserved_by(&self, m: u64, pk: &PeerKey) -> bool {
        is_reserved(self.fam, m) && (m & KEY_MASK) == (pk.reserved_meta() & KEY_MASK)
    }
    #[inline]
    fn addr_words(&self, b: Block, i: usize) -> [u64; 2] {
        if self.fam == IpFamily::V6 {
            [b.word(i, 1).load(Relaxed), b.word(i, 2).load(Relaxed)]
        } else {
            [0; 2]
        }
    }

    // ---------------------------------------------------------------- swarm map

    #[inline]
    pub(crate) fn lookup(&self, ih: &[u8; 20], h: u64, ctx: &Ctx, g: &Guard) -> Option<Block> {
        let s = (h as usize) & (SHARDS - 1);
        'retry: loop {
            let t = self.map_table(s, g);
            let cap = t.cap();
            let mut i = index(h, cap);
            for _ in 0..cap {
                let m = t.word(i, 0).load(Acquire);
                if m & M_FROZEN != 0 {
                    self.help_map_migrate(s, t, ctx, g);
                    continue 'retry;
                }
                if m == 0 {
                    return None;
                }
                if let Some(b) = self.matching(m, h, ih, g) {
                    return Some(b);
                }
                i = if i + 1 == cap { 0 } else { i + 1 };
            }
            return None;
        }
    }

    /// Finds the swarm or creates it; `None` when the swarm limit is reached.
    pub(crate) fn get_or_insert(
        &self,
        ih: &[u8; 20],
        h: u64,
        ctx: &Ctx,
        g: &Guard,
    ) -> Option<Block> {
        let s = (h as usize) & (SHARDS - 1);
        let mut fresh: Option<Block> = None;
        let found = 'retry: loop {
            let t = self.map_table(s, g);
            let hd = t.header();
            if hd.next.load(Acquire) != MAP_NONE {
                self.help_map_migrate(s, t, ctx, g);
                continue;
            }
            let cap = t.cap();
            let mut i = index(h, cap);
            let mut probes = 0;
            while probes < cap {
                let w = t.word(i, 0);
                let m = w.load(Acquire);
                if m & M_FROZEN != 0 {
                    self.help_map_migrate(s, t, ctx, g);
                    continue 'retry;
                }
                if m == 0 {
                    if hd.used.load(Relaxed) as usize >= map_max_used(cap) {
                        let _ = hd
                            .next
                            .compare_exchange(MAP_NONE, MAP_GROW, AcqRel, Acquire);
                        continue 'retry;
                    }
                    let b = match fresh {
                        Some(b) => b,
                        None => {
                            if !Ctx::reserve(&ctx.swarms, ctx.max_swarms) {
                                break 'retry None;
                            }
                            let cap = peer_cap_for(1, self.words());
                            *fresh.insert(Block::alloc(&self.slab, *ih, cap, self.words(), 0, 0, 0))
                        }
                    };
                    self.swarms.fetch_add(1, Relaxed);
                    let v = b.addr() as u64 | (tag_of(h) << 48);
                    if w.compare_exchange(0, v, AcqRel, Acquire).is_ok() {
                        hd.used.fetch_add(1, Relaxed);
                        fresh = None;
                        break 'retry Some(b);
                    }
                    self.swarms.fetch_sub(1, Relaxed);
                    continue; // re-examine slot i
                }
                if let Some(b) = self.matching(m, h, ih, g) {
                    break 'retry Some(b);
                }
                i = if i + 1 == cap { 0 } else { i + 1 };
                probes += 1;
            }
            let _ = hd
                .next
                .compare_exchange(MAP_NONE, MAP_GROW, AcqRel, Acquire);
        };
        if let Some(b) = fresh {
            // SAFETY: `b` was never published, so this thread is its only owner.
            unsafe { b.free(&self.slab) };
            ctx.swarms.fetch_sub(1, Relaxed);
        }
        found
    }

    /// Replaces the live map slot naming block `old` with `new` (an address, with `M_REMOVED`
    /// for a corpse), keeping its tag. True if this call did it: the caller then retires
    /// `old`. False if no live slot names `old` any more (another helper replaced it).
    fn map_replace(&self, h: u64, old: usize, new: u64, ctx: &Ctx, g: &Guard) -> bool {
        let s = (h as usize) & (SHARDS - 1);
        'retry: loop {
            let t = self.map_table(s, g);
            if t.header().next.load(Acquire) != MAP_NONE {
                self.help_map_migrate(s, t, ctx, g);
                continue;
            }
            let cap = t.cap();
            let mut i = index(h, cap);
            for _ in 0..cap {
                let w = t.word(i, 0);
                let mut m = w.load(Acquire);
                loop {
                    if m & M_FROZEN != 0 {
                        self.help_map_migrate(s, t, ctx, g);
                        continue 'retry;
                    }
                    if m == 0 {
                        return false;
                    }
                    // `old` is live under our guard, so no other slot (a corpse's included)
                    // can hold its address.
                    if m & M_REMOVED != 0 || (m & M_PTR) as usize != old {
                        break;
                    }
                    match w.compare_exchange(m, (m & !M_PTR) | new, AcqRel, Acquire) {
                        Ok(_) => return true,
                        Err(x) => m = x,
                    }
                }
                i = if i + 1 == cap { 0 } else { i + 1 };
            }
            return false;
        }
    }

    /// Freezes map table `t` of shard `s`, copies its live entries to the successor and
    /// installs it. Lock-free: every helper can finish alone; copying is idempotent.
    fn help_map_migrate(&self, s: usize, t: Table, ctx: &Ctx, g: &Guard) {
        let _ = t
            .header()
            .next
            .compare_exchange(MAP_NONE, MAP_GROW, AcqRel, Acquire);
        let cap = t.cap();
        for i in 0..cap {
            t.word(i, 0).fetch_or(M_FROZEN, AcqRel);
        }
        let hd = t.header();
        let mut n = hd.next.load(Acquire);
        if n == MAP_GROW {
            let live = (0..cap)
                .filter(|&i| {
                    let v = t.word(i, 0).load(Acquire) & !M_FROZEN;
                    v != 0 && v & M_REMOVED == 0
                })
                .count();
            let new = Table::alloc(
                &self.slab,
                map_cap_for(live + 1, MAP_MIN_CAP),
                1,
                hd.generation + 1,
            )
            .addr();
            match hd.next.compare_exchange(MAP_GROW, new, AcqRel, Acquire) {
                Ok(_) => n = new,
                Err(cur) => {
                    // SAFETY: `new` was never published.
                    unsafe { Table::from_addr(new, 1).free(&self.slab) };
                    n = cur;
                }
            }
        }
        // SAFETY: `n` is the successor published in `next`; it stays allocated at least until
        // it is retired, which happens after we unpin.
        let new = unsafe { Table::from_addr(n, 1) };
        for i in 0..cap {
            let v = t.word(i, 0).load(Acquire) & !M_FROZEN;
            if v != 0 && v & M_REMOVED == 0 {
                self.map_copy(new, v, ctx, g);
            }
        }
        if self.shards[s]
            .compare_exchange(shard_word(t), shard_word(new), AcqRel, Acquire)
            .is_ok()
        {
            let (a, words, slab) = (t.addr(), self.words(), Arc::clone(&self.slab));
            // SAFETY: the shard no longer points to `t`; threads that still see it pinned
            // before now. Retired once: only the winner of this CAS gets here. Its corpses go
            // with it (they were not copied).
            unsafe {
                retire(g, move || {
                    free_map_table(Table::from_addr(a, 1), words, &slab)
                })
            };
        }
    }

    /// Inserts live map value `v` into successor `new` unless its swarm is already there: any
    /// slot, live or a corpse's tombstone, whose block has the same info hash (a late copier
    /// must not resurrect a block that was since replaced or freed). Stops if `new` is
    /// frozen: its copy was then complete.
    fn map_copy(&self, new: Table, v: u64, ctx: &Ctx, g: &Guard) {
        // SAFETY: `v` is a live value of a frozen table read under `g`.
        let b = unsafe { self.block_of(v, g) };
        let h = info_hash_hash(b.info_hash(), ctx.seed);
        let cap = new.cap();
        let mut i = index(h, cap);
        for _ in 0..cap {
            let w = new.word(i, 0);
            let mut x = w.load(Acquire);
            loop {
                if x & M_FROZEN != 0 {
                    return;
                }
                if x == 0 {
                    match w.compare_exchange(0, v, AcqRel, Acquire) {
                        Ok(_) => {
                            new.header().used.fetch_add(1, Relaxed);
                            return;
                        }
                        Err(cur) => {
                            x = cur;
                            continue;
                        }
                    }
                }
                if x & M_PTR == v & M_PTR {
                    return;
                }
                if x >> 48 == v >> 48 {
                    // SAFETY: a slot of `new`, which is reachable under `g`: a live block or a
                    // corpse owned by `new`, both readable while `g` lives.
                    if unsafe { self.block_of(x, g) }.info_hash() == b.info_hash() {
                        return;
                    }
                }
                break;
            }
            i = if i + 1 == cap { 0 } else { i + 1 };
        }
        debug_assert!(false, "map successor full during copy");
    }

    // ---------------------------------------------------------------- peer blocks

    /// The swarm's block that is not being migrated, following (and helping) migrations from
    /// `b`; `None` if the swarm was freed on the way.
    fn settled(&self, mut b: Block, ctx: &Ctx, g: &Guard) -> Option<Block> {
        while b.state() != NEXT_NONE {
            match self.help_migrate(b, ctx, g) {
                Migrated::Moved(n) => b = n,
                Migrated::Dead(_) => return None,
            }
        }
        Some(b)
    }

    /// Stores or refreshes peer `pk` in the swarm of block `b`; returns the block it acted on.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn upsert(
        &self,
        mut b: Block,
        stripe: usize,
        pk: &PeerKey,
        seeder: bool,
        completed_ev: bool,
        now_stamp: u64,
        ctx: &Ctx,
        g: &Guard,
    ) -> (Upsert, Block) {
        let v6 = self.fam == IpFamily::V6;
        let new_val = live_value(pk.key, now_stamp, seeder);
        let mut backoff = Backoff::new();
        'retry: loop {
            let Some(cur) = self.settled(b, ctx, g) else {
                return (Upsert::Dead, b);
            };
            b = cur;
            let cap = b.cap();
            let mut i = index(pk.hash, cap);
            let mut probes = 0;
            while probes < cap {
                let w = b.word(i, 0);
                let m = w.load(Acquire);
                if m & FROZEN != 0 {
                    continue 'retry;
                }
                if is_empty(m) {
                    if let Some(x) = b.big()
                        && x.used.load(Relaxed) as usize >= peer_max_used(cap)
                    {
                        let _ = b.cas_state(NEXT_NONE, NEXT_GROW);
                        continue 'retry;
                    }
                    if !ctx.reserve_peer() {
                        return (Upsert::Full, b);
                    }
                    self.count(b, stripe, seeder, true);
                    let first = if v6 { pk.reserved_meta() } else { new_val };
                    if w.compare_exchange(0, first, AcqRel, Acquire).is_ok() {
                        if let Some(x) = b.big() {
                            x.used.fetch_add(1, Relaxed);
                        }
                        if v6 && !self.publish(Publisher::Inserter, b, i, first, pk.addr, new_val) {
                            // A migration froze the reservation (it does not wait for us): the
                            // peer is not in this block. Undo, and insert it in the successor.
                            self.count(b, stripe, seeder, false);
                            ctx.release_peer();
                            continue 'retry;
                        }
                        if completed_ev {
                            self.add_completed(b, stripe, ctx, g);
                        }
                        return (Upsert::Inserted, b);
                    }
                    self.count(b, stripe, seeder, false);
                    ctx.release_peer();
                    continue; // re-examine slot i
                }
                if is_reserved(self.fam, m) {
                    if self.reserved_by(m, pk) {
                        // Another inserter of this peer (or of one with the same tag and port)
                        // is between its reservation and its publication: two stores away if
                        // it runs. Wait a few microseconds; if it is still there, that thread is
                        // not running, so do not wait for it: migrate the block (the freeze
                        // cancels the reservation) and insert in the successor. The stalled
                        // thread's publication then fails and it retries there.
                        if backoff.is_completed() {
                            let _ = b.cas_state(NEXT_NONE, NEXT_GROW);
                            backoff = Backoff::new();
                            continue 'retry;
                        }
                        backoff.snooze();
                        continue;
                    }
                } else if self.matches(b, i, m, pk) {
                    if m & REMOVED != 0 {
                        if !ctx.reserve_peer() {
                            return (Upsert::Full, b);
                        }
                        self.count(b, stripe, seeder, true);
                        if w.compare_exchange(m, new_val, AcqRel, Acquire).is_ok() {
                            if completed_ev {
                                self.add_completed(b, stripe, ctx, g);
                            }
                            return (Upsert::Inserted, b);
                        }
                        self.count(b, stripe, seeder, false);
                        ctx.release_peer();
                        continue;
                    }
                    let was_seeder = m & SEEDER != 0;
                    if was_seeder != seeder {
                        self.count(b, stripe, seeder, true);
                    }
                    if w.compare_exchange(m, new_val, AcqRel, Acquire).is_ok() {
                        if was_seeder != seeder {
                            self.count(b, stripe, was_seeder, false);
                        }
                        if completed_ev && !was_seeder {
                            self.add_completed(b, stripe, ctx, g);
                        }
                        return (Upsert::Updated, b);
                    }
                    if was_seeder != seeder {
                        self.count(b, stripe, seeder, false);
                    }
                    continue;
                }
                i = if i + 1 == cap { 0 } else { i + 1 };
                probes += 1;
            }
            let _ = b.cas_state(NEXT_NONE, NEXT_GROW);
        }
    }

    /// Removes peer `pk` (event stopped); returns the block it acted on.
    pub(crate) fn remove(
        &self,
        mut b: Block,
        stripe: usize,
        pk: &PeerKey,
        ctx: &Ctx,
        g: &Guard,
    ) -> (Remove, Block) {
        'retry: loop {
            let Some(cur) = self.settled(b, ctx, g) else {
                return (Remove::Dead, b);
            };
            b = cur;
            let cap = b.cap();
            let mut i = index(pk.hash, cap);
            for _ in 0..cap {
                let w = b.word(i, 0);
                let mut m = w.load(Acquire);
                loop {
                    if m & FROZEN != 0 {
                        continue 'retry;
                    }
                    if is_empty(m) {
                        return (Remove::NotFound, b);
                    }
                    if is_reserved(self.fam, m) {
                        // Not published, so not (yet) a stored peer: the stop linearizes before
                        // that insert. If the reservation is this very peer, no slot further on
                        // holds it (it was claimed as the first EMPTY on its path), so the
                        // probe ends in NotFound; otherwise the peer may be further on.
                        break;
                    }
                    if !self.matches(b, i, m, pk) {
                        break;
                    }
                    if m & REMOVED != 0 {
                        return (Remove::NotFound, b);
                    }
                    match w.compare_exchange(m, (m & KEY_MASK) | REMOVED, AcqRel, Acquire) {
                        Ok(_) => {
                            self.count(b, stripe, m & SEEDER != 0, false);
                            ctx.release_peer();
                            return (Remove::Removed, b);
                        }
                        Err(x) => m = x,
                    }
                }
                i = if i + 1 == cap { 0 } else { i + 1 };
            }
            return (Remove::NotFound, b);
        }
    }

    /// Appends up to `want` peers to `out`: a walk from a random slot with a bounded number of
    /// probes, skipping the requester, expired peers and (for a seeder) other seeders.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn select<A: PeerAddress>(
        &self,
        b: Block,
        pk: &PeerKey,
        req_seeder: bool,
        want: usize,
        now_stamp: u64,
        ctx: &Ctx,
        random: u64,
        out: &mut Vec<A>,
    ) {
        // A seeder gets leechers only: skip the walk when a big swarm has none.
        if want == 0 || (req_seeder && b.big().is_some_and(|x| x.leechers.load(Relaxed) == 0)) {
            return;
        }
        let cap = b.cap();
        let limit = cap.min(want.saturating_mul(16).saturating_add(64));
        let mut i = index(random, cap);
        for _ in 0..limit {
            let m = b.word(i, 0).load(Acquire);
            if is_live(self.fam, m)
                && !is_expired(m, now_stamp, ctx.timeout_units)
                && !(req_seeder && m & SEEDER != 0)
            {
                let addr = self.addr_words(b, i);
                let is_self = (m & KEY_MASK) == pk.key && addr == pk.addr;
                if !is_self {
                    out.push(A::decode(m, addr));
                    if out.len() >= want {
                        return;
                    }
                }
            }
            i = if i + 1 == cap { 0 } else { i + 1 };
        }
    }

    /// Freezes block `b` (whose migration was started), allocates its successor (a block
    /// holding the live peers, or a corpse if a kill finds none), copies the live peers and
    /// puts the successor in the map in place of `b`. Every step is idempotent, so any number
    /// of threads may run this concurrently and each can finish it alone.
    pub(crate) fn help_migrate(&self, b: Block, ctx: &Ctx, g: &Guard) -> Migrated {
        let fam = self.fam;
        let words = self.words();
        let cap = b.cap();
        let _ = b.cas_state(NEXT_NONE, NEXT_GROW);
        for i in 0..cap {
            let w = b.word(i, 0);
            let mut m = w.load(Acquire);
            loop {
                if m & FROZEN != 0 {
                    break;
                }
                // A v6 reservation is frozen as it is, without waiting for its publication:
                // it holds no peer (it is not live, so it is not copied), and its inserter's
                // publishing CAS fails and retries in the successor.
                match w.compare_exchange_weak(m, m | FROZEN, AcqRel, Acquire) {
                    Ok(_) => break,
                    Err(x) => m = x,
                }
            }
        }
        let completed = b.head().completed.fetch_or(COMPLETED_FROZEN, AcqRel) & !COMPLETED_FROZEN;
        let mut n = b.state();
        if n == NEXT_GROW || n == NEXT_KILL {
            // The slots and `completed` are frozen: every helper computes the same successor.
            let (mut live, mut seeders) = (0usize, 0usize);
            for i in 0..cap {
                let m = b.word(i, 0).load(Acquire);
                if is_live(fam, m) {
                    live += 1;
                    seeders += usize::from(m & SEEDER != 0);
                }
            }
            let succ = if live == 0 && n == NEXT_KILL {
                Block::corpse(&self.slab, *b.info_hash(), words)
            } else {
                let c = peer_cap_for(live + 1, words);
                Block::alloc(
                    &self.slab,
                    *b.info_hash(),
                    c,
                    words,
                    completed,
                    seeders as u32,
                    (live - seeders) as u32,
                )
            };
            match b.cas_state(n, succ.addr() as u64) {
                Ok(()) => n = succ.addr() as u64,
                Err(cur) => {
                    // SAFETY: never published.
                    unsafe { succ.free(&self.slab) };
                    n = cur;
                }
            }
        }
        let succ = self.successor(n, g);
        let h = info_hash_hash(b.info_hash(), ctx.seed);
        if succ.is_corpse() {
            let won = self.map_replace(h, b.addr(), succ.addr() as u64 | M_REMOVED, ctx, g);
            if won {
                self.swarms.fetch_sub(1, Relaxed);
                ctx.swarms.fetch_sub(1, Relaxed);
                self.retire_block(b, g);
            }
            return Migrated::Dead(won);
        }
        for i in 0..cap {
            let m = b.word(i, 0).load(Acquire);
            if is_live(fam, m) {
                self.copy_peer(b, succ, m & !FROZEN, self.addr_words(b, i), ctx);
            }
        }
        if self.map_replace(h, b.addr(), succ.addr() as u64, ctx, g) {
            self.retire_block(b, g);
        }
        Migrated::Moved(succ)
    }

    fn retire_block(&self, b: Block, g: &Guard) {
        let (a, words, slab) = (b.addr(), self.words(), Arc::clone(&self.slab));
        // SAFETY: the map no longer names `b` (the caller won the replacing CAS, so this runs
        // once per block) and no late copier can put it back (`map_copy`), so only threads
        // pinned before now can reach it, through the map or a predecessor's `next`. The
        // closure keeps the slab alive (it may run after the store is dropped).
        unsafe { retire(g, move || Block::from_addr(a, words).free(&slab)) };
    }

    /// Writes the address words of v6 slot `i` of `b`, reserved with value `reserved`, and
    /// publishes `v` there (Release: the address words are visible to whoever reads `v`).
    /// False if the slot no longer holds the reservation: a migration froze it, or (in a
    /// successor being filled) a fellow copier published the same value first.
    fn publish(
        &self,
        who: Publisher,
        b: Block,
        i: usize,
        reserved: u64,
        addr: [u64; 2],
        v: u64,
    ) -> bool {
        #[cfg(test)]
        crate::test_hooks::before_publish(who);
        let _ = who;
        b.word(i, 1).store(addr[0], Relaxed);
        b.word(i, 2).store(addr[1], Relaxed);
        b.word(i, 0)
            .compare_exchange(reserved, v, Release, Relaxed)
            .is_ok()
    }

    /// True if frozen block `old` holds no live peer other than the one with meta `v` and
    /// address `addr` whose key bits (tag and port) equal `v`'s.
    fn key_bits_unique(&self, old: Block, v: u64, addr: [u64; 2]) -> bool {
        (0..old.cap()).all(|i| {
            let m = old.word(i, 0).load(Acquire);
            !is_live(self.fam, m)
                || (m & KEY_MASK) != (v & KEY_MASK)
                || self.addr_words(old, i) == addr
        })
    }

    /// Inserts frozen live value `v` (of frozen block `old`) into successor `new` unless that
    /// peer is already there (live or as a keyed tombstone). Stops if `new` is frozen: its copy
    /// was then complete.
    ///
    /// Until one copy pass is complete only copiers write to `new`, and a late copier never
    /// meets a reservation before its peer's slot (every slot before it was taken when the
    /// peer was first copied), so a reservation with this peer's tag and port is a fellow
    /// copier's. If no other peer of `old` has that tag and port, it is this very peer: help
    /// by publishing it (the same value and address the other copier writes). Only in the
    /// ~2^-30 case of a second such peer does a copier wait for the other one's publication.
    fn copy_peer(&self, old: Block, new: Block, v: u64, addr: [u64; 2], ctx: &Ctx) {
        let v6 = self.fam == IpFamily::V6;
        let pk = PeerKey::from_slot(self.fam, v, addr, ctx.seed);
        let cap = new.cap();
        let mut i = index(pk.hash, cap);
        let mut backoff = Backoff::new();
        for _ in 0..cap {
            let w = new.word(i, 0);
            let mut x = w.load(Acquire);
            loop {
                if x & FROZEN != 0 {
                    return;
                }
                if is_empty(x) {
                    let first = if v6 { pk.reserved_meta() } else { v };
                    match w.compare_exchange(x, first, AcqRel, Acquire) {
                        Ok(_) => {
                            if let Some(b) = new.big() {
                                b.used.fetch_add(1, Relaxed);
                            }
                            if v6 {
                                // Fails only if a fellow copier published `v` for us.
                                self.publish(Publisher::Copier, new, i, first, addr, v);
                            }
                            return;
                        }
                        Err(cur) => {
                            x = cur;
                            continue;
                        }
                    }
                }
                if is_reserved(self.fam, x) {
                    if self.reserved_by(x, &pk) {
                        if self.key_bits_unique(old, v, addr) {
                            self.publish(Publisher::Copier, new, i, x, addr, v);
                            return;
                        }
                        backoff.snooze();
                        x = w.load(Acquire);
                        continue;
                    }
                    break;
                }
                if self.matches(new, i, x, &pk) {
                    return;
                }
                break;
            }
            i = if i + 1 == cap { 0 } else { i + 1 };
        }
        debug_assert!(false, "peer successor full during copy");
    }

    /// Expires old peers of the swarm of block `b`; frees the swarm if empty, compacts its
    /// block if tombstone-heavy. Returns the swarm's block afterwards (`None`: it was freed).
    pub(crate) fn clean_swarm(
        &self,
        mut b: Block,
        now_stamp: u64,
        ctx: &Ctx,
        g: &Guard,
        rep: &mut CleanReport,
    ) -> Option<Block> {
        let stripe = stripe_of(info_hash_hash(b.info_hash(), ctx.seed));
        // A migration met on the way is helped, then the swarm is cleaned again on its new
        // block (a few times at most; after that it waits for the next cycle).
        'attempt: for _ in 0..4 {
            if b.state() != NEXT_NONE {
                match self.help_migrate(b, ctx, g) {
                    Migrated::Moved(n) => {
                        b = n;
                        continue 'attempt;
                    }
                    Migrated::Dead(mine) => {
                        rep.swarms_freed += usize::from(mine);
                        return None;
                    }
                }
            }
            let cap = b.cap();
            let (mut live, mut used) = (0usize, 0usize);
            for i in 0..cap {
                let w = b.word(i, 0);
                let mut m = w.load(Acquire);
                loop {
                    if m & FROZEN != 0 {
                        continue 'attempt;
                    }
                    if !is_live(self.fam, m) {
                        break;
                    }
                    if !is_expired(m, now_stamp, ctx.timeout_units) {
                        live += 1;
                        break;
                    }
                    match w.compare_exchange(m, (m & KEY_MASK) | REMOVED, AcqRel, Acquire) {
                        Ok(_) => {
                            self.count(b, stripe, m & SEEDER != 0, false);
                            ctx.release_peer();
                            rep.peers_expired += 1;
                            break;
                        }
                        Err(x) => m = x,
                    }
                }
                // An expired peer just turned into a tombstone: still a used slot.
                used += usize::from(!is_empty(m));
            }
            if let Some(x) = b.big() {
                used = x.used.load(Relaxed) as usize;
            }
            // Compact a small block only when its successor would be smaller (a successor of
            // the same size would only trade tombstones for EMPTY slots, and reallocating
            // every swarm a peer left fragments memory); a big one when a quarter is tombstones.
            let compact = if cap <= SMALL_MAX {
                used > live && peer_cap_for(live + 1, self.words()) < cap
            } else {
                (used - live) * 4 > cap
            };
            let kind = if live == 0 {
                NEXT_KILL
            } else if compact {
                NEXT_GROW
            } else {
                return Some(b);
            };
            let _ = b.cas_state(NEXT_NONE, kind);
            return match self.help_migrate(b, ctx, g) {
                Migrated::Moved(n) => Some(n),
                Migrated::Dead(mine) => {
                    rep.swarms_freed += usize::from(mine);
                    None
                }
            };
        }
        Some(b)
    }

    /// Test/debug view: the live peers (address, seeder) of the swarm for `ih`.
    pub(crate) fn peers_of<A: PeerAddress>(
        &self,
        ih: &[u8; 20],
        ctx: &Ctx,
        g: &Guard,
    ) -> Option<Vec<(A, bool)>> {
        let h = info_hash_hash(ih, ctx.seed);
        let b = self.lookup(ih, h, ctx, g)?;
        Some(self.peers_in(b))
    }

    fn peers_in<A: PeerAddress>(&self, b: Block) -> Vec<(A, bool)> {
        let mut v = Vec::new();
        for i in 0..b.cap() {
            let m = b.word(i, 0).load(Acquire);
            if is_live(self.fam, m) {
                v.push((A::decode(m, self.addr_words(b, i)), m & SEEDER != 0));
            }
        }
        v
    }

    /// Raw (signed) counts of the swarm for `ih`: (seeders, leechers, completed).
    pub(crate) fn raw_counts(
        &self,
        ih: &[u8; 20],
        ctx: &Ctx,
        g: &Guard,
    ) -> Option<(i32, i32, u32)> {
        let b = self.lookup(ih, info_hash_hash(ih, ctx.seed), ctx, g)?;
        let (s, l) = self.counts(b);
        Some((s as i32, l as i32, Self::completed_of(b)))
    }

    /// Test/debug walk over every swarm: (swarms, peers stored, sum of their counts).
    pub(crate) fn audit<A: PeerAddress>(&self, g: &Guard) -> (usize, usize, i64) {
        let (mut swarms, mut peers, mut counted) = (0, 0, 0i64);
        self.walk_swarms(g, |b| {
            swarms += 1;
            let (s, l) = self.counts(b);
            counted += i64::from(s as i32) + i64::from(l as i32);
            peers += self.peers_in::<A>(b).len();
        });
        (swarms, peers, counted)
    }

    /// Calls `f` on the block of every live swarm (walks every shard).
    pub(crate) fn walk_swarms(&self, g: &Guard, mut f: impl FnMut(Block)) {
        for s in 0..SHARDS {
            let t = self.map_table(s, g);
            for i in 0..t.cap() {
                let v = t.word(i, 0).load(Acquire) & !M_FROZEN;
                if v != 0 && v & M_REMOVED == 0 {
                    // SAFETY: live slot read under `g`.
                    f(unsafe { self.block_of(v, g) });
                }
            }
        }
    }

    /// Bytes requested by live structures: (block headers, peer slots, map tables).
    pub(crate) fn allocated_bytes(&self, g: &Guard) -> (usize, usize, usize) {
        let (mut hd, mut sl, mut map) = (0, 0, 0);
        for s in 0..SHARDS {
            map += crate::table::table_bytes(self.map_table(s, g).cap(), 1);
        }
        self.walk_swarms(g, |b| {
            let (h, s) = block_bytes(b.cap(), self.words());
            hd += h;
            sl += s;
        });
        (hd, sl, map)
    }

    /// What slot `i` of map table `t` (read under `g`) holds.
    pub(crate) fn map_slot(&self, t: Table, i: usize, g: &Guard) -> MapSlot {
        let v = t.word(i, 0).load(Acquire) & !M_FROZEN;
        if v == 0 {
            MapSlot::Empty
        } else if v & M_REMOVED != 0 {
            MapSlot::Dead
        } else {
            // SAFETY: a live slot of a table reachable under `g`.
            MapSlot::Live(unsafe { self.block_of(v, g) })
        }
    }

    /// Rebuilds shard `s`'s map table `t` if a walk of all its slots found it mostly
    /// tombstones (`dead` > cap/4) or more than four times the size a rebuild would have
    /// (`live` swarms): the rebuild drops the tombstones and, with the old table, frees their
    /// corpses. True if it did. (Left alone, such a table would wait for enough new swarms to
    /// pass 7/8 of it, e.g. for ever after a flood of random info hashes.)
    pub(crate) fn shrink_map_if_sparse(
        &self,
        s: usize,
        t: Table,
        live: usize,
        dead: usize,
        ctx: &Ctx,
        g: &Guard,
    ) -> bool {
        let cap = t.cap();
        // Not under loom: a shrink is `help_map_migrate`, whose races the growth models cover,
        // and a map migration inside every model's `clean` multiplies their executions.
        if cfg!(loom)
            || cap <= MAP_MIN_CAP
            || (dead * 4 <= cap && map_cap_for(live + 1, MAP_MIN_CAP) * 4 > cap)
        {
            return false;
        }
        if self.map_table(s, g).addr() != t.addr() {
            return false; // it migrated since the walk
        }
        self.help_map_migrate(s, t, ctx, g);
        true
    }
}

/// Snapshots (see `snapshot.rs`): a shard's swarms with their peers and ages, and restoring.
impl Family {
    /// Calls `f` with the info hash, completed count and live, unexpired peers (address,
    /// seeder, age in seconds) of every swarm of shard `s`, as of `now_stamp`.
    pub(crate) fn export_shard<A: PeerAddress>(
        &self,
        s: usize,
        now_stamp: u64,
        ctx: &Ctx,
        g: &Guard,
        peers: &mut Vec<(A, bool, u32)>,
        f: &mut impl FnMut(&[u8; 20], u32, &[(A, bool, u32)]),
    ) {
        let t = self.map_table(s, g);
        for i in 0..t.cap() {
            let MapSlot::Live(b) = self.map_slot(t, i, g) else {
                continue;
            };
            peers.clear();
            for k in 0..b.cap() {
                let m = b.word(k, 0).load(Acquire);
                if is_live(self.fam, m) && !is_expired(m, now_stamp, ctx.timeout_units) {
                    peers.push((
                        A::decode(m, self.addr_words(b, k)),
                        m & SEEDER != 0,
                        age_secs(m, now_stamp),
                    ));
                }
            }
            f(b.info_hash(), Self::completed_of(b), peers);
        }
    }

    /// Stores peer `pk` with `stamp` (restoring a snapshot); false if the store is full.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn restore_peer(
        &self,
        ih: &[u8; 20],
        h: u64,
        pk: &PeerKey,
        seeder: bool,
        stamp: u64,
        ctx: &Ctx,
        g: &Guard,
    ) -> bool {
        loop {
            let Some(sw) = self
                .lookup(ih, h, ctx, g)
                .or_else(|| self.get_or_insert(ih, h, ctx, g))
            else {
                return false;
            };
            match self
                .upsert(sw, stripe_of(h), pk, seeder, false, stamp, ctx, g)
                .0
            {
                Upsert::Inserted | Upsert::Updated => return true,
                Upsert::Full => return false,
                Upsert::Dead => continue,
            }
        }
    }

    /// Adds `n` completions to the swarm of `ih` (restoring a snapshot), if it exists.
    pub(crate) fn restore_completed(&self, ih: &[u8; 20], h: u64, n: u32, ctx: &Ctx, g: &Guard) {
        let stripe = stripe_of(h);
        for _ in 0..n {
            let Some(b) = self.lookup(ih, h, ctx, g) else {
                return;
            };
            self.add_completed(b, stripe, ctx, g);
        }
    }
}

/// Age in seconds of a stored peer's stamp at `now_stamp` (0 for a stamp from the future).
fn age_secs(m: u64, now_stamp: u64) -> u32 {
    let age = now_stamp.wrapping_sub((m >> crate::addr::STAMP_SHIFT) & crate::addr::STAMP_MASK)
        & crate::addr::STAMP_MASK;
    if age >= crate::addr::STAMP_RANGE - crate::addr::FUTURE_UNITS {
        0
    } else {
        (age << crate::addr::STAMP_SHIFT) as u32
    }
}

/// Prefetches (the request pipeline's stages; see `pinned.rs`).
impl Family {
    /// Prefetches the home map slot of the swarm with hash `h`.
    #[inline]
    pub(crate) fn prefetch_map_slot(&self, h: u64, g: &Guard) {
        let t = self.map_table((h as usize) & (SHARDS - 1), g);
        prefetch(t.word(index(h, t.cap()), 0));
    }

    /// Reads the home map slot of the swarm with hash `h` and, if it holds a live swarm with
    /// that hash's tag, prefetches the block's first two cache lines (its header and, for
    /// small blocks, its slots). Another swarm in the slot costs one wasted prefetch.
    #[inline]
    pub(crate) fn prefetch_block(&self, h: u64, g: &Guard) {
        let t = self.map_table((h as usize) & (SHARDS - 1), g);
        let m = t.word(index(h, t.cap()), 0).load(Relaxed);
        if m & (M_REMOVED | M_FROZEN) == 0 && m != 0 && m >> 48 == tag_of(h) {
            let a = (m & M_PTR) as usize as *const u8;
            prefetch(a);
            prefetch(a.wrapping_add(64));
        }
    }
}

/// A hint to the CPU to bring the cache line of `p` close; never faults, changes nothing.
#[inline(always)]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: prefetching has no effect on the program's semantics and never faults, even
        // for an address that is not mapped (here it is one we read under the epoch pin).
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Who publishes an IPv6 slot (the test hooks stall one or the other).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Publisher {
    /// An announce inserting its peer.
    Inserter,
    /// A migration copying a peer into the successor.
    Copier,
}

/// What a swarm-map slot holds, for the cleaner's walk.
pub(crate) enum MapSlot {
    Empty,
    /// A live swarm's newest block.
    Live(Block),
    /// The tombstone of a freed swarm.
    Dead,
}

impl Drop for Family {
    fn drop(&mut self) {
        let words = self.words();
        for s in self.shards.iter() {
            // SAFETY: `&mut self`: no other thread uses the store any more.
            let t = unsafe { shard_table(s.load(Relaxed)) };
            for i in 0..t.cap() {
                let v = t.word(i, 0).load(Relaxed) & !M_FROZEN;
                if v != 0 && v & M_REMOVED == 0 {
                    // SAFETY: each live swarm's newest block is owned by exactly one live map
                    // slot; replaced blocks were retired through the epoch instead.
                    unsafe { Block::from_addr((v & M_PTR) as usize, words).free(&self.slab) };
                }
            }
            // SAFETY: as above; the current map table (and its corpses) is freed once.
            unsafe { free_map_table(t, words, &self.slab) };
        }
    }
}
