//! The peers of one swarm: upsert, remove, select, counts and completed.

use super::{Ctx, Family, Migrated, Publisher};
use crate::addr::{
    FROZEN, IpFamily, KEY_MASK, PeerAddress, PeerKey, REMOVED, SEEDER, is_empty, is_expired,
    is_live, is_reserved, live_value,
};
use crate::block::{Block, COMPLETED_FROZEN, NEXT_GROW, NEXT_NONE, peer_max_used};
use crate::sync::epoch::Guard;
use crate::sync::{Backoff, Ordering::*};
use crate::table::index;

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
    pub(super) fn count(&self, b: Block, stripe: usize, seeder: bool, up: bool) {
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
    pub(super) fn matches(&self, b: Block, i: usize, m: u64, pk: &PeerKey) -> bool {
        (m & KEY_MASK) == pk.key
            && (self.fam == IpFamily::V4
                || (b.word(i, 1).load(Relaxed) == pk.addr[0]
                    && b.word(i, 2).load(Relaxed) == pk.addr[1]))
    }
    #[inline]
    pub(super) fn reserved_by(&self, m: u64, pk: &PeerKey) -> bool {
        is_reserved(self.fam, m) && (m & KEY_MASK) == (pk.reserved_meta() & KEY_MASK)
    }
    #[inline]
    pub(super) fn addr_words(&self, b: Block, i: usize) -> [u64; 2] {
        if self.fam == IpFamily::V6 {
            [b.word(i, 1).load(Relaxed), b.word(i, 2).load(Relaxed)]
        } else {
            [0; 2]
        }
    }

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
}
