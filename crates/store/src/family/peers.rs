//! The peers of one swarm, in the slots of its block: upsert, remove, select, the counts and
//! `completed`. Every slot CAS succeeds only on a slot that is not frozen, so it acts on the
//! swarm's newest block; a writer that meets a migration helps it ([`Family::help_migrate`])
//! and retries on the successor. See docs/architecture.md, *Operations and their
//! linearization points*.

use super::map::prefetch;
use super::{Ctx, Family, Migrated, Publisher};
use crate::PeerSink;
use crate::addr::{Expiry, IpFamily, Meta, PeerAddress, PeerKey};
use crate::block::{Block, COMPLETED_FROZEN, Next, Slot, peer_max_used};
use crate::sync::epoch::Guard;
use crate::sync::{Backoff, Ordering::*};
use crate::table::{Slots, index};

/// How far ahead of a selection walk in a big block its slots are prefetched, in bytes.
pub(super) const SELECT_AHEAD: usize = 256;
/// Slots a selection walk tests at a time (see `select`).
const RUN: usize = 8;

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

impl Family {
    /// Counts a peer in (`up`) or out of the seeders or leechers of block `b` (big blocks)
    /// and of stripe `stripe`.
    pub(super) fn count(&self, b: Block<'_>, stripe: usize, seeder: bool, up: bool) {
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
    pub(crate) fn counts(&self, b: Block<'_>) -> (u32, u32) {
        if let Some(x) = b.big() {
            return (x.seeders.load(Relaxed), x.leechers.load(Relaxed));
        }
        let (mut s, mut l) = (0, 0);
        for slot in b.slots() {
            let m = slot.meta().load(Acquire);
            if m.is_live(self.fam) {
                if m.is_seeder() { s += 1 } else { l += 1 }
            }
        }
        (s, l)
    }

    /// Downloads completed in the swarm of block `b`.
    #[inline]
    pub(crate) fn completed_of(b: Block<'_>) -> u32 {
        b.head().completed.load(Relaxed) & !COMPLETED_FROZEN
    }

    /// Counts one completion in the swarm (after the peer's slot turned seeder). A frozen
    /// counter belongs to a block being migrated: the completion goes to the successor, whose
    /// counter starts from the frozen value, so it is counted exactly once.
    pub(super) fn add_completed<'g>(
        &self,
        mut b: Block<'g>,
        stripe: usize,
        ctx: &Ctx,
        g: &'g Guard,
    ) {
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

    /// True if meta `m` (published or removed, read with Acquire) of slot `s` is peer `pk`.
    #[inline]
    pub(super) fn matches(&self, s: Slot<'_>, m: Meta, pk: &PeerKey) -> bool {
        m.key_bits() == pk.key && (self.fam == IpFamily::V4 || s.has_addr(pk.addr))
    }
    /// True if `m` is a reservation of peer `pk`'s tag and port.
    #[inline]
    pub(super) fn reserved_by(&self, m: Meta, pk: &PeerKey) -> bool {
        m.is_reserved(self.fam) && m.key_bits() == pk.reserved_meta().key_bits()
    }
    /// The swarm's block that is not being migrated, following (and helping) migrations from
    /// `b`; `None` if the swarm was freed on the way.
    fn settled<'g>(&self, mut b: Block<'g>, ctx: &Ctx, g: &'g Guard) -> Option<Block<'g>> {
        while b.is_migrating() {
            match self.help_migrate(b, ctx, g) {
                Migrated::Moved(n) => b = n,
                Migrated::Dead(_) => return None,
            }
        }
        Some(b)
    }

    /// Stores or refreshes peer `pk` in the swarm of block `b`; returns the block it acted on.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn upsert<'g>(
        &self,
        mut b: Block<'g>,
        stripe: usize,
        pk: &PeerKey,
        seeder: bool,
        completed_ev: bool,
        now_stamp: u64,
        ctx: &Ctx,
        g: &'g Guard,
    ) -> (Upsert, Block<'g>) {
        let v6 = self.fam == IpFamily::V6;
        let new_val = Meta::live(pk.key, now_stamp, seeder);
        let mut backoff = Backoff::new();
        'retry: loop {
            let Some(cur) = self.settled(b, ctx, g) else {
                return (Upsert::Dead, b);
            };
            b = cur;
            let mut probe = b.probe(pk.hash);
            while let Some(slot) = probe.current() {
                let w = slot.meta();
                let m = w.load(Acquire);
                if m.is_frozen() {
                    continue 'retry;
                }
                if m.is_empty() {
                    if let Some(x) = b.big()
                        && x.used.load(Relaxed) as usize >= peer_max_used(b.cap())
                    {
                        let _ = b.cas_state(Next::None, Next::Grow);
                        continue 'retry;
                    }
                    if !ctx.reserve_peer() {
                        return (Upsert::Full, b);
                    }
                    self.count(b, stripe, seeder, true);
                    let first = if v6 { pk.reserved_meta() } else { new_val };
                    if w.compare_exchange(Meta::EMPTY, first, AcqRel, Acquire)
                        .is_ok()
                    {
                        if let Some(x) = b.big() {
                            x.used.fetch_add(1, Relaxed);
                        }
                        if v6 && !self.publish(Publisher::Inserter, slot, first, pk.addr, new_val) {
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
                if m.is_reserved(self.fam) {
                    if self.reserved_by(m, pk) {
                        // Another inserter of this peer (or of one with the same tag and port)
                        // is between its reservation and its publication: two stores away if
                        // it runs. Wait a few microseconds; if it is still there, that thread is
                        // not running, so do not wait for it: migrate the block (the freeze
                        // cancels the reservation) and insert in the successor. The stalled
                        // thread's publication then fails and it retries there.
                        if backoff.is_completed() {
                            let _ = b.cas_state(Next::None, Next::Grow);
                            backoff = Backoff::new();
                            continue 'retry;
                        }
                        backoff.snooze();
                        continue;
                    }
                } else if self.matches(slot, m, pk) {
                    if m.is_removed() {
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
                    let was_seeder = m.is_seeder();
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
                probe.advance();
            }
            let _ = b.cas_state(Next::None, Next::Grow);
        }
    }

    /// Removes peer `pk` (event stopped); returns the block it acted on.
    pub(crate) fn remove<'g>(
        &self,
        mut b: Block<'g>,
        stripe: usize,
        pk: &PeerKey,
        ctx: &Ctx,
        g: &'g Guard,
    ) -> (Remove, Block<'g>) {
        'retry: loop {
            let Some(cur) = self.settled(b, ctx, g) else {
                return (Remove::Dead, b);
            };
            b = cur;
            for slot in b.probe(pk.hash) {
                let w = slot.meta();
                let mut m = w.load(Acquire);
                loop {
                    if m.is_frozen() {
                        continue 'retry;
                    }
                    if m.is_empty() {
                        return (Remove::NotFound, b);
                    }
                    if m.is_reserved(self.fam) {
                        // Not published, so not (yet) a stored peer: the stop linearizes before
                        // that insert. If the reservation is this very peer, no slot further on
                        // holds it (it was claimed as the first EMPTY on its path), so the
                        // probe ends in NotFound; otherwise the peer may be further on.
                        break;
                    }
                    if !self.matches(slot, m, pk) {
                        break;
                    }
                    if m.is_removed() {
                        return (Remove::NotFound, b);
                    }
                    match w.compare_exchange(m, m.tombstone(), AcqRel, Acquire) {
                        Ok(_) => {
                            self.count(b, stripe, m.is_seeder(), false);
                            ctx.release_peer();
                            return (Remove::Removed, b);
                        }
                        Err(x) => m = x,
                    }
                }
            }
            return (Remove::NotFound, b);
        }
    }

    /// Appends up to `want` peers to `out`: a walk from a random slot with a bounded number of
    /// probes, skipping the requester, expired peers and (for a seeder) other seeders.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub(crate) fn select<A: PeerAddress>(
        &self,
        b: Block<'_>,
        pk: &PeerKey,
        req_seeder: bool,
        want: usize,
        now_stamp: u64,
        ctx: &Ctx,
        random: u64,
        out: &mut impl PeerSink<A>,
    ) {
        // A seeder gets leechers only: skip the walk when a big swarm has none.
        if want == 0 || (req_seeder && b.big().is_some_and(|x| x.leechers.load(Relaxed) == 0)) {
            return;
        }
        let cap = b.cap();
        let limit = cap.min(want.saturating_mul(16).saturating_add(64));
        // A plain index walk rather than `b.probe(random).take(limit)`: this loop is the
        // announce's hottest, and the probe's second counter cost ~10 instructions a slot.
        // It goes in runs of up to `RUN` consecutive slots (not across the end of the block):
        // a run's meta words are tested without a branch into a bit mask, and only the peers
        // the mask selects are looked at one by one, so a seeder's walk (which skips the
        // other seeders, ~3 slots in 4 in aquatic_udp_load_test's population) does not pay a
        // mispredicted branch for every slot it skips.
        let mut i = index(random, cap);
        let mut left = limit;
        let mut taken = 0;
        // In a big block the walk reads slots faster than lines arrive: ask for the lines
        // SELECT_AHEAD bytes on, one per 64 bytes of the run.
        let ahead = b.big().is_some();
        // A constant per family: the walk's stride folds into its addressing.
        let words = A::FAM.words();
        let excluded = Meta::excluded_bits(req_seeder);
        let expiry = Expiry::new(now_stamp, ctx.timeout_units);
        debug_assert!(A::FAM == self.fam && words == self.words());
        while left > 0 {
            let n = RUN.min(cap - i).min(left);
            // SAFETY: `i < cap`: `index` returns one below `cap` (non-zero: `limit > 0` here
            // only if `cap > 0`), `n <= cap - i`, and `i` wraps to 0 at `cap` below; `words`
            // is the family's, so the block's.
            let first = unsafe { b.meta_of(i, words) };
            if ahead {
                let p = first.as_ptr().cast::<u8>().wrapping_add(SELECT_AHEAD);
                for k in 0..words {
                    prefetch(p.wrapping_add(64 * k));
                }
            }
            let mut metas = [Meta::EMPTY; RUN];
            let mut mask = 0u32;
            let mut test = |j: usize, m: &mut Meta| {
                // SAFETY: `i + j < i + n <= cap`; `words` as above.
                *m = unsafe { b.meta_of(i + j, words) }.load(Acquire);
                mask |= u32::from(m.is_candidate(A::FAM, excluded)) << j;
            };
            if n == RUN {
                // Most runs: a fixed count the compiler unrolls, with no loop branch to miss.
                for (j, m) in metas.iter_mut().enumerate() {
                    test(j, m);
                }
            } else {
                for (j, m) in metas.iter_mut().enumerate().take(n) {
                    test(j, m);
                }
            }
            while mask != 0 {
                let j = mask.trailing_zeros() as usize;
                mask &= mask - 1;
                let m = metas[j % RUN];
                // Rare (a peer past its timeout that the cleaner has not reached yet): a
                // branch the predictor gets right.
                if m.is_expired_at(&expiry) {
                    continue;
                }
                // SAFETY: `j < n`, as above.
                let addr = unsafe { b.addr_words_of(i + j, words) };
                if m.key_bits() == pk.key && addr == pk.addr {
                    continue; // the requester
                }
                out.push(A::decode(m, addr));
                taken += 1;
                if taken >= want {
                    return;
                }
            }
            i += n;
            if i == cap {
                i = 0;
            }
            left -= n;
        }
    }
}
