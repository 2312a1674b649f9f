//! Store admission per source prefix: how many peers one prefix may have stored, overall and
//! per swarm, so that one address (or one /24) cannot fill the store or a swarm.
//!
//! The store cannot be asked how many peers a prefix holds, so each worker counts: every
//! announce that keeps a peer stored (the store reports `Inserted` or `Updated`) adds one to
//! the announcing prefix's count, and to the count of (prefix, info hash). A stored peer must
//! have announced within `peer_timeout_secs` (plus the time the cleaner may take to remove it),
//! so the number of such announces in that window is at least the number of peers the prefix
//! holds: a count over the window is an **upper bound on what the prefix holds** through this
//! worker. A legitimate peer announcing every `announce_interval_secs` is counted at most
//! `⌈2 × window / interval⌉` times (4 at the defaults).
//!
//! # The sketch
//! Counts live in a count-min sketch of fixed size ([`AdmissionSketch`]): lines of eight
//! 8-byte cells; a key (hashed with a per-worker random key, `ahash`) picks a line and two
//! distinct cells in it, both are incremented, the estimate is the smaller of the two. Other
//! keys sharing a cell can only raise an estimate, never lower it, so the estimate stays an
//! upper bound (refusals can come early, never late). Each cell holds two generations of
//! `window` seconds (`prev`, `cur`, 24 bits each) and the generation number it was last
//! written in (16 bits); a cell read in a later generation shifts or clears itself, so the
//! window slides without a sweep. The sum `prev + cur` covers between one and two windows.
//!
//! # The policy ([`Admission`])
//! With `W` workers each worker allows a prefix `⌈max_prefix_share × max_peers / W⌉` counts
//! (`⌈pressure_prefix_share × max_peers / W⌉` once the store holds `pressure_fill` of its peers
//! or swarms), and a (prefix, swarm) pair `⌈max_peers_per_swarm / W⌉`. A prefix at its cap gets
//! no new peer: an announce that would insert one is answered (with peers) but what it inserted
//! is removed again at once, and one for a swarm that does not exist is answered without
//! creating it. Peers it already has are still refreshed. Summed over the workers, a prefix
//! holds at most `max_prefix_share × max_peers` peers (plus `W` for the rounding).

use std::net::IpAddr;

use crate::config::AdmissionConfig;
use crate::limiter::SourcePrefix;

const CELLS_PER_LINE: usize = 8;
const COUNT_BITS: u32 = 24;
const COUNT_MAX: u64 = (1 << COUNT_BITS) - 1;

#[derive(Debug, Clone, Copy, Default)]
#[repr(align(64))]
struct Line([u64; CELLS_PER_LINE]);

/// A cell: generation (16 bits) | prev (24) | cur (24).
#[inline]
fn unpack(cell: u64, generation: u16) -> (u64, u64) {
    let (g, prev, cur) = (
        (cell >> 48) as u16,
        (cell >> 24) & COUNT_MAX,
        cell & COUNT_MAX,
    );
    match generation.wrapping_sub(g) {
        0 => (prev, cur),
        1 => (cur, 0),
        _ => (0, 0),
    }
}

#[inline]
fn pack(generation: u16, prev: u64, cur: u64) -> u64 {
    (u64::from(generation) << 48) | (prev << 24) | cur
}

/// A fixed-size count-min sketch of counts over a sliding window (see the module docs).
pub struct AdmissionSketch {
    hasher: ahash::RandomState,
    /// Random keys of [`AdmissionSketch::hash_pair`].
    pair_keys: [u64; 2],
    lines: Box<[Line]>,
    line_mask: usize,
    window_secs: u32,
}

impl std::fmt::Debug for AdmissionSketch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdmissionSketch")
            .field("cells", &(self.lines.len() * CELLS_PER_LINE))
            .field("window_secs", &self.window_secs)
            .finish_non_exhaustive()
    }
}

/// Where a key's two cells are.
#[derive(Debug, Clone, Copy)]
struct Cells {
    line: usize,
    a: usize,
    b: usize,
}

impl AdmissionSketch {
    /// `cells` counters (rounded up to a power of two, at least 8) over windows of
    /// `window_secs` (at least 1).
    pub fn new(cells: usize, window_secs: u32) -> Self {
        let lines = cells.div_ceil(CELLS_PER_LINE).max(1).next_power_of_two();
        let hasher = ahash::RandomState::new();
        AdmissionSketch {
            pair_keys: [hasher.hash_one(1u8), hasher.hash_one(2u8) | 1],
            hasher,
            lines: vec![Line::default(); lines].into_boxed_slice(),
            line_mask: lines - 1,
            window_secs: window_secs.max(1),
        }
    }

    /// The generation (window number) of store-clock second `now`.
    #[inline]
    fn generation(&self, now: u32) -> u16 {
        (now / self.window_secs) as u16
    }

    #[inline]
    fn cells(&self, hash: u64) -> Cells {
        let a = (hash >> 58) as usize & (CELLS_PER_LINE - 1);
        let b = (a + 1 + ((hash >> 32) as usize % (CELLS_PER_LINE - 1))) & (CELLS_PER_LINE - 1);
        Cells {
            line: hash as usize & self.line_mask,
            a,
            b,
        }
    }

    fn hash_prefix(&self, prefix: u128) -> u64 {
        self.hasher.hash_one(prefix)
    }

    /// The key of a (prefix, swarm) pair from the prefix's keyed hash and the info hash: two
    /// folded multiplications (a tenth of hashing the 36 bytes again). The info hash is the
    /// client's choice, the prefix hash and the two keys are secret, so nobody can aim pairs
    /// at chosen cells.
    #[inline]
    fn hash_pair(&self, prefix_hash: u64, info_hash: &[u8; 20]) -> u64 {
        let mut b = [0u8; 24];
        b[..20].copy_from_slice(info_hash);
        let word = |i: usize| {
            u64::from_le_bytes(
                b.get(i..i + 8)
                    .and_then(|w| w.try_into().ok())
                    .unwrap_or_default(),
            )
        };
        let fold = |x: u64, y: u64| {
            let m = u128::from(x) * u128::from(y);
            (m >> 64) as u64 ^ m as u64
        };
        let [k0, k1] = self.pair_keys;
        fold(prefix_hash ^ word(0), k0 ^ word(8)) ^ fold(prefix_hash.rotate_left(32) ^ word(16), k1)
    }

    /// The estimate of a key's count in the window ending in generation `g`: never below
    /// the truth.
    #[inline]
    fn estimate(&self, hash: u64, g: u16) -> u64 {
        let c = self.cells(hash);
        let line = &self.lines[c.line].0;
        let (pa, ca) = unpack(line[c.a], g);
        let (pb, cb) = unpack(line[c.b], g);
        (pa + ca).min(pb + cb)
    }

    /// Adds one to a key's count in generation `g`.
    #[inline]
    fn add(&mut self, hash: u64, g: u16) {
        let c = self.cells(hash);
        let line = &mut self.lines[c.line].0;
        for i in [c.a, c.b] {
            let (prev, cur) = unpack(line[i], g);
            line[i] = pack(g, prev, (cur + 1).min(COUNT_MAX));
        }
    }
}

/// Why an announce's new peer is not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The prefix holds its share of the store.
    Prefix,
    /// The prefix holds its share of this swarm.
    Swarm,
}

impl Refusal {
    /// All reasons, in index order.
    pub const ALL: [Refusal; 2] = [Refusal::Prefix, Refusal::Swarm];
    /// Label value (`fjord_peers_rejected_total{reason=…}`).
    pub fn name(self) -> &'static str {
        match self {
            Refusal::Prefix => "prefix_limit",
            Refusal::Swarm => "prefix_swarm_limit",
        }
    }
}

/// The decision made before the store is called ([`Admission::check`]), carried to
/// [`Admission::after_store`].
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    prefix_hash: u64,
    /// The prefix holds its cap: no new peer, and no new swarm, may be stored for it.
    pub over_cap: bool,
}

/// What the store did with the announcing peer, as admission needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// A new peer was stored.
    Inserted,
    /// A stored peer was refreshed.
    Updated,
    /// Nothing is stored for it (removed, refused, port 0, …).
    Nothing,
}

/// One worker's admission policy (see the module docs).
pub struct Admission {
    prefix: SourcePrefix,
    /// Counts per prefix.
    prefixes: AdmissionSketch,
    /// Counts per (prefix, info hash), for swarms larger than the swarm cap.
    pairs: AdmissionSketch,
    /// Per-worker counts a prefix may reach: normally, and under pressure.
    prefix_cap: u64,
    pressure_cap: u64,
    /// Per-worker count a (prefix, swarm) pair may reach.
    swarm_cap: u64,
    pressure_fill: f64,
    /// Whether the store was `pressure_fill` full when last looked at.
    under_pressure: bool,
    /// Store-clock second of that look.
    pressure_checked: Option<u32>,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("prefix_cap", &self.prefix_cap)
            .field("pressure_cap", &self.pressure_cap)
            .field("swarm_cap", &self.swarm_cap)
            .field("prefixes", &self.prefixes)
            .field("pairs", &self.pairs)
            .finish_non_exhaustive()
    }
}

/// Seconds a peer can stay stored after its last announce: the timeout, then at most two
/// clean cycles and call intervals until the cleaner removes it, and the stamps' 8-second
/// granularity.
pub fn peer_lifetime_secs(peer_timeout: u32, clean_cycle: u32, clean_interval_ms: u64) -> u32 {
    let interval = clean_interval_ms.div_ceil(1000) as u32;
    peer_timeout + 2 * (clean_cycle + interval) + 8
}

impl Admission {
    /// The policy for one of `workers` workers of a store of `max_peers` peers whose peers live
    /// at most `lifetime_secs` after their last announce; `None` when admission is off.
    pub fn from_config(
        c: &AdmissionConfig,
        max_peers: usize,
        lifetime_secs: u32,
        workers: usize,
    ) -> Option<Self> {
        if !c.enabled {
            return None;
        }
        let w = workers.max(1) as f64;
        let cap = |share: f64| ((share * max_peers as f64 / w).ceil() as u64).clamp(1, COUNT_MAX);
        Some(Admission {
            prefix: SourcePrefix::new(c.prefix_v4, c.prefix_v6),
            prefixes: AdmissionSketch::new(c.sketch_cells, lifetime_secs),
            pairs: AdmissionSketch::new(c.swarm_sketch_cells, lifetime_secs),
            prefix_cap: cap(c.max_prefix_share),
            pressure_cap: cap(c.pressure_prefix_share),
            swarm_cap: (f64::from(c.max_peers_per_swarm) / w).ceil() as u64,
            pressure_fill: c.pressure_fill,
            under_pressure: false,
            pressure_checked: None,
        })
    }

    /// Per-worker caps: (prefix, prefix under pressure, prefix in one swarm).
    pub fn caps(&self) -> (u64, u64, u64) {
        (self.prefix_cap, self.pressure_cap, self.swarm_cap)
    }

    /// Whether the store's fill should be looked at again (once per store-clock second).
    #[inline]
    pub fn pressure_stale(&self, now: u32) -> bool {
        self.pressure_checked != Some(now)
    }

    /// Records the store's fill at `now`: `peers` of `max_peers`, `swarms` of `max_swarms`.
    pub fn set_fill(
        &mut self,
        now: u32,
        (peers, max_peers): (u64, u64),
        (swarms, max_swarms): (u64, u64),
    ) {
        let fill = |used: u64, max: u64| used as f64 / max.max(1) as f64;
        self.under_pressure =
            fill(peers, max_peers).max(fill(swarms, max_swarms)) >= self.pressure_fill;
        self.pressure_checked = Some(now);
    }

    /// Whether the store was under pressure at the last look.
    pub fn under_pressure(&self) -> bool {
        self.under_pressure
    }

    /// Before the store call: does the prefix of `ip` hold its cap?
    #[inline]
    pub fn check(&self, ip: IpAddr, now: u32) -> Ticket {
        let prefix = self.prefix.key(ip);
        let prefix_hash = self.prefixes.hash_prefix(prefix);
        let cap = if self.under_pressure {
            self.pressure_cap
        } else {
            self.prefix_cap
        };
        Ticket {
            prefix_hash,
            over_cap: self
                .prefixes
                .estimate(prefix_hash, self.prefixes.generation(now))
                >= cap,
        }
    }

    /// After the store call for `info_hash`, whose swarm now has `swarm_size` peers: counts an
    /// announce that kept a peer stored, or says why the peer it inserted must be removed
    /// again (then nothing is counted).
    ///
    /// A (prefix, swarm) pair is counted only while the swarm is larger than the swarm cap
    /// (in a smaller one nobody can exceed it), so the pair sketch carries the load of the
    /// busy swarms only. A prefix then holds at most twice the cap in one swarm: fewer than
    /// the cap from before the swarm grew past it, and the cap counted since.
    #[inline]
    pub fn after_store(
        &mut self,
        ticket: &Ticket,
        info_hash: &[u8; 20],
        stored: Stored,
        swarm_size: u64,
        now: u32,
    ) -> Option<Refusal> {
        let inserted = match stored {
            Stored::Nothing => return None,
            Stored::Inserted => true,
            Stored::Updated => false,
        };
        if inserted && ticket.over_cap {
            return Some(Refusal::Prefix);
        }
        // Both sketches count over the same window.
        let g = self.prefixes.generation(now);
        if swarm_size > self.swarm_cap {
            let h = self.pairs.hash_pair(ticket.prefix_hash, info_hash);
            if inserted && self.pairs.estimate(h, g) >= self.swarm_cap {
                return Some(Refusal::Swarm);
            }
            self.pairs.add(h, g);
        }
        self.prefixes.add(ticket.prefix_hash, g);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    #[test]
    fn cells_slide_over_two_generations() {
        let g = 7u16;
        let c = pack(g, 5, 9);
        assert_eq!(unpack(c, g), (5, 9));
        assert_eq!(unpack(c, g + 1), (9, 0));
        assert_eq!(unpack(c, g + 2), (0, 0));
        assert_eq!(unpack(c, g.wrapping_add(40_000)), (0, 0));
        let max = pack(u16::MAX, COUNT_MAX, COUNT_MAX);
        assert_eq!(unpack(max, u16::MAX), (COUNT_MAX, COUNT_MAX));
    }

    #[test]
    fn estimates_never_fall_below_the_count_within_the_window() {
        // A small sketch under heavy load: estimates may be high, never low.
        let mut s = AdmissionSketch::new(1024, 100);
        let mut truth = std::collections::HashMap::new();
        let mut x = 1u64;
        for i in 0..200_000u64 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let key = u128::from((x >> 40) % 5000);
            let h = s.hash_prefix(key);
            s.add(h, s.generation(50));
            *truth.entry(key).or_insert(0u64) += 1;
            if i % 1000 == 0 {
                assert!(s.estimate(h, s.generation(50)) >= truth[&key]);
            }
        }
        // The same through pair keys: 5,000 prefixes' hashes folded with 40 info hashes.
        let mut pairs = AdmissionSketch::new(1024, 100);
        let mut pair_truth = std::collections::HashMap::new();
        for _ in 0..100_000u64 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let (prefix, swarm) = (s.hash_prefix(u128::from((x >> 40) % 5000)), (x >> 20) % 40);
            let mut ih = [0u8; 20];
            ih[12..].copy_from_slice(&swarm.to_be_bytes());
            let h = pairs.hash_pair(prefix, &ih);
            pairs.add(h, pairs.generation(50));
            *pair_truth.entry(h).or_insert(0u64) += 1;
        }
        assert!(
            pair_truth.len() > 50_000,
            "pair keys are distinct: {}",
            pair_truth.len()
        );
        for (h, n) in &pair_truth {
            assert!(pairs.estimate(*h, pairs.generation(50)) >= *n);
        }
        for (k, n) in &truth {
            let h = s.hash_prefix(*k);
            assert!(s.estimate(h, s.generation(50)) >= *n);
            // One window later the counts are the previous generation's; two later, gone.
            assert!(s.estimate(h, s.generation(150)) >= *n);
            assert_eq!(s.estimate(h, s.generation(250)), 0);
        }
    }

    fn policy(max_peers: usize, workers: usize) -> Admission {
        let c = AdmissionConfig {
            max_prefix_share: 0.01,
            pressure_prefix_share: 0.001,
            max_peers_per_swarm: 8,
            sketch_cells: 1 << 16,
            swarm_sketch_cells: 1 << 16,
            ..AdmissionConfig::default()
        };
        Admission::from_config(&c, max_peers, 3000, workers).unwrap()
    }

    fn hash(i: u32) -> [u8; 20] {
        let mut h = [0u8; 20];
        h[..4].copy_from_slice(&i.to_be_bytes());
        h
    }

    /// What the handler does: check, then (the store inserting a new peer into a swarm of
    /// `size`) after_store. True when the peer stays.
    fn insert(a: &mut Admission, src: IpAddr, info_hash: &[u8; 20], size: u64, now: u32) -> bool {
        let t = a.check(src, now);
        a.after_store(&t, info_hash, Stored::Inserted, size, now)
            .is_none()
    }

    #[test]
    fn caps_are_shares_of_the_store_split_over_the_workers() {
        assert_eq!(policy(1_000_000, 1).caps(), (10_000, 1000, 8));
        assert_eq!(policy(1_000_000, 3).caps(), (3334, 334, 3));
        assert_eq!(policy(50, 1).caps(), (1, 1, 8));
    }

    #[test]
    fn a_prefix_at_its_cap_is_refused_and_others_are_not() {
        let mut a = policy(100_000, 1); // prefix cap 1000, under pressure 100, swarm cap 8
        let now = 10;
        let flooder = ip(203, 0, 113, 9);
        let admitted = (0..5000)
            .filter(|&i| insert(&mut a, flooder, &hash(i), 1, now))
            .count();
        assert_eq!(admitted, 1000, "the prefix cap");
        // The same /24 is the same source; another /24 is not.
        assert!(a.check(ip(203, 0, 113, 200), now).over_cap);
        assert!(!a.check(ip(203, 0, 114, 1), now).over_cap);
        // Peers it has are still refreshed (and counted), never refused.
        let t = a.check(flooder, now);
        assert_eq!(a.after_store(&t, &hash(1), Stored::Updated, 1, now), None);
        // Two windows later the counts are gone.
        assert!(insert(&mut a, flooder, &hash(9), 1, now + 6000));
        // Under pressure the cap is the pressure share.
        let mut b = policy(100_000, 1);
        b.set_fill(now, (90_000, 100_000), (10, 1000));
        assert!(b.under_pressure());
        let src = ip(192, 0, 2, 1);
        assert_eq!(
            (0..1000)
                .filter(|&i| insert(&mut b, src, &hash(i), 1, now))
                .count(),
            100
        );
        b.set_fill(now + 1, (10, 100_000), (799, 1000));
        assert!(!b.under_pressure());
        b.set_fill(now + 2, (10, 100_000), (800, 1000));
        assert!(b.under_pressure(), "swarms count too");
    }

    #[test]
    fn a_prefix_gets_at_most_the_swarm_cap_more_peers_in_a_large_swarm() {
        let mut a = policy(1_000_000, 1); // swarm cap 8
        let now = 5;
        let src = ip(198, 51, 100, 1);
        let swarm = hash(0xee);
        // While the swarm is small, the pair is not counted.
        assert_eq!(
            (0..8)
                .filter(|_| insert(&mut a, src, &swarm, 8, now))
                .count(),
            8
        );
        // Past the cap: 8 more, then refused.
        assert_eq!(
            (0..100)
                .filter(|_| insert(&mut a, src, &swarm, 500, now))
                .count(),
            8
        );
        assert!(
            insert(&mut a, src, &hash(0xef), 500, now),
            "other swarms are open"
        );
        assert!(
            insert(&mut a, ip(198, 51, 101, 1), &swarm, 500, now),
            "and other prefixes"
        );
    }
}
