//! The swarm map: per shard, an open-addressing table of [`MapValue`]s, each naming the
//! newest block of a swarm (or, REMOVED, the corpse of a freed one). Lookup, creation, the
//! replacement of a block by its successor, and the migration of a table to a successor
//! (growth, and the shrinking the cleaner asks for). See docs/architecture.md, *The swarm
//! map* and *Late map copies*.

use std::marker::PhantomData;
use std::sync::Arc;

use super::peers::SELECT_AHEAD;
use super::{Ctx, Family, SHARDS, info_hash_hash};
use crate::block::{Block, StartCounts, peer_cap_for};
use crate::slab::Slab;
use crate::sync::epoch::{self, Guard, retire};
use crate::sync::{AtomicU64, AtomicUsize, Ordering::*};
use crate::table::{Slots, Table, TableNext, index, map_cap_for, map_max_used};

#[cfg(not(loom))]
const MAP_MIN_CAP: usize = 8;
#[cfg(loom)]
const MAP_MIN_CAP: usize = 2;

const M_FROZEN: u64 = 1;
const M_REMOVED: u64 = 2;
const M_PTR: u64 = 0x0000_FFFF_FFFF_FFF8;
const TAG_SHIFT: u32 = 48;

#[inline]
fn tag_of(h: u64) -> u64 {
    (h >> 16) & 0xFFFF
}

/// A map slot's value: block address (8-aligned, < 2^48) | tag << 48 | REMOVED | FROZEN;
/// [`MapValue::EMPTY`] is 0. A live value names the newest block of a swarm; a REMOVED value
/// names the corpse of a freed swarm, which lives (and keeps its info hash readable) as long
/// as the map table that holds it. Once a slot left EMPTY, every block it names has the same
/// info hash.
///
/// A value carries the lifetime of the table view it was loaded from (or of the block it was
/// made from): every block a slot of a reachable table names stays allocated as long as the
/// table is reachable (*Reclamation*, 2 and 4), so the block it names may be read for `'g`.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq)]
struct MapValue<'g>(u64, PhantomData<&'g Guard>);

impl<'g> MapValue<'g> {
    const EMPTY: Self = MapValue(0, PhantomData);

    /// The value that names block `b` with tag `tag`: live, or REMOVED for a corpse.
    #[inline]
    fn naming(b: Block<'g>, tag: u64) -> Self {
        let removed = if b.is_corpse() { M_REMOVED } else { 0 };
        MapValue(b.addr() as u64 | (tag << TAG_SHIFT) | removed, PhantomData)
    }
    #[inline]
    fn is_frozen(self) -> bool {
        self.0 & M_FROZEN != 0
    }
    /// The value without its FROZEN bit (what a copy into the successor stores).
    #[inline]
    fn unfrozen(self) -> Self {
        MapValue(self.0 & !M_FROZEN, PhantomData)
    }
    /// EMPTY, frozen or not.
    #[inline]
    fn is_empty(self) -> bool {
        self.0 & !M_FROZEN == 0
    }
    /// The tombstone of a freed swarm (it names the swarm's corpse).
    #[inline]
    fn is_removed(self) -> bool {
        self.0 & M_REMOVED != 0
    }
    /// Names a live swarm's newest block (frozen or not).
    #[inline]
    fn is_live(self) -> bool {
        !self.is_empty() && !self.is_removed()
    }
    /// 16 bits of the info-hash hash: a probe skips most other swarms without a dereference.
    #[inline]
    fn tag(self) -> u64 {
        self.0 >> TAG_SHIFT
    }
    #[inline]
    fn names(self, b: Block<'_>) -> bool {
        (self.0 & M_PTR) as usize == b.addr()
    }
    #[inline]
    fn same_target(self, other: MapValue<'_>) -> bool {
        self.0 & M_PTR == other.0 & M_PTR
    }
    /// The address of the block a live value with tag `tag` names, without reading it (for
    /// a prefetch); `None` for EMPTY, frozen, removed or another tag.
    #[inline]
    fn live_addr_with_tag(self, tag: u64) -> Option<usize> {
        (!self.is_empty() && !self.is_frozen() && !self.is_removed() && self.tag() == tag)
            .then_some((self.0 & M_PTR) as usize)
    }
    /// The block a non-EMPTY value names (a live swarm's block or a corpse).
    #[inline]
    fn target(self, words: usize) -> Option<Block<'g>> {
        if self.is_empty() {
            return None;
        }
        // SAFETY: a non-EMPTY value of a table that lives for `'g` (or made from a block that
        // does) names a block that stays allocated for `'g` (see the type's documentation),
        // of this family's `words`, published by the CAS that stored the value and read back
        // with Acquire.
        Some(unsafe { Block::from_addr((self.0 & M_PTR) as usize, words) })
    }
    /// The block of a live value; `None` for EMPTY and tombstones.
    #[inline]
    fn live_block(self, words: usize) -> Option<Block<'g>> {
        if self.is_removed() {
            return None;
        }
        self.target(words)
    }
}

/// A map slot, typed: loads and CASes take and give [`MapValue`]s of the table's lifetime.
#[derive(Clone, Copy)]
struct MapCell<'g>(&'g AtomicU64);

/// Every slot of map table `t`, in order.
#[inline]
fn cells(t: Table<'_>) -> impl Iterator<Item = MapCell<'_>> {
    t.slots().map(MapCell)
}

impl<'g> MapCell<'g> {
    #[inline]
    fn load(self, order: crate::sync::Ordering) -> MapValue<'g> {
        MapValue(self.0.load(order), PhantomData)
    }
    #[inline]
    fn compare_exchange(
        self,
        current: MapValue<'g>,
        new: MapValue<'g>,
    ) -> Result<(), MapValue<'g>> {
        self.0
            .compare_exchange(current.0, new.0, AcqRel, Acquire)
            .map(|_| ())
            .map_err(|x| MapValue(x, PhantomData))
    }
    /// Sets the FROZEN bit: the slot refuses every CAS from now on.
    #[inline]
    fn freeze(self) {
        self.0.fetch_or(M_FROZEN, AcqRel);
    }
}

/// What a swarm-map slot holds, for the cleaner's walk.
pub(crate) enum MapSlot<'g> {
    Empty,
    /// A live swarm's newest block.
    Live(Block<'g>),
    /// The tombstone of a freed swarm.
    Dead,
}

/// A shard word: the map table's address | its capacity << 48 (`SHARD_CAP_HEADER` if it does
/// not fit: read it from the header). A lookup then reads no table header.
const SHARD_CAP_HEADER: usize = 0xFFFF;
fn shard_word(t: Table<'_>) -> usize {
    let a = t.addr();
    assert!(a >> 48 == 0, "map table address does not fit 48 bits");
    a | (t.cap().min(SHARD_CAP_HEADER) << 48)
}
/// The table a shard word names.
///
/// # Safety
/// `w` must be a shard word naming a map table that stays allocated, with what it leads to,
/// for all of `'a` (see [`Table::from_addr`]).
#[inline]
unsafe fn shard_table<'a>(w: usize) -> Table<'a> {
    let (a, c) = (w & ((1 << 48) - 1), w >> 48);
    if c == SHARD_CAP_HEADER {
        // SAFETY: per the contract.
        unsafe { Table::from_addr(a, 1) }
    } else {
        // SAFETY: per the contract; `c` is the capacity `shard_word` recorded.
        unsafe { Table::from_addr_cap(a, 1, c) }
    }
}

/// The shards of a new family: each an empty table of `MAP_MIN_CAP` slots.
pub(super) fn empty_shards(slab: &Slab) -> Box<[AtomicUsize]> {
    let g = epoch::pin();
    (0..SHARDS)
        .map(|_| AtomicUsize::new(shard_word(Table::alloc(slab, MAP_MIN_CAP, 1, 1, &g))))
        .collect()
}

/// Frees a map table and the corpses its REMOVED slots own.
///
/// # Safety
/// The table must be unreachable for every thread, and freed at most once.
unsafe fn free_map_table(t: Table<'_>, words: usize, slab: &Slab) {
    for w in cells(t) {
        let v = w.load(Relaxed);
        if v.is_removed()
            && let Some(corpse) = v.target(words)
        {
            // SAFETY: a corpse is owned by the one REMOVED slot that names it (REMOVED slots
            // are never copied), and that slot's table is being freed.
            unsafe { corpse.free(slab) };
        }
    }
    // SAFETY: per the contract.
    unsafe { t.free(slab) };
}

impl Family {
    #[inline]
    fn shard_of(h: u64) -> usize {
        (h as usize) & (SHARDS - 1)
    }

    /// The current map table of shard `s`.
    #[inline]
    pub(crate) fn map_table<'g>(&self, s: usize, _g: &'g Guard) -> Table<'g> {
        // SAFETY: shard words always name a live map table (words = 1) and its capacity,
        // published by the CAS that installed it (read with Acquire); a replaced table is
        // retired through the epoch only after it was unlinked here, and `_g` pins us, so it
        // (and its successors and the blocks its slots name) lives for `'g`.
        unsafe { shard_table(self.shards[s].load(Acquire)) }
    }

    /// The swarm's block if map value `m` (not EMPTY, not frozen) names it: live, the tag of
    /// `h` matches, and the full info hash compares equal.
    #[inline]
    fn matching<'g>(&self, m: MapValue<'g>, h: u64, ih: &[u8; 20]) -> Option<Block<'g>> {
        if m.is_removed() || m.tag() != tag_of(h) {
            return None;
        }
        m.live_block(self.words()).filter(|b| b.info_hash() == ih)
    }

    #[inline]
    pub(crate) fn lookup<'g>(
        &self,
        ih: &[u8; 20],
        h: u64,
        ctx: &Ctx,
        g: &'g Guard,
    ) -> Option<Block<'g>> {
        let s = Self::shard_of(h);
        'retry: loop {
            let t = self.map_table(s, g);
            for w in t.probe(h) {
                let m = MapCell(w).load(Acquire);
                if m.is_frozen() {
                    self.help_map_migrate(s, t, ctx, g);
                    continue 'retry;
                }
                if m.is_empty() {
                    return None;
                }
                if let Some(b) = self.matching(m, h, ih) {
                    return Some(b);
                }
            }
            return None;
        }
    }

    /// Finds the swarm or creates it; `None` when the swarm limit is reached.
    pub(crate) fn get_or_insert<'g>(
        &self,
        ih: &[u8; 20],
        h: u64,
        ctx: &Ctx,
        g: &'g Guard,
    ) -> Option<Block<'g>> {
        let s = Self::shard_of(h);
        let mut fresh: Option<Block<'g>> = None;
        let found = 'retry: loop {
            let t = self.map_table(s, g);
            if t.is_migrating() {
                self.help_map_migrate(s, t, ctx, g);
                continue;
            }
            let hd = t.header();
            let mut probe = t.probe(h);
            while let Some(w) = probe.current() {
                let w = MapCell(w);
                let m = w.load(Acquire);
                if m.is_frozen() {
                    self.help_map_migrate(s, t, ctx, g);
                    continue 'retry;
                }
                if m.is_empty() {
                    if hd.used.load(Relaxed) as usize >= map_max_used(t.cap()) {
                        let _ = t.cas_next(TableNext::None, TableNext::Grow);
                        continue 'retry;
                    }
                    let b = match fresh {
                        Some(b) => b,
                        None => {
                            if !ctx.reserve_swarm() {
                                break 'retry None;
                            }
                            let cap = peer_cap_for(1, self.words());
                            let counts = StartCounts::default();
                            *fresh.insert(Block::alloc(
                                &self.slab,
                                *ih,
                                cap,
                                self.words(),
                                counts,
                                g,
                            ))
                        }
                    };
                    self.swarms.fetch_add(1, Relaxed);
                    if w.compare_exchange(MapValue::EMPTY, MapValue::naming(b, tag_of(h)))
                        .is_ok()
                    {
                        hd.used.fetch_add(1, Relaxed);
                        fresh = None;
                        break 'retry Some(b);
                    }
                    self.swarms.fetch_sub(1, Relaxed);
                    continue; // re-examine slot i
                }
                if let Some(b) = self.matching(m, h, ih) {
                    break 'retry Some(b);
                }
                probe.advance();
            }
            let _ = t.cas_next(TableNext::None, TableNext::Grow);
        };
        if let Some(b) = fresh {
            // SAFETY: `b` was never published, so this thread is its only owner.
            unsafe { b.free(&self.slab) };
            ctx.release_swarm();
        }
        found
    }

    /// Replaces the live map slot naming block `old` with one naming `new` (a tombstone if
    /// `new` is a corpse), keeping its tag. True if this call did it: the caller then retires
    /// `old`. False if no live slot names `old` any more (another helper replaced it).
    pub(super) fn map_replace<'g>(
        &self,
        h: u64,
        old: Block<'g>,
        new: Block<'g>,
        ctx: &Ctx,
        g: &'g Guard,
    ) -> bool {
        let s = Self::shard_of(h);
        'retry: loop {
            let t = self.map_table(s, g);
            if t.is_migrating() {
                self.help_map_migrate(s, t, ctx, g);
                continue;
            }
            for w in t.probe(h) {
                let w = MapCell(w);
                let mut m = w.load(Acquire);
                loop {
                    if m.is_frozen() {
                        self.help_map_migrate(s, t, ctx, g);
                        continue 'retry;
                    }
                    if m.is_empty() {
                        return false;
                    }
                    // `old` is live under our guard, so no other slot (a corpse's included)
                    // can hold its address.
                    if m.is_removed() || !m.names(old) {
                        break;
                    }
                    match w.compare_exchange(m, MapValue::naming(new, m.tag())) {
                        Ok(()) => return true,
                        Err(x) => m = x,
                    }
                }
            }
            return false;
        }
    }

    /// Freezes map table `t` of shard `s`, copies its live entries to the successor and
    /// installs it. Lock-free: every helper can finish alone; copying is idempotent.
    fn help_map_migrate<'g>(&self, s: usize, t: Table<'g>, ctx: &Ctx, g: &'g Guard) {
        let _ = t.cas_next(TableNext::None, TableNext::Grow);
        for w in cells(t) {
            w.freeze();
        }
        if let TableNext::Grow = t.next() {
            let live = cells(t).filter(|w| w.load(Acquire).is_live()).count();
            let generation = t.header().generation + 1;
            let new_cap = map_cap_for(live + 1, MAP_MIN_CAP);
            let new = Table::alloc(&self.slab, new_cap, 1, generation, g);
            if t.cas_next(TableNext::Grow, TableNext::Successor(new))
                .is_err()
            {
                // SAFETY: `new` was never published.
                unsafe { new.free(&self.slab) };
            }
        }
        // Published now (not `None`: the CAS above left it for good), by this thread or
        // another; every helper takes its view from `next`.
        let TableNext::Successor(new) = t.next() else {
            unreachable!("a started map migration's state leaves Grow only for its successor")
        };
        for w in cells(t) {
            let v = w.load(Acquire);
            if v.is_live() {
                self.map_copy(new, v.unfrozen(), ctx);
            }
        }
        if self.shards[s]
            .compare_exchange(shard_word(t), shard_word(new), AcqRel, Acquire)
            .is_ok()
        {
            let (a, words, slab) = (t.addr(), self.words(), Arc::clone(&self.slab));
            // SAFETY: the shard no longer points to `t`; threads that still see it pinned
            // before now. Retired once: only the winner of this CAS gets here. Its corpses go
            // with it (they were not copied). The table is the closure's alone when it runs.
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
    fn map_copy<'g>(&self, new: Table<'g>, v: MapValue<'g>, ctx: &Ctx) {
        let Some(b) = v.live_block(self.words()) else {
            return;
        };
        let h = info_hash_hash(b.info_hash(), ctx.seed);
        for w in new.probe(h) {
            let w = MapCell(w);
            let mut x = w.load(Acquire);
            loop {
                if x.is_frozen() {
                    return;
                }
                if x.is_empty() {
                    match w.compare_exchange(MapValue::EMPTY, v) {
                        Ok(()) => {
                            new.header().used.fetch_add(1, Relaxed);
                            return;
                        }
                        Err(cur) => {
                            x = cur;
                            continue;
                        }
                    }
                }
                if x.same_target(v) {
                    return;
                }
                if x.tag() == v.tag()
                    && x.target(self.words())
                        .is_some_and(|o| o.info_hash() == b.info_hash())
                {
                    return;
                }
                break;
            }
        }
        debug_assert!(false, "map successor full during copy");
    }

    /// What slot `i` of map table `t` holds (`Empty` past its end).
    pub(crate) fn map_slot<'g>(&self, t: Table<'g>, i: usize) -> MapSlot<'g> {
        let Some(w) = t.slot(i) else {
            return MapSlot::Empty;
        };
        let v = MapCell(w).load(Acquire);
        if v.is_removed() {
            MapSlot::Dead
        } else {
            v.live_block(self.words())
                .map_or(MapSlot::Empty, MapSlot::Live)
        }
    }

    /// Rebuilds shard `s`'s map table `t` if a walk of all its slots found it mostly
    /// tombstones (`dead` > cap/4) or more than four times the size a rebuild would have
    /// (`live` swarms): the rebuild drops the tombstones and, with the old table, frees their
    /// corpses. True if it did. (Left alone, such a table would wait for enough new swarms to
    /// pass 7/8 of it, e.g. for ever after a flood of random info hashes.)
    pub(crate) fn shrink_map_if_sparse<'g>(
        &self,
        s: usize,
        t: Table<'g>,
        live: usize,
        dead: usize,
        ctx: &Ctx,
        g: &'g Guard,
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

/// Frees every map table, the newest block of every live swarm, and the corpses.
impl Drop for Family {
    fn drop(&mut self) {
        let words = self.words();
        for s in self.shards.iter() {
            // SAFETY: `&mut self`: no other thread uses the store any more, so the current
            // table (and every block it names) stays allocated until it is freed below.
            let t = unsafe { shard_table(s.load(Relaxed)) };
            for w in cells(t) {
                if let Some(b) = w.load(Relaxed).live_block(words) {
                    // SAFETY: each live swarm's newest block is owned by exactly one live map
                    // slot; replaced blocks were retired through the epoch instead.
                    unsafe { b.free(&self.slab) };
                }
            }
            // SAFETY: as above; the current map table (and its corpses) is freed once.
            unsafe { free_map_table(t, words, &self.slab) };
        }
    }
}

/// Prefetches (the request pipeline's stages; see `pinned.rs`).
impl Family {
    /// Prefetches the home map slot of the swarm with hash `h`.
    #[inline]
    pub(crate) fn prefetch_map_slot(&self, h: u64, g: &Guard) {
        if let Some(w) = self.map_table(Self::shard_of(h), g).probe(h).current() {
            prefetch(std::ptr::from_ref(w));
        }
    }

    /// Reads the home map slot of the swarm with hash `h` and, if it holds a live swarm with
    /// that hash's tag, prefetches the block's first two cache lines (its header and, for
    /// small blocks, its slots). Another swarm in the slot costs one wasted prefetch.
    #[inline]
    pub(crate) fn prefetch_block(&self, h: u64, g: &Guard) {
        let Some(w) = self.map_table(Self::shard_of(h), g).probe(h).current() else {
            return;
        };
        if let Some(a) = MapCell(w).load(Relaxed).live_addr_with_tag(tag_of(h)) {
            let p = std::ptr::without_provenance::<u8>(a);
            prefetch(p);
            prefetch(p.wrapping_add(64));
        }
    }

    /// Finds the swarm with hash `h` (its map slot and block header are in cache after the
    /// two stages above) without helping a map migration, and, if its block is big (a small
    /// block's slots came with its header), prefetches the line of the slot where peer hash
    /// `pk_hash` probes first and the first `SELECT_AHEAD` bytes of a selection from `random`:
    /// where `upsert` and `select` will miss.
    #[inline]
    pub(crate) fn prefetch_peers(
        &self,
        ih: &[u8; 20],
        h: u64,
        pk_hash: u64,
        random: u64,
        g: &Guard,
    ) {
        for w in self.map_table(Self::shard_of(h), g).probe(h) {
            let m = MapCell(w).load(Acquire);
            if m.is_frozen() || m.is_empty() {
                return;
            }
            if let Some(b) = self.matching(m, h, ih) {
                if b.big().is_some() {
                    let cap = b.cap();
                    // SAFETY: `index(x, cap) < cap` for the non-empty block (a big block has
                    // more than `SMALL_MAX` slots).
                    let (home, start) = unsafe {
                        (
                            b.slot_unchecked(index(pk_hash, cap)),
                            b.slot_unchecked(index(random, cap)),
                        )
                    };
                    prefetch(home.meta().as_ptr());
                    // The selection's first `SELECT_AHEAD` bytes: from there on, its walk
                    // prefetches ahead of itself.
                    let p = start.meta().as_ptr().cast::<u8>();
                    for k in 0..SELECT_AHEAD / 64 {
                        prefetch(p.wrapping_add(64 * k));
                    }
                }
                return;
            }
        }
    }
}

/// A hint to the CPU to bring the cache line of `p` close; never faults, changes nothing.
#[inline(always)]
pub(super) fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: prefetching has no effect on the program's semantics and never faults, even
        // for an address that is not mapped or has no provenance (it is never dereferenced).
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
