//! Incremental expiry: the clean cursor, the cycle whose length is bounded by construction,
//! and the shrinking of swarm-map tables left oversized by a swarm flood.
//!
//! Stamps are 13 bits of 8 s, so a peer's age is known only modulo 18.2 h. A peer that is not
//! removed before its age wraps would look fresh again; the guarantee that this never happens
//! is that every swarm is visited at least once per `clean_cycle_secs` (bounded by
//! [`StoreConfig::max_clean_cycle_secs`](crate::StoreConfig::max_clean_cycle_secs)). The cycle
//! bound does not depend on the caller's budget: each call raises the budget to what finishes
//! the cycle in time at the observed call interval, and a call made after the cycle is due
//! walks to the cycle's end.

use std::sync::Mutex;

use crate::addr::stamp_of;
use crate::family::Family;
use crate::family::{MapSlot, SHARDS};
use crate::sync::{AtomicU64, Ordering::Relaxed, epoch};
use crate::{CleanReport, CleanStats, PeerStore, SwarmSummary};

/// State of the walk, touched only by `clean` (one caller at a time; see [`Cleaner::state`]).
#[derive(Debug, Default)]
struct Cursor {
    /// Next position: unit = family * SHARDS + shard, and a slot of that shard's table.
    unit: usize,
    slot: usize,
    /// Generation of the map table `slot` refers to (0: none yet; tables start at 1). If the
    /// shard's table has been replaced since, its swarms have moved: the walk restarts that
    /// shard at slot 0, so that none is skipped in this cycle (some may be visited twice).
    table: u64,
    /// `now` of the call that started the current cycle (`None` before the first call).
    cycle_start: Option<u32>,
    /// Swarms visited since the current cycle started.
    visited: u64,
    /// `now` of the previous call.
    last_call: Option<u32>,
}

/// The cleaner's state: the cursor behind a mutex that only `clean` takes (with `try_lock`:
/// a concurrent call returns at once instead of waiting), and published figures in atomics.
pub(crate) struct Cleaner {
    state: Mutex<Cursor>,
    /// Last complete cycle's length + 1 (0 = none yet).
    last_cycle: AtomicU64,
    cycles: AtomicU64,
    pub(crate) cycle_limit_secs: u32,
    /// [`StoreConfig::max_clean_cycle_secs`](crate::StoreConfig::max_clean_cycle_secs): a
    /// cycle plus the interval between calls must stay within it, so the target shrinks by
    /// the interval observed.
    window_secs: u32,
}

impl Cleaner {
    pub(crate) fn new(cycle_limit_secs: u32, window_secs: u32) -> Self {
        Cleaner {
            state: Mutex::new(Cursor::default()),
            last_cycle: AtomicU64::new(0),
            cycles: AtomicU64::new(0),
            cycle_limit_secs,
            window_secs,
        }
    }

    pub(crate) fn stats(&self) -> CleanStats {
        CleanStats {
            last_cycle_secs: self
                .last_cycle
                .load(Relaxed)
                .checked_sub(1)
                .map(|s| s as u32),
            cycles: self.cycles.load(Relaxed),
            cycle_limit_secs: self.cycle_limit_secs,
        }
    }
}

impl Cursor {
    /// The budget of a call at `now`: at least `min` swarms; enough that the swarms not yet
    /// visited in this cycle are visited by its deadline at the interval observed between
    /// calls; and, once the deadline has come, `overdue`: walk at least to the cycle's end.
    /// The deadline is `limit` after the cycle's start, brought forward if needed so that the
    /// cycle plus one interval fits `window`.
    fn budget(&self, now: u32, min: usize, swarms: u64, limit: u32, window: u32) -> (usize, bool) {
        let Some(start) = self.cycle_start else {
            return (min, false);
        };
        let interval = self.last_call.map_or(1, |l| now.saturating_sub(l).max(1));
        let limit = limit.min(window.saturating_sub(interval)).max(1);
        let elapsed = now.saturating_sub(start);
        if elapsed >= limit {
            return (min, true);
        }
        let calls_left = u64::from((limit - elapsed) / interval).max(1);
        let need = swarms.saturating_sub(self.visited).div_ceil(calls_left);
        (min.max(usize::try_from(need).unwrap_or(usize::MAX)), false)
    }
}

impl PeerStore {
    /// Incremental expiry: visits swarms from a rotating cursor (IPv4 shards, then IPv6
    /// shards), removes expired peers, frees empty swarms, compacts blocks full of tombstones
    /// and rebuilds swarm-map tables that are mostly tombstones or far too large.
    ///
    /// `min_swarms` is the caller's budget per call; the store raises it so that every cycle
    /// (a visit of every swarm) finishes within `clean_cycle_secs` of its start, at the
    /// interval observed between calls, and a call made once the cycle is due walks to its end.
    /// A call never walks more than one full circle. Call it regularly from one thread, with a
    /// monotonic `now_secs` (the same clock as the announces), at intervals well below
    /// `clean_cycle_secs`: that bounds the cycle, and with it the time a departed peer stays
    /// (`peer_timeout_secs + clean_cycle_secs` plus one interval). A concurrent call returns at
    /// once with an empty report.
    pub fn clean(&self, now_secs: u32, min_swarms: usize) -> CleanReport {
        self.clean_observed(now_secs, min_swarms, |_| {})
    }

    /// [`PeerStore::clean`], calling `on_swarm` for every swarm it visited and left alive
    /// (freed swarms are not reported), so that statistics over all swarms ride on the walk
    /// that happens anyway.
    pub fn clean_observed(
        &self,
        now_secs: u32,
        min_swarms: usize,
        mut on_swarm: impl FnMut(&SwarmSummary),
    ) -> CleanReport {
        let Ok(mut cur) = self.cleaner.state.try_lock() else {
            return CleanReport::default();
        };
        let guard = epoch::pin();
        let now_stamp = stamp_of(now_secs);
        let swarms = self.ctx.swarms.load(Relaxed).max(0) as u64;
        let (budget, overdue) = cur.budget(
            now_secs,
            min_swarms,
            swarms,
            self.cleaner.cycle_limit_secs,
            self.cleaner.window_secs,
        );
        cur.cycle_start.get_or_insert(now_secs);
        cur.last_call = Some(now_secs);
        let mut rep = CleanReport {
            budget,
            overdue,
            ..CleanReport::default()
        };
        let units = 2 * SHARDS;
        let (start_unit, start_slot) = (cur.unit % units, cur.slot);
        let (mut unit, mut slot, mut table) = (start_unit, start_slot, cur.table);
        // Units entered so far; at `units` the walk is back on its first unit, where it stops
        // at the slot it started from (or the table's end, if the table shrank meanwhile).
        let mut units_done = 0;
        // Live swarms and tombstones of the current unit, if the walk covered it from slot 0.
        let mut census = (slot == 0).then_some((0usize, 0usize));
        // An overdue call walks at least to the end of the cycle; any call, its budget.
        'walk: loop {
            let fam = &self.fams[unit / SHARDS];
            let shard = unit & (SHARDS - 1);
            // One snapshot of the shard's table per unit: if it is replaced while we walk it,
            // its frozen slots still name every swarm it held (stale blocks lead to their
            // successors), and the next call sees the new generation.
            let t = fam.map_table(shard, &guard);
            let generation = t.header().generation;
            if generation != table {
                if table != 0 && slot > 0 {
                    slot = 0;
                    census = Some((0, 0));
                }
                table = generation;
            }
            let cap = t.cap();
            let end = if units_done == units {
                cap.min(start_slot)
            } else {
                cap
            };
            while slot < end {
                if rep.swarms_visited >= budget && (rep.cycle_complete || !overdue) {
                    break 'walk;
                }
                let at = fam.map_slot(t, slot);
                slot += 1;
                match at {
                    MapSlot::Live(sw) => {
                        rep.swarms_visited += 1;
                        cur.visited += 1;
                        let after = fam.clean_swarm(sw, now_stamp, &self.ctx, &guard, &mut rep);
                        if let Some(c) = census.as_mut() {
                            // A swarm this visit freed left a tombstone behind.
                            if after.is_some() { c.0 += 1 } else { c.1 += 1 }
                        }
                        if let Some(b) = after {
                            let (seeders, leechers) = fam.counts(b);
                            on_swarm(&SwarmSummary {
                                info_hash: *b.info_hash(),
                                family: fam.fam,
                                seeders,
                                leechers,
                                completed: Family::completed_of(b),
                            });
                        }
                    }
                    MapSlot::Dead => {
                        if let Some(c) = census.as_mut() {
                            c.1 += 1;
                        }
                    }
                    MapSlot::Empty => {}
                }
            }
            if units_done == units {
                break;
            }
            if let Some((live, dead)) = census
                && fam.shrink_map_if_sparse(shard, t, live, dead, &self.ctx, &guard)
            {
                rep.maps_shrunk += 1;
            }
            slot = 0;
            table = 0;
            unit += 1;
            units_done += 1;
            census = Some((0, 0));
            if unit == units {
                unit = 0;
                rep.cycle_complete = true;
                let secs = now_secs.saturating_sub(cur.cycle_start.unwrap_or(now_secs));
                rep.cycle_secs = Some(secs);
                self.cleaner.last_cycle.store(u64::from(secs) + 1, Relaxed);
                self.cleaner.cycles.fetch_add(1, Relaxed);
                cur.cycle_start = Some(now_secs);
                cur.visited = 0;
            }
        }
        cur.unit = unit;
        cur.slot = slot;
        cur.table = table;
        rep
    }

    /// How the clean cycle keeps up: the last cycle's length, cycles done, the bound.
    pub fn clean_stats(&self) -> CleanStats {
        self.cleaner.stats()
    }
}
