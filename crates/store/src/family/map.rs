//! The swarm map: slot encoding, lookup, creation, replacement of a block by its successor,
//! and map migration.

use std::sync::Arc;

use super::{Ctx, Family, SHARDS, info_hash_hash};
use crate::block::{Block, peer_cap_for};
use crate::slab::Slab;
use crate::sync::Ordering::*;
use crate::sync::epoch::{Guard, retire};
use crate::table::{
    NEXT_GROW as MAP_GROW, NEXT_NONE as MAP_NONE, Table, index, map_cap_for, map_max_used,
};

#[cfg(not(loom))]
pub(super) const MAP_MIN_CAP: usize = 8;
#[cfg(loom)]
pub(super) const MAP_MIN_CAP: usize = 2;

/// Map slot word: `ptr` (8-aligned, < 2^48) | tag << 48 | REMOVED | FROZEN. 0 = EMPTY.
/// A live slot names the newest block of a swarm; a REMOVED slot names the corpse of a freed
/// swarm, which lives (and keeps its info hash readable) as long as that map table.
pub(super) const M_FROZEN: u64 = 1;
pub(super) const M_REMOVED: u64 = 2;
pub(super) const M_PTR: u64 = 0x0000_FFFF_FFFF_FFF8;

#[inline]
fn tag_of(h: u64) -> u64 {
    (h >> 16) & 0xFFFF
}

/// A shard word: the map table's address | its capacity << 48 (`SHARD_CAP_HEADER` if it does
/// not fit: read it from the header). A lookup then reads no table header.
const SHARD_CAP_HEADER: usize = 0xFFFF;
pub(super) fn shard_word(t: Table) -> usize {
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

impl Family {
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
    pub(super) unsafe fn block_of(&self, m: u64, _g: &Guard) -> Block {
        // SAFETY: per the contract the block is live for the guard's lifetime.
        unsafe { Block::from_addr((m & M_PTR) as usize, self.words()) }
    }

    /// The swarm's block if the non-empty, non-frozen map slot value `m` (read under `g`)
    /// names it: live, the tag of `h` matches, and the full info hash compares equal.
    #[inline]
    pub(super) fn matching(&self, m: u64, h: u64, ih: &[u8; 20], g: &Guard) -> Option<Block> {
        if m & M_REMOVED != 0 || m >> 48 != tag_of(h) {
            return None;
        }
        // SAFETY: a slot value read under `g` (callers pass only non-empty values).
        let b = unsafe { self.block_of(m, g) };
        (b.info_hash() == ih).then_some(b)
    }

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
    pub(super) fn map_replace(&self, h: u64, old: usize, new: u64, ctx: &Ctx, g: &Guard) -> bool {
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
    pub(super) fn help_map_migrate(&self, s: usize, t: Table, ctx: &Ctx, g: &Guard) {
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
