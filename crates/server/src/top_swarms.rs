//! The largest swarms, by peers and by completed downloads, found on the cleaner's walk.
//!
//! The maintenance thread's expiry slices visit every swarm once per clean cycle anyway
//! ([`PeerStore::clean_observed`](crate::fjord_store::PeerStore::clean_observed) reports each
//! one they leave alive); [`TopSwarms::observe`] keeps the `n` largest seen so far in a
//! bounded list: a look at a 1,024-bit filter of the ranked swarms' hashes (is it ranked
//! already? only then a scan of `n` eight-byte keys, and its counts are updated, or it leaves
//! the list if it is now empty) and one comparison with the `n`-th largest; an insertion
//! costs O(`n`) and is rare after the first few thousand swarms.
//! `n` is at most [`MAX_TOP_SWARMS`]. Nothing walks the store for statistics, and the workers
//! never see any of it.
//!
//! A slice reports which call completed a cycle, not which of its swarms came before the
//! cycle's end, so [`TopWindow`] publishes the ranking of a window that is at least one whole
//! cycle: from the start of the slice that completed the previous cycle to the end of the
//! slice that completes this one. A swarm seen twice in a window is one entry with its latest
//! counts. A ranked swarm freed meanwhile (it emptied) is not reported again, so its entry can
//! be up to two cycles old; a shrinking swarm leaves the ranking as the walk sees it shrink.

use crate::fjord_store::{IpFamily, SwarmSummary};

/// Largest `n` of a ranking (`stats.top_swarms`).
pub const MAX_TOP_SWARMS: usize = 50;

/// One ranked swarm (a torrent announced over IPv4 and IPv6 is two swarms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwarmEntry {
    /// The info hash.
    pub info_hash: [u8; 20],
    /// The swarm's address family.
    pub family: IpFamily,
    /// Seeders when the cleaner visited it.
    pub seeders: u32,
    /// Leechers when the cleaner visited it.
    pub leechers: u32,
    /// Downloads completed in this swarm since it was created.
    pub completed: u32,
}

impl SwarmEntry {
    /// Seeders plus leechers.
    pub fn peers(&self) -> u64 {
        u64::from(self.seeders) + u64::from(self.leechers)
    }
}

impl From<&SwarmSummary> for SwarmEntry {
    fn from(s: &SwarmSummary) -> Self {
        SwarmEntry {
            info_hash: s.info_hash,
            family: s.family,
            seeders: s.seeders,
            leechers: s.leechers,
            completed: s.completed,
        }
    }
}

/// What a ranking orders by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RankBy {
    /// Seeders + leechers.
    Peers,
    /// Completed downloads.
    Completed,
}

impl RankBy {
    fn value(self, e: &SwarmEntry) -> u64 {
        match self {
            RankBy::Peers => e.peers(),
            RankBy::Completed => u64::from(e.completed),
        }
    }
}

/// The `n` largest swarms observed, by one measure. Swarms with a value of 0 are not ranked.
#[derive(Debug, Clone)]
pub struct TopSwarms {
    n: usize,
    by: RankBy,
    entries: Vec<SwarmEntry>,
    /// `key(entries[i])`, scanned when the filter says a swarm may be ranked.
    keys: Vec<u64>,
    /// One bit per ranked key ([`filter_bit`]): a clear bit means "not ranked".
    filter: [u64; 16],
    /// Index and value of the smallest entry, when the list is full.
    min: Option<(usize, u64)>,
}

/// The first eight bytes of the info hash, the family in the lowest bit: a quick filter (a
/// match is confirmed on the whole hash, so crafted hashes sharing a prefix change nothing).
#[inline]
fn key(e: &SwarmEntry) -> u64 {
    let [a, b, c, d, f, g, h, i, ..] = e.info_hash;
    (u64::from_le_bytes([a, b, c, d, f, g, h, i]) & !1) | u64::from(e.family == IpFamily::V6)
}

/// The filter bit of a key (bits 20–29 of the info hash's first word: random for real hashes).
#[inline]
fn filter_bit(k: u64) -> (usize, u64) {
    let bit = (k >> 20) as usize & 1023;
    (bit >> 6, 1 << (bit & 63))
}

impl TopSwarms {
    /// An empty ranking of at most `n` swarms by `by`.
    pub fn new(n: usize, by: RankBy) -> Self {
        TopSwarms {
            n,
            by,
            entries: Vec::with_capacity(n),
            keys: Vec::with_capacity(n),
            filter: [0; 16],
            min: None,
        }
    }

    /// Forgets every entry.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.keys.clear();
        self.filter = [0; 16];
        self.min = None;
    }

    #[inline]
    fn position(&self, k: u64, e: &SwarmEntry) -> Option<usize> {
        let (word, bit) = filter_bit(k);
        if self.filter[word] & bit == 0 {
            return None;
        }
        self.keys.iter().enumerate().find_map(|(i, &x)| {
            (x == k
                && self.entries[i].info_hash == e.info_hash
                && self.entries[i].family == e.family)
                .then_some(i)
        })
    }

    /// After any change of the entries: the smallest entry and the filter.
    fn recompute_min(&mut self) {
        self.filter = [0; 16];
        for &k in &self.keys {
            let (word, bit) = filter_bit(k);
            self.filter[word] |= bit;
        }
        self.min = if self.entries.len() == self.n {
            self.entries
                .iter()
                .enumerate()
                .map(|(i, x)| (i, self.by.value(x)))
                .min_by_key(|&(_, v)| v)
        } else {
            None
        };
    }

    /// Considers one swarm: updates it if ranked (removes it if its value is now 0), else
    /// ranks it if it is larger than the smallest ranked one or the list is not full.
    #[inline]
    pub fn observe(&mut self, e: &SwarmEntry) {
        if self.n == 0 {
            return;
        }
        let v = self.by.value(e);
        let k = key(e);
        if let Some(i) = self.position(k, e) {
            self.update(i, e, v);
            return;
        }
        if v == 0 {
            return;
        }
        if let Some((_, min)) = self.min
            && v <= min
        {
            return; // the common case once the list is full
        }
        if self.entries.len() < self.n {
            self.entries.push(*e);
            self.keys.push(k);
        } else if let Some((i, _)) = self.min {
            self.entries[i] = *e;
            self.keys[i] = k;
        }
        self.recompute_min();
    }

    #[cold]
    fn update(&mut self, i: usize, e: &SwarmEntry, v: u64) {
        if v == 0 {
            self.entries.swap_remove(i);
            self.keys.swap_remove(i);
        } else {
            self.entries[i] = *e;
        }
        self.recompute_min();
    }

    /// The entries, largest first (ties by info hash, for a stable order).
    pub fn ranked(&self) -> Vec<SwarmEntry> {
        let mut v = self.entries.clone();
        v.sort_by(|a, b| {
            self.by
                .value(b)
                .cmp(&self.by.value(a))
                .then_with(|| a.info_hash.cmp(&b.info_hash))
        });
        v
    }
}

/// Both rankings.
#[derive(Debug, Clone)]
pub struct TopPair {
    /// By seeders + leechers.
    pub by_peers: TopSwarms,
    /// By completed downloads.
    pub by_completed: TopSwarms,
}

impl TopPair {
    /// Empty rankings of `n` swarms each.
    pub fn new(n: usize) -> Self {
        TopPair {
            by_peers: TopSwarms::new(n, RankBy::Peers),
            by_completed: TopSwarms::new(n, RankBy::Completed),
        }
    }

    /// Considers one swarm in both rankings.
    #[inline]
    pub fn observe(&mut self, e: &SwarmEntry) {
        self.by_peers.observe(e);
        self.by_completed.observe(e);
    }

    fn clear(&mut self) {
        self.by_peers.clear();
        self.by_completed.clear();
    }
}

/// Rankings over windows of at least one clean cycle (see the module docs).
#[derive(Debug, Clone)]
pub struct TopWindow {
    /// Since the start of the slice that completed the previous cycle.
    pub window: TopPair,
    /// This slice only.
    slice: TopPair,
}

impl TopWindow {
    /// Empty rankings of `n` swarms each.
    pub fn new(n: usize) -> Self {
        TopWindow {
            window: TopPair::new(n),
            slice: TopPair::new(n),
        }
    }

    /// Call before a clean slice.
    pub fn start_slice(&mut self) {
        self.slice.clear();
    }

    /// Call for every swarm the slice reports.
    #[inline]
    pub fn observe(&mut self, s: &SwarmSummary) {
        let e = SwarmEntry::from(s);
        self.window.observe(&e);
        self.slice.observe(&e);
    }

    /// Call after the slice: when it completed a cycle, returns the window's rankings (at least
    /// one whole cycle) and starts the next window with this slice's swarms.
    pub fn end_slice(&mut self, cycle_complete: bool) -> Option<TopPair> {
        if !cycle_complete {
            return None;
        }
        let done = self.window.clone();
        self.window.clone_from(&self.slice);
        Some(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn swarm(i: u8, seeders: u32, leechers: u32, completed: u32) -> SwarmSummary {
        SwarmSummary {
            info_hash: [i; 20],
            family: IpFamily::V4,
            seeders,
            leechers,
            completed,
        }
    }

    #[test]
    fn keeps_the_n_largest_whatever_the_order() {
        // 0..200 in a scrambled order; the top 5 by peers are 199..195.
        let mut t = TopSwarms::new(5, RankBy::Peers);
        for k in 0..200u32 {
            let i = (k * 73) % 200;
            t.observe(&SwarmEntry::from(&swarm(i as u8, i, 0, 0)));
        }
        let got: Vec<u32> = t.ranked().iter().map(|e| e.seeders).collect();
        assert_eq!(got, [199, 198, 197, 196, 195]);
    }

    #[test]
    fn a_swarm_seen_twice_is_one_entry_and_empty_swarms_are_not_ranked() {
        let mut t = TopSwarms::new(3, RankBy::Completed);
        t.observe(&SwarmEntry::from(&swarm(1, 0, 0, 5)));
        t.observe(&SwarmEntry::from(&swarm(1, 0, 0, 7)));
        t.observe(&SwarmEntry::from(&swarm(2, 9, 9, 0)));
        let r = t.ranked();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].completed, 7);
    }

    #[test]
    fn a_crafted_hash_sharing_a_prefix_is_another_swarm() {
        let mut t = TopSwarms::new(3, RankBy::Peers);
        let mut other = swarm(1, 3, 0, 0);
        other.info_hash[19] = 0xee;
        t.observe(&SwarmEntry::from(&swarm(1, 9, 0, 0)));
        t.observe(&SwarmEntry::from(&other));
        assert_eq!(t.ranked().len(), 2);
        assert_eq!(t.ranked()[0].seeders, 9);
    }

    #[test]
    fn a_window_spans_at_least_one_cycle() {
        let mut w = TopWindow::new(3);
        // Slice 1 ends a cycle after swarms 1, 2 and starts the next with swarm 3.
        w.start_slice();
        for s in [swarm(1, 10, 0, 0), swarm(2, 5, 0, 0), swarm(3, 1, 0, 0)] {
            w.observe(&s);
        }
        let first = w.end_slice(true).unwrap();
        assert_eq!(first.by_peers.ranked().len(), 3);
        w.start_slice();
        assert!(w.end_slice(false).is_none());
        // Slice 3 finishes the next cycle: swarm 1 emptied, swarm 2 shrank. Swarm 3, seen in
        // slice 1 only (after the boundary), is still in the published window.
        w.start_slice();
        for s in [swarm(1, 0, 0, 0), swarm(2, 0, 1, 0)] {
            w.observe(&s);
        }
        let second = w.end_slice(true).unwrap();
        let ranked: Vec<([u8; 20], u64)> = second
            .by_peers
            .ranked()
            .iter()
            .map(|e| (e.info_hash, e.peers()))
            .collect();
        assert_eq!(ranked, [([2; 20], 1), ([3; 20], 1)]);
    }
}
