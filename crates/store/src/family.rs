//! One address family: its swarm map (sharded open-addressing tables of swarm pointers), its
//! striped counters, and every operation on swarms and peer tables, including migration
//! (freeze-and-copy growth, compaction and the freeing of empty swarms).

use crossbeam_utils::CachePadded;

use crate::CleanReport;
use crate::addr::{
    FROZEN, Fam, KEY_MASK, PeerAddress, PeerKey, REMOVED, SEEDER, is_empty, is_expired, is_live,
    is_reserved, live_value, mix,
};
use crate::sync::epoch::{Guard, retire};
use crate::sync::{AtomicI64, AtomicUsize, Ordering::*, spin_wait};
use crate::table::{
    NEXT_DEAD, NEXT_GROW, NEXT_KILL, NEXT_NONE, Swarm, Table, index, map_cap_for, map_max_used,
    peer_cap_for, peer_max_used,
};

#[cfg(not(loom))]
pub(crate) const SHARDS: usize = 1024;
#[cfg(loom)]
pub(crate) const SHARDS: usize = 1;
#[cfg(not(loom))]
const MAP_MIN_CAP: usize = 8;
#[cfg(loom)]
const MAP_MIN_CAP: usize = 2;
#[cfg(not(loom))]
pub(crate) const STRIPES: usize = 64;
#[cfg(loom)]
pub(crate) const STRIPES: usize = 1;

/// Map slot word: `ptr` (8-aligned, < 2^48) | tag << 48 | REMOVED | FROZEN. 0 = EMPTY.
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
    Moved,
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

pub(crate) struct Family {
    pub(crate) fam: Fam,
    /// Address of each shard's current map table (1 word per slot).
    shards: Box<[AtomicUsize]>,
    pub(crate) seeders: Box<[CachePadded<AtomicI64>]>,
    pub(crate) leechers: Box<[CachePadded<AtomicI64>]>,
    pub(crate) completed: Box<[CachePadded<AtomicI64>]>,
    pub(crate) swarms: CachePadded<AtomicI64>,
}

impl Family {
    pub(crate) fn new(fam: Fam) -> Self {
        Family {
            fam,
            shards: (0..SHARDS)
                .map(|_| AtomicUsize::new(Table::alloc(MAP_MIN_CAP, 1).addr()))
                .collect(),
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
        // SAFETY: shard pointers always hold a live map table (words = 1); a replaced one is
        // retired through the epoch, and `_g` pins us.
        unsafe { Table::from_addr(self.shards[s].load(Acquire), 1) }
    }

    /// # Safety
    /// `m` must be a non-empty map slot value read under `_g` (live, or removed/frozen but read
    /// while the guard was held): the swarm it names is then not freed before `_g` is dropped.
    #[inline]
    pub(crate) unsafe fn swarm_ref(m: u64, _g: &Guard) -> &Swarm {
        // SAFETY: per the contract the pointer is a live `Swarm` for the guard's lifetime.
        unsafe { &*std::ptr::with_exposed_provenance::<Swarm>((m & M_PTR) as usize) }
    }

    /// The swarm for `ih` if the non-empty, non-frozen map slot value `m` (read under `g`)
    /// names it: live, the tag of `h` matches, and the full info hash compares equal.
    #[inline]
    fn matching_swarm<'g>(m: u64, h: u64, ih: &[u8; 20], g: &'g Guard) -> Option<&'g Swarm> {
        if m & M_REMOVED != 0 || m >> 48 != tag_of(h) {
            return None;
        }
        // SAFETY: a live slot value read under `g` (callers pass only non-empty values).
        let sw = unsafe { Self::swarm_ref(m, g) };
        (&sw.info_hash == ih).then_some(sw)
    }

    #[inline]
    fn current(&self, swarm: &Swarm, _g: &Guard) -> Table {
        // SAFETY: `swarm.table` always holds a live table of this family; replaced tables are
        // retired through the epoch and `_g` pins us.
        unsafe { Table::from_addr(swarm.table.load(Acquire), self.words()) }
    }

    fn count(&self, swarm: &Swarm, stripe: usize, seeder: bool, up: bool) {
        let (c, g) = if seeder {
            (&swarm.seeders, &self.seeders[stripe])
        } else {
            (&swarm.leechers, &self.leechers[stripe])
        };
        if up {
            c.fetch_add(1, Relaxed);
            g.fetch_add(1, Relaxed);
        } else {
            c.fetch_sub(1, Relaxed);
            g.fetch_sub(1, Relaxed);
        }
    }

    fn add_completed(&self, swarm: &Swarm, stripe: usize) {
        swarm.completed.fetch_add(1, Relaxed);
        self.completed[stripe].fetch_add(1, Relaxed);
    }

    /// True if meta `m` (published or removed, read with Acquire) at slot `i` is peer `pk`.
    #[inline]
    fn matches(&self, t: Table, i: usize, m: u64, pk: &PeerKey) -> bool {
        (m & KEY_MASK) == pk.key
            && (self.fam == Fam::V4
                || (t.word(i, 1).load(Relaxed) == pk.addr[0]
                    && t.word(i, 2).load(Relaxed) == pk.addr[1]))
    }
    #[inline]
    fn reserved_by(&self, m: u64, pk: &PeerKey) -> bool {
        is_reserved(self.fam, m) && (m & KEY_MASK) == (pk.reserved_meta() & KEY_MASK)
    }
    #[inline]
    fn addr_words(&self, t: Table, i: usize) -> [u64; 2] {
        if self.fam == Fam::V6 {
            [t.word(i, 1).load(Relaxed), t.word(i, 2).load(Relaxed)]
        } else {
            [0; 2]
        }
    }

    // ---------------------------------------------------------------- swarm map

    pub(crate) fn lookup<'g>(
        &self,
        ih: &[u8; 20],
        h: u64,
        ctx: &Ctx,
        g: &'g Guard,
    ) -> Option<&'g Swarm> {
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
                if let Some(sw) = Self::matching_swarm(m, h, ih, g) {
                    return Some(sw);
                }
                i = if i + 1 == cap { 0 } else { i + 1 };
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
    ) -> Option<&'g Swarm> {
        let s = (h as usize) & (SHARDS - 1);
        let mut fresh: usize = 0;
        let found = 'retry: loop {
            let t = self.map_table(s, g);
            let hd = t.header();
            if hd.next.load(Acquire) != NEXT_NONE {
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
                            .compare_exchange(NEXT_NONE, NEXT_GROW, AcqRel, Acquire);
                        continue 'retry;
                    }
                    if fresh == 0 {
                        if !Ctx::reserve(&ctx.swarms, ctx.max_swarms) {
                            break 'retry None;
                        }
                        fresh = Swarm::alloc(*ih, self.words()).expose_provenance();
                        assert!(
                            fresh as u64 & !M_PTR == 0,
                            "swarm pointer does not fit 48 bits"
                        );
                    }
                    self.swarms.fetch_add(1, Relaxed);
                    let v = fresh as u64 | (tag_of(h) << 48);
                    if w.compare_exchange(0, v, AcqRel, Acquire).is_ok() {
                        hd.used.fetch_add(1, Relaxed);
                        // SAFETY: just published under `g`; only freed after removal + epoch.
                        let sw = unsafe { Self::swarm_ref(v, g) };
                        fresh = 0;
                        break 'retry Some(sw);
                    }
                    self.swarms.fetch_sub(1, Relaxed);
                    continue; // re-examine slot i
                }
                if let Some(sw) = Self::matching_swarm(m, h, ih, g) {
                    break 'retry Some(sw);
                }
                i = if i + 1 == cap { 0 } else { i + 1 };
                probes += 1;
            }
            let _ = hd
                .next
                .compare_exchange(NEXT_NONE, NEXT_GROW, AcqRel, Acquire);
        };
        if fresh != 0 {
            // SAFETY: `fresh` was never published, so this thread is its only owner.
            unsafe { Swarm::free(std::ptr::with_exposed_provenance_mut(fresh), self.words()) };
            ctx.swarms.fetch_sub(1, Relaxed);
        }
        found
    }

    /// Tombstones the map slot of swarm `p`; true if this call did it (it must then retire it).
    fn map_remove(&self, h: u64, p: usize, ctx: &Ctx, g: &Guard) -> bool {
        let s = (h as usize) & (SHARDS - 1);
        'retry: loop {
            let t = self.map_table(s, g);
            if t.header().next.load(Acquire) != NEXT_NONE {
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
                    // Removed slots are skipped even with an equal pointer: that address may
                    // have been freed and reused by the swarm we are removing now.
                    if m & M_REMOVED != 0 || (m & M_PTR) as usize != p {
                        break;
                    }
                    match w.compare_exchange(m, (m & M_PTR) | M_REMOVED, AcqRel, Acquire) {
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
            .compare_exchange(NEXT_NONE, NEXT_GROW, AcqRel, Acquire);
        let cap = t.cap();
        for i in 0..cap {
            t.word(i, 0).fetch_or(M_FROZEN, AcqRel);
        }
        let hd = t.header();
        let mut n = hd.next.load(Acquire);
        if n == NEXT_GROW {
            let live = (0..cap)
                .filter(|&i| {
                    let v = t.word(i, 0).load(Acquire) & !M_FROZEN;
                    v != 0 && v & M_REMOVED == 0
                })
                .count();
            let new = Table::alloc(map_cap_for(live + 1, MAP_MIN_CAP), 1).addr();
            match hd.next.compare_exchange(NEXT_GROW, new, AcqRel, Acquire) {
                Ok(_) => n = new,
                Err(cur) => {
                    // SAFETY: `new` was never published.
                    unsafe { Table::from_addr(new, 1).free() };
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
            .compare_exchange(t.addr(), n, AcqRel, Acquire)
            .is_ok()
        {
            let a = t.addr();
            // SAFETY: the shard no longer points to `t`; threads that still see it pinned
            // before now. Retired once: only the winner of this CAS gets here.
            unsafe { retire(g, move || Table::from_addr(a, 1).free()) };
        }
    }

    /// Inserts live map value `v` into successor `new` unless present (by pointer, live or
    /// removed, or by info hash). Stops if `new` is frozen: its copy was then complete.
    fn map_copy(&self, new: Table, v: u64, ctx: &Ctx, g: &Guard) {
        // SAFETY: `v` is a live value of a frozen table read under `g`.
        let sw = unsafe { Self::swarm_ref(v, g) };
        let h = info_hash_hash(&sw.info_hash, ctx.seed);
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
                if x & M_REMOVED == 0 && x >> 48 == v >> 48 {
                    // SAFETY: live slot read under `g`.
                    if unsafe { Self::swarm_ref(x, g) }.info_hash == sw.info_hash {
                        return;
                    }
                }
                break;
            }
            i = if i + 1 == cap { 0 } else { i + 1 };
        }
        debug_assert!(false, "map successor full during copy");
    }

    // ---------------------------------------------------------------- peer tables

    /// Stores or refreshes peer `pk` in `swarm`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn upsert(
        &self,
        swarm: &Swarm,
        stripe: usize,
        pk: &PeerKey,
        seeder: bool,
        completed_ev: bool,
        now_stamp: u64,
        ctx: &Ctx,
        g: &Guard,
    ) -> Upsert {
        let v6 = self.fam == Fam::V6;
        let new_val = live_value(pk.key, now_stamp, seeder);
        'retry: loop {
            let t = self.current(swarm, g);
            let hd = t.header();
            if hd.next.load(Acquire) != NEXT_NONE {
                if let Migrated::Dead(_) = self.help_migrate(swarm, t, ctx, g) {
                    return Upsert::Dead;
                }
                continue;
            }
            let cap = t.cap();
            let mut i = index(pk.hash, cap);
            let mut probes = 0;
            while probes < cap {
                let w = t.word(i, 0);
                let m = w.load(Acquire);
                if m & FROZEN != 0 {
                    if let Migrated::Dead(_) = self.help_migrate(swarm, t, ctx, g) {
                        return Upsert::Dead;
                    }
                    continue 'retry;
                }
                if is_empty(m) {
                    if hd.used.load(Relaxed) as usize >= peer_max_used(cap) {
                        let _ = hd
                            .next
                            .compare_exchange(NEXT_NONE, NEXT_GROW, AcqRel, Acquire);
                        continue 'retry;
                    }
                    if !ctx.reserve_peer() {
                        return Upsert::Full;
                    }
                    self.count(swarm, stripe, seeder, true);
                    let first = if v6 { pk.reserved_meta() } else { new_val };
                    if w.compare_exchange(0, first, AcqRel, Acquire).is_ok() {
                        hd.used.fetch_add(1, Relaxed);
                        if v6 {
                            t.word(i, 1).store(pk.addr[0], Relaxed);
                            t.word(i, 2).store(pk.addr[1], Relaxed);
                            w.store(new_val, Release);
                        }
                        if completed_ev {
                            self.add_completed(swarm, stripe);
                        }
                        return Upsert::Inserted;
                    }
                    self.count(swarm, stripe, seeder, false);
                    ctx.release_peer();
                    continue; // re-examine slot i
                }
                if is_reserved(self.fam, m) {
                    if self.reserved_by(m, pk) {
                        spin_wait();
                        continue;
                    }
                } else if self.matches(t, i, m, pk) {
                    if m & REMOVED != 0 {
                        if !ctx.reserve_peer() {
                            return Upsert::Full;
                        }
                        self.count(swarm, stripe, seeder, true);
                        if w.compare_exchange(m, new_val, AcqRel, Acquire).is_ok() {
                            if completed_ev {
                                self.add_completed(swarm, stripe);
                            }
                            return Upsert::Inserted;
                        }
                        self.count(swarm, stripe, seeder, false);
                        ctx.release_peer();
                        continue;
                    }
                    let was_seeder = m & SEEDER != 0;
                    if was_seeder != seeder {
                        self.count(swarm, stripe, seeder, true);
                    }
                    if w.compare_exchange(m, new_val, AcqRel, Acquire).is_ok() {
                        if was_seeder != seeder {
                            self.count(swarm, stripe, was_seeder, false);
                        }
                        if completed_ev && !was_seeder {
                            self.add_completed(swarm, stripe);
                        }
                        return Upsert::Updated;
                    }
                    if was_seeder != seeder {
                        self.count(swarm, stripe, seeder, false);
                    }
                    continue;
                }
                i = if i + 1 == cap { 0 } else { i + 1 };
                probes += 1;
            }
            let _ = hd
                .next
                .compare_exchange(NEXT_NONE, NEXT_GROW, AcqRel, Acquire);
        }
    }

    /// Removes peer `pk` (event stopped).
    pub(crate) fn remove(
        &self,
        swarm: &Swarm,
        stripe: usize,
        pk: &PeerKey,
        ctx: &Ctx,
        g: &Guard,
    ) -> Remove {
        'retry: loop {
            let t = self.current(swarm, g);
            if t.header().next.load(Acquire) != NEXT_NONE {
                if let Migrated::Dead(_) = self.help_migrate(swarm, t, ctx, g) {
                    return Remove::Dead;
                }
                continue;
            }
            let cap = t.cap();
            let mut i = index(pk.hash, cap);
            for _ in 0..cap {
                let w = t.word(i, 0);
                let mut m = w.load(Acquire);
                loop {
                    if m & FROZEN != 0 {
                        if let Migrated::Dead(_) = self.help_migrate(swarm, t, ctx, g) {
                            return Remove::Dead;
                        }
                        continue 'retry;
                    }
                    if is_empty(m) {
                        return Remove::NotFound;
                    }
                    if is_reserved(self.fam, m) {
                        if self.reserved_by(m, pk) {
                            spin_wait();
                            m = w.load(Acquire);
                            continue;
                        }
                        break;
                    }
                    if !self.matches(t, i, m, pk) {
                        break;
                    }
                    if m & REMOVED != 0 {
                        return Remove::NotFound;
                    }
                    match w.compare_exchange(m, (m & KEY_MASK) | REMOVED, AcqRel, Acquire) {
                        Ok(_) => {
                            self.count(swarm, stripe, m & SEEDER != 0, false);
                            ctx.release_peer();
                            return Remove::Removed;
                        }
                        Err(x) => m = x,
                    }
                }
                i = if i + 1 == cap { 0 } else { i + 1 };
            }
            return Remove::NotFound;
        }
    }

    /// Appends up to `want` peers to `out`: a walk from a random slot with a bounded number of
    /// probes, skipping the requester, expired peers and (for a seeder) other seeders.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn select<A: PeerAddress>(
        &self,
        swarm: &Swarm,
        pk: &PeerKey,
        req_seeder: bool,
        want: usize,
        now_stamp: u64,
        ctx: &Ctx,
        random: u64,
        out: &mut Vec<A>,
        g: &Guard,
    ) {
        // A seeder gets leechers only: skip the walk when the swarm has none.
        if want == 0 || (req_seeder && swarm.leechers.load(Relaxed) == 0) {
            return;
        }
        let t = self.current(swarm, g);
        let cap = t.cap();
        let limit = cap.min(want.saturating_mul(16).saturating_add(64));
        let mut i = index(random, cap);
        for _ in 0..limit {
            let m = t.word(i, 0).load(Acquire);
            if is_live(self.fam, m)
                && !is_expired(m, now_stamp, ctx.timeout_units)
                && !(req_seeder && m & SEEDER != 0)
            {
                let addr = self.addr_words(t, i);
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

    /// Freezes peer table `t` of `swarm` (whose migration was started), then either copies its
    /// live peers into a successor and installs it, or (a kill of an empty table) marks the
    /// swarm dead and removes it from the map. Every step is idempotent, so any number of
    /// threads may run this concurrently and each can finish it alone.
    pub(crate) fn help_migrate(&self, swarm: &Swarm, t: Table, ctx: &Ctx, g: &Guard) -> Migrated {
        let fam = self.fam;
        let words = self.words();
        let cap = t.cap();
        let hd = t.header();
        for i in 0..cap {
            let w = t.word(i, 0);
            let mut m = w.load(Acquire);
            loop {
                if m & FROZEN != 0 {
                    break;
                }
                if is_reserved(fam, m) {
                    // A v6 inserter is between its reservation and its publication (two stores).
                    spin_wait();
                    m = w.load(Acquire);
                    continue;
                }
                match w.compare_exchange_weak(m, m | FROZEN, AcqRel, Acquire) {
                    Ok(_) => break,
                    Err(x) => m = x,
                }
            }
        }
        let mut n = hd.next.load(Acquire);
        if n == NEXT_GROW || n == NEXT_KILL {
            let live = (0..cap)
                .filter(|&i| is_live(fam, t.word(i, 0).load(Acquire)))
                .count();
            let target = if live == 0 && n == NEXT_KILL {
                NEXT_DEAD
            } else {
                Table::alloc(peer_cap_for(live + 1), words).addr()
            };
            match hd.next.compare_exchange(n, target, AcqRel, Acquire) {
                Ok(_) => n = target,
                Err(cur) => {
                    if target != NEXT_DEAD {
                        // SAFETY: never published.
                        unsafe { Table::from_addr(target, words).free() };
                    }
                    n = cur;
                }
            }
        }
        if n == NEXT_DEAD {
            return Migrated::Dead(self.finish_kill(swarm, ctx, g));
        }
        // SAFETY: the published successor; retired only after it is replaced, after we unpin.
        let new = unsafe { Table::from_addr(n, words) };
        for i in 0..cap {
            let m = t.word(i, 0).load(Acquire);
            if is_live(fam, m) {
                self.copy_peer(new, m & !FROZEN, self.addr_words(t, i), ctx);
            }
        }
        if swarm
            .table
            .compare_exchange(t.addr(), n, AcqRel, Acquire)
            .is_ok()
        {
            let a = t.addr();
            // SAFETY: `swarm.table` no longer points to `t`; only the CAS winner retires it.
            unsafe { retire(g, move || Table::from_addr(a, words).free()) };
        }
        Migrated::Moved
    }

    fn finish_kill(&self, swarm: &Swarm, ctx: &Ctx, g: &Guard) -> bool {
        let h = info_hash_hash(&swarm.info_hash, ctx.seed);
        let p = (swarm as *const Swarm).expose_provenance();
        if self.map_remove(h, p, ctx, g) {
            self.swarms.fetch_sub(1, Relaxed);
            ctx.swarms.fetch_sub(1, Relaxed);
            let words = self.words();
            // SAFETY: the map no longer holds the swarm and its table is dead (never replaced),
            // so both are unreachable for later pins; only the map-removal winner retires them.
            unsafe {
                retire(g, move || {
                    Swarm::free(std::ptr::with_exposed_provenance_mut(p), words)
                })
            };
            true
        } else {
            false
        }
    }

    /// Inserts frozen live value `v` into successor `new` unless that peer is already there
    /// (live or as a keyed tombstone). Stops if `new` is frozen: its copy was then complete.
    fn copy_peer(&self, new: Table, v: u64, addr: [u64; 2], ctx: &Ctx) {
        let v6 = self.fam == Fam::V6;
        let pk = PeerKey::from_slot(self.fam, v, addr, ctx.seed);
        let cap = new.cap();
        let mut i = index(pk.hash, cap);
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
                            new.header().used.fetch_add(1, Relaxed);
                            if v6 {
                                new.word(i, 1).store(addr[0], Relaxed);
                                new.word(i, 2).store(addr[1], Relaxed);
                                w.store(v, Release);
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
                        spin_wait();
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

    /// Expires old peers of `swarm`; frees it if empty, compacts it if tombstone-heavy.
    pub(crate) fn clean_swarm(
        &self,
        swarm: &Swarm,
        now_stamp: u64,
        ctx: &Ctx,
        g: &Guard,
        rep: &mut CleanReport,
    ) {
        let stripe = stripe_of(info_hash_hash(&swarm.info_hash, ctx.seed));
        // A migration met on the way is helped, then the swarm is cleaned again on its new
        // table (a few times at most; after that it waits for the next cycle).
        'attempt: for _ in 0..4 {
            let t = self.current(swarm, g);
            let hd = t.header();
            if hd.next.load(Acquire) != NEXT_NONE {
                match self.help_migrate(swarm, t, ctx, g) {
                    Migrated::Moved => continue 'attempt,
                    Migrated::Dead(mine) => {
                        rep.swarms_freed += usize::from(mine);
                        return;
                    }
                }
            }
            let cap = t.cap();
            let mut live = 0usize;
            for i in 0..cap {
                let w = t.word(i, 0);
                let mut m = w.load(Acquire);
                loop {
                    if m & FROZEN != 0 {
                        match self.help_migrate(swarm, t, ctx, g) {
                            Migrated::Moved => continue 'attempt,
                            Migrated::Dead(mine) => {
                                rep.swarms_freed += usize::from(mine);
                                return;
                            }
                        }
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
                            self.count(swarm, stripe, m & SEEDER != 0, false);
                            ctx.release_peer();
                            rep.peers_expired += 1;
                            break;
                        }
                        Err(x) => m = x,
                    }
                }
            }
            let used = hd.used.load(Relaxed) as usize;
            let kind = if live == 0 {
                NEXT_KILL
            } else if used > live && (cap <= 8 || (used - live) * 4 > cap) {
                NEXT_GROW
            } else {
                return;
            };
            let _ = hd.next.compare_exchange(NEXT_NONE, kind, AcqRel, Acquire);
            if let Migrated::Dead(true) = self.help_migrate(swarm, t, ctx, g) {
                rep.swarms_freed += 1;
            }
            return;
        }
    }

    /// Test/debug view: the live peers (address, seeder) of the swarm for `ih`.
    pub(crate) fn peers_of<A: PeerAddress>(
        &self,
        ih: &[u8; 20],
        ctx: &Ctx,
        g: &Guard,
    ) -> Option<Vec<(A, bool)>> {
        let h = info_hash_hash(ih, ctx.seed);
        let sw = self.lookup(ih, h, ctx, g)?;
        let t = self.current(sw, g);
        let mut v = Vec::new();
        for i in 0..t.cap() {
            let m = t.word(i, 0).load(Acquire);
            if is_live(self.fam, m) {
                v.push((A::decode(m, self.addr_words(t, i)), m & SEEDER != 0));
            }
        }
        Some(v)
    }

    /// Raw (signed) counters of the swarm for `ih`: (seeders, leechers, completed).
    pub(crate) fn raw_counts(
        &self,
        ih: &[u8; 20],
        ctx: &Ctx,
        g: &Guard,
    ) -> Option<(i32, i32, u32)> {
        let sw = self.lookup(ih, info_hash_hash(ih, ctx.seed), ctx, g)?;
        Some((
            sw.seeders.load(Relaxed) as i32,
            sw.leechers.load(Relaxed) as i32,
            sw.completed.load(Relaxed),
        ))
    }

    /// Number of swarms in the map (walks every shard).
    pub(crate) fn walk_swarms(&self, g: &Guard, mut f: impl FnMut(&Swarm)) {
        for s in 0..SHARDS {
            let t = self.map_table(s, g);
            for i in 0..t.cap() {
                let v = t.word(i, 0).load(Acquire) & !M_FROZEN;
                if v != 0 && v & M_REMOVED == 0 {
                    // SAFETY: live slot read under `g`.
                    f(unsafe { Self::swarm_ref(v, g) });
                }
            }
        }
    }

    pub(crate) fn allocated_bytes(&self, g: &Guard) -> (usize, usize, usize) {
        let (mut sw, mut tb, mut map) = (0, 0, 0);
        for s in 0..SHARDS {
            map += crate::table::table_bytes(self.map_table(s, g).cap(), 1);
        }
        self.walk_swarms(g, |x| {
            sw += std::mem::size_of::<Swarm>();
            tb += crate::table::table_bytes(self.current(x, g).cap(), self.words());
        });
        (sw, tb, map)
    }

    /// The swarm at map slot `i` of shard `s`, if live; and the shard table's capacity.
    pub(crate) fn swarm_at<'g>(
        &self,
        s: usize,
        i: usize,
        g: &'g Guard,
    ) -> (usize, Option<&'g Swarm>) {
        let t = self.map_table(s, g);
        let cap = t.cap();
        if i >= cap {
            return (cap, None);
        }
        let v = t.word(i, 0).load(Acquire) & !M_FROZEN;
        if v != 0 && v & M_REMOVED == 0 {
            // SAFETY: live slot read under `g`.
            (cap, Some(unsafe { Self::swarm_ref(v, g) }))
        } else {
            (cap, None)
        }
    }
}

impl Drop for Family {
    fn drop(&mut self) {
        let words = self.words();
        for s in self.shards.iter() {
            // SAFETY: `&mut self`: no other thread uses the store any more.
            let t = unsafe { Table::from_addr(s.load(Relaxed), 1) };
            for i in 0..t.cap() {
                let v = t.word(i, 0).load(Relaxed) & !M_FROZEN;
                if v != 0 && v & M_REMOVED == 0 {
                    // SAFETY: each live swarm is owned by exactly one live map slot; removed
                    // ones were retired through the epoch instead.
                    unsafe {
                        Swarm::free(
                            std::ptr::with_exposed_provenance_mut((v & M_PTR) as usize),
                            words,
                        )
                    };
                }
            }
            // SAFETY: as above; the current map table is freed once.
            unsafe { t.free() };
        }
    }
}
