//! Freeze-and-copy migration of a swarm's block (growth, compaction, and the freeing of an
//! empty swarm), and the cleaner's visit of one swarm, which starts the last two. Every step
//! is idempotent: any number of threads may help, and each can finish alone. See
//! docs/architecture.md, *Growth, compaction and freeing*.

use std::sync::Arc;

use super::{Ctx, Family, info_hash_hash, stripe_of};
use crate::CleanReport;
use crate::addr::{IpFamily, Meta, PeerKey};
use crate::block::{Block, COMPLETED_FROZEN, Next, SMALL_MAX, Slot, StartCounts, peer_cap_for};
use crate::sync::epoch::{Guard, retire};
use crate::sync::{Backoff, Ordering::*};
use crate::table::Slots;

pub(crate) enum Migrated<'g> {
    /// The block was replaced by this successor.
    Moved(Block<'g>),
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
    /// Freezes block `b` (whose migration was started), allocates its successor (a block
    /// holding the live peers, or a corpse if a kill finds none), copies the live peers and
    /// puts the successor in the map in place of `b`. Every step is idempotent, so any number
    /// of threads may run this concurrently and each can finish it alone.
    pub(crate) fn help_migrate<'g>(&self, b: Block<'g>, ctx: &Ctx, g: &'g Guard) -> Migrated<'g> {
        let fam = self.fam;
        let words = self.words();
        let _ = b.cas_state(Next::None, Next::Grow);
        for slot in b.slots() {
            let w = slot.meta();
            let mut m = w.load(Acquire);
            loop {
                if m.is_frozen() {
                    break;
                }
                // A v6 reservation is frozen as it is, without waiting for its publication:
                // it holds no peer (it is not live, so it is not copied), and its inserter's
                // publishing CAS fails and retries in the successor.
                match w.compare_exchange_weak(m, m.frozen(), AcqRel, Acquire) {
                    Ok(_) => break,
                    Err(x) => m = x,
                }
            }
        }
        let completed = b.head().completed.fetch_or(COMPLETED_FROZEN, AcqRel) & !COMPLETED_FROZEN;
        // `Grow` or `Kill` (not `None`: the CAS above left it for good), unless a helper
        // already offered the successor. The slots and `completed` are frozen: every helper
        // computes the same successor.
        if let kind @ (Next::Grow | Next::Kill) = b.state() {
            let (mut live, mut seeders) = (0usize, 0usize);
            for slot in b.slots() {
                let m = slot.meta().load(Acquire);
                if m.is_live(fam) {
                    live += 1;
                    seeders += usize::from(m.is_seeder());
                }
            }
            let candidate = if live == 0 && matches!(kind, Next::Kill) {
                Block::corpse(&self.slab, *b.info_hash(), words, g)
            } else {
                let counts = StartCounts {
                    completed,
                    seeders: seeders as u32,
                    leechers: (live - seeders) as u32,
                };
                let c = peer_cap_for(live + 1, words);
                Block::alloc(&self.slab, *b.info_hash(), c, words, counts, g)
            };
            if b.cas_state(kind, Next::Successor(candidate)).is_err() {
                // SAFETY: never published.
                unsafe { candidate.free(&self.slab) };
            }
        }
        // Published now, by this thread or another; every helper takes its view from `next`.
        let Next::Successor(succ) = b.state() else {
            unreachable!("a started migration's state leaves Grow/Kill only for its successor")
        };
        let h = info_hash_hash(b.info_hash(), ctx.seed);
        if succ.is_corpse() {
            let won = self.map_replace(h, b, succ, ctx, g);
            if won {
                self.swarms.fetch_sub(1, Relaxed);
                ctx.release_swarm();
                self.retire_block(b, g);
            }
            return Migrated::Dead(won);
        }
        for slot in b.slots() {
            let m = slot.meta().load(Acquire);
            if m.is_live(fam) {
                self.copy_peer(b, succ, m.unfrozen(), slot.addr_words(), ctx);
            }
        }
        if self.map_replace(h, b, succ, ctx, g) {
            self.retire_block(b, g);
        }
        Migrated::Moved(succ)
    }

    fn retire_block(&self, b: Block<'_>, g: &Guard) {
        let (a, words, slab) = (b.addr(), self.words(), Arc::clone(&self.slab));
        // SAFETY: the map no longer names `b` (the caller won the replacing CAS, so this runs
        // once per block) and no late copier can put it back (`map_copy`), so only threads
        // pinned before now can reach it, through the map or a predecessor's `next`. When the
        // closure runs the block is its alone (hence the unbounded view); it keeps the slab
        // alive (it may run after the store is dropped).
        unsafe { retire(g, move || Block::from_addr(a, words).free(&slab)) };
    }

    /// Writes the address words of v6 slot `s`, reserved with value `reserved`, and
    /// publishes `v` there (Release: the address words are visible to whoever reads `v`).
    /// False if the slot no longer holds the reservation: a migration froze it, or (in a
    /// successor being filled) a fellow copier published the same value first.
    pub(super) fn publish(
        &self,
        who: Publisher,
        s: Slot<'_>,
        reserved: Meta,
        addr: [u64; 2],
        v: Meta,
    ) -> bool {
        #[cfg(test)]
        crate::test_hooks::before_publish(who);
        let _ = who;
        s.store_addr(addr);
        s.meta()
            .compare_exchange(reserved, v, Release, Relaxed)
            .is_ok()
    }

    /// True if frozen block `old` holds no live peer other than the one with meta `v` and
    /// address `addr` whose key bits (tag and port) equal `v`'s.
    fn key_bits_unique(&self, old: Block<'_>, v: Meta, addr: [u64; 2]) -> bool {
        old.slots().all(|s| {
            let m = s.meta().load(Acquire);
            !m.is_live(self.fam) || m.key_bits() != v.key_bits() || s.addr_words() == addr
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
    fn copy_peer(&self, old: Block<'_>, new: Block<'_>, v: Meta, addr: [u64; 2], ctx: &Ctx) {
        let v6 = self.fam == IpFamily::V6;
        let pk = PeerKey::from_slot(self.fam, v, addr, ctx.seed);
        let mut backoff = Backoff::new();
        for slot in new.probe(pk.hash) {
            let w = slot.meta();
            let mut x = w.load(Acquire);
            loop {
                if x.is_frozen() {
                    return;
                }
                if x.is_empty() {
                    let first = if v6 { pk.reserved_meta() } else { v };
                    match w.compare_exchange(x, first, AcqRel, Acquire) {
                        Ok(_) => {
                            if let Some(b) = new.big() {
                                b.used.fetch_add(1, Relaxed);
                            }
                            if v6 {
                                // Fails only if a fellow copier published `v` for us.
                                self.publish(Publisher::Copier, slot, first, addr, v);
                            }
                            return;
                        }
                        Err(cur) => {
                            x = cur;
                            continue;
                        }
                    }
                }
                if x.is_reserved(self.fam) {
                    if self.reserved_by(x, &pk) {
                        if self.key_bits_unique(old, v, addr) {
                            self.publish(Publisher::Copier, slot, x, addr, v);
                            return;
                        }
                        backoff.snooze();
                        x = w.load(Acquire);
                        continue;
                    }
                    break;
                }
                if self.matches(slot, x, &pk) {
                    return;
                }
                break;
            }
        }
        debug_assert!(false, "peer successor full during copy");
    }

    /// Expires old peers of the swarm of block `b`; frees the swarm if empty, compacts its
    /// block if tombstone-heavy. Returns the swarm's block afterwards (`None`: it was freed).
    pub(crate) fn clean_swarm<'g>(
        &self,
        mut b: Block<'g>,
        now_stamp: u64,
        ctx: &Ctx,
        g: &'g Guard,
        rep: &mut CleanReport,
    ) -> Option<Block<'g>> {
        let stripe = stripe_of(info_hash_hash(b.info_hash(), ctx.seed));
        // A migration met on the way is helped, then the swarm is cleaned again on its new
        // block (a few times at most; after that it waits for the next cycle).
        'attempt: for _ in 0..4 {
            if b.is_migrating() {
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
            for slot in b.slots() {
                let w = slot.meta();
                let mut m = w.load(Acquire);
                loop {
                    if m.is_frozen() {
                        continue 'attempt;
                    }
                    if !m.is_live(self.fam) {
                        break;
                    }
                    if !m.is_expired(now_stamp, ctx.timeout_units) {
                        live += 1;
                        break;
                    }
                    match w.compare_exchange(m, m.tombstone(), AcqRel, Acquire) {
                        Ok(_) => {
                            self.count(b, stripe, m.is_seeder(), false);
                            ctx.release_peer();
                            rep.peers_expired += 1;
                            break;
                        }
                        Err(x) => m = x,
                    }
                }
                // An expired peer just turned into a tombstone: still a used slot.
                used += usize::from(!m.is_empty());
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
                Next::Kill
            } else if compact {
                Next::Grow
            } else {
                return Some(b);
            };
            let _ = b.cas_state(Next::None, kind);
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
