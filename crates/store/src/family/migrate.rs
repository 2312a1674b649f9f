//! Block migration (freeze and copy: growth, compaction, freeing) and the cleaner's visit of
//! one swarm.

use std::sync::Arc;

use super::map::M_REMOVED;
use super::{Ctx, Family, info_hash_hash, stripe_of};
use crate::CleanReport;
use crate::addr::{
    FROZEN, IpFamily, KEY_MASK, PeerKey, REMOVED, SEEDER, is_empty, is_expired, is_live,
    is_reserved,
};
use crate::block::{
    Block, COMPLETED_FROZEN, NEXT_GROW, NEXT_KILL, NEXT_NONE, SMALL_MAX, peer_cap_for,
};
use crate::sync::epoch::{Guard, retire};
use crate::sync::{Backoff, Ordering::*};
use crate::table::index;

pub(crate) enum Migrated {
    /// The block was replaced by this successor.
    Moved(Block),
    /// The swarm is dead and no longer in the map; `true` if this call removed it.
    Dead(bool),
}
/// Who publishes an IPv6 slot (the test hooks stall one or the other).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Publisher {
    /// An announce inserting its peer.
    Inserter,
    /// A migration copying a peer into the successor.
    Copier,
}

impl Family {
    /// The successor a block's state names.
    #[inline]
    fn successor(&self, addr: u64, _g: &Guard) -> Block {
        // SAFETY: published in `next` (read with Acquire) of a block we may read under `_g`;
        // a successor is retired only after it was replaced in the map, after its predecessor
        // was, so it outlives every guard that can still reach the predecessor.
        unsafe { Block::from_addr(addr as usize, self.words()) }
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
    pub(super) fn publish(
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
}
