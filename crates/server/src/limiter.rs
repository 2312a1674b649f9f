//! The per-source rate limiter: datagrams per source prefix, metered by token buckets in a
//! fixed-size sketch owned by one worker (no lock, no atomic, no allocation after start).
//!
//! # What it guarantees
//! Let `rate` and `burst` be the configured values divided by the number of workers (rounded
//! up). A source prefix ([`SourcePrefix`]: IPv4 /32 and IPv6 /64 by default) gets at most
//! `2 × (burst + rate × t)` datagrams through one worker in any `t` seconds, and about
//! `burst + rate × t` unless another heavy source shares one of its buckets. `SO_REUSEPORT`
//! spreads a prefix's source ports over the workers by a hash of the 4-tuple, so summed over
//! the workers a prefix gets about `limits.requests_per_sec` (at most twice that), whatever
//! ports it uses; a single socket always lands on one worker and gets `1/workers` of it.
//! Everything else of the handler runs only for datagrams the limiter allowed, so a flood from
//! one prefix costs a hash and one cache line per datagram.
//!
//! Connects are metered like everything else, so a forged source address (a victim) gets at
//! most that many 16-byte connect replies: reflection towards one prefix is bounded by
//! `2 × requests_per_sec × 16` bytes per second.
//!
//! # How: a count-min sketch of token buckets
//! `lines` is an array of cache lines of eight buckets (`tokens`, and the store-clock second
//! they were counted at; tokens are added once per second, up to the burst, when a bucket is
//! next touched). A prefix is hashed with a keyed hash (`ahash`, seeded at random when the
//! worker starts, so nobody can aim sources at chosen buckets); the hash picks a line and two
//! distinct buckets in it. A datagram is **allowed if either bucket has a token**, and takes a
//! token from each that has one. Nothing is ever evicted, so nothing is forgotten:
//! - a heavy source drains both its buckets and is then held to their refill;
//! - a light source is refused only if both its buckets are drained by heavier sources, which
//!   the hash's key keeps anyone from arranging: for each heavy prefix, the light ones whose two
//!   buckets are both its own (1 in `lines × 28`: 1 in 229,376 with the default 65,536
//!   buckets), and those whose buckets two different heavy prefixes drain;
//! - diffuse traffic (e.g. a flood of forged, one-off sources) adds `2 × load / n` per second
//!   to each bucket: with the default 65,536 buckets and `rate` 500 it takes 16 million
//!   datagrams a second on one worker before it could drain a bucket, far beyond what a
//!   worker receives (`a_flood_of_one_off_sources_does_not_free_a_metered_source`).

use std::net::IpAddr;

use crate::config::LimitsConfig;

/// Maps a source address to the prefix that is metered (or counted) as one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourcePrefix {
    v4_mask: u128,
    v6_mask: u128,
}

/// A source prefix as one number: IPv4 prefixes in the IPv4-mapped range (`::ffff:a.b.c.0`),
/// which no IPv6 source uses after canonicalisation, so the families never collide.
pub type PrefixKey = u128;

impl SourcePrefix {
    /// IPv4 addresses cut to `/v4_bits`, IPv6 to `/v6_bits`.
    pub fn new(v4_bits: u8, v6_bits: u8) -> Self {
        let mask = |bits: u32| match bits {
            0 => 0,
            b => u128::MAX << (128 - b.min(128)),
        };
        SourcePrefix {
            v4_mask: mask(96 + u32::from(v4_bits.min(32))),
            v6_mask: mask(u32::from(v6_bits)),
        }
    }

    /// The prefix of `ip` (IPv4-mapped IPv6 addresses are taken as IPv4).
    #[inline]
    pub fn key(&self, ip: IpAddr) -> PrefixKey {
        match ip {
            IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()) & self.v4_mask,
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => u128::from(v4.to_ipv6_mapped()) & self.v4_mask,
                None => u128::from(v6) & self.v6_mask,
            },
        }
    }
}

const BUCKETS_PER_LINE: usize = 8;

/// Eight buckets, each `tokens << 32 | stamp`.
#[derive(Debug, Clone, Copy, Default)]
#[repr(align(64))]
struct Line([u64; BUCKETS_PER_LINE]);

/// One worker's rate limiter (see the module docs).
pub struct RateLimiter {
    prefix: SourcePrefix,
    hasher: ahash::RandomState,
    lines: Box<[Line]>,
    line_mask: usize,
    /// Tokens added per second, per worker.
    rate: u32,
    /// Most tokens a bucket holds, per worker.
    burst: u32,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("buckets", &(self.lines.len() * BUCKETS_PER_LINE))
            .field("rate", &self.rate)
            .field("burst", &self.burst)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// A limiter for one of `workers` workers, or `None` when `limits.enabled` is false.
    pub fn from_config(c: &LimitsConfig, workers: usize) -> Option<Self> {
        c.enabled.then(|| {
            let w = workers.max(1) as u32;
            RateLimiter::new(
                SourcePrefix::new(c.prefix_v4, c.prefix_v6),
                c.requests_per_sec.div_ceil(w),
                c.burst.div_ceil(w),
                c.buckets,
            )
        })
    }

    /// `buckets` (rounded up to a power of two, at least eight) buckets of `burst` tokens (at
    /// least 1), `rate` added per second. Every bucket starts full.
    pub fn new(prefix: SourcePrefix, rate: u32, burst: u32, buckets: usize) -> Self {
        let lines = buckets
            .div_ceil(BUCKETS_PER_LINE)
            .max(1)
            .next_power_of_two();
        let burst = burst.max(1);
        let full = Line([u64::from(burst) << 32; BUCKETS_PER_LINE]);
        RateLimiter {
            prefix,
            hasher: ahash::RandomState::new(),
            lines: vec![full; lines].into_boxed_slice(),
            line_mask: lines - 1,
            rate,
            burst,
        }
    }

    /// Tokens per second and burst of this worker's buckets.
    pub fn rate_and_burst(&self) -> (u32, u32) {
        (self.rate, self.burst)
    }

    /// Counts one datagram from `ip` at store-clock second `now`; false when both buckets of
    /// its prefix are empty (the datagram should be dropped).
    #[inline]
    pub fn allows(&mut self, ip: IpAddr, now: u32) -> bool {
        let hash = self.hasher.hash_one(self.prefix.key(ip));
        let a = (hash >> 58) as usize & (BUCKETS_PER_LINE - 1);
        let b = (a + 1 + ((hash >> 32) as usize % (BUCKETS_PER_LINE - 1))) & (BUCKETS_PER_LINE - 1);
        let (rate, burst) = (u64::from(self.rate), u64::from(self.burst));
        let line = &mut self.lines[hash as usize & self.line_mask].0;
        let mut allowed = false;
        for i in [a, b] {
            let (tokens, stamp) = (line[i] >> 32, line[i] & u64::from(u32::MAX));
            let elapsed = u64::from(now).saturating_sub(stamp);
            let tokens = (tokens + elapsed * rate).min(burst);
            let left = match tokens.checked_sub(1) {
                Some(left) => {
                    allowed = true;
                    left
                }
                None => 0,
            };
            line[i] = (left << 32) | u64::from(now);
        }
        allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    #[test]
    fn prefixes_cut_addresses_and_keep_the_families_apart() {
        let p = SourcePrefix::new(24, 64);
        assert_eq!(p.key(v4(192, 0, 2, 1)), p.key(v4(192, 0, 2, 200)));
        assert_ne!(p.key(v4(192, 0, 2, 1)), p.key(v4(192, 0, 3, 1)));
        let mapped: IpAddr = "::ffff:192.0.2.9".parse().unwrap();
        assert_eq!(p.key(mapped), p.key(v4(192, 0, 2, 1)));
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::1".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(p.key(a), p.key(b));
        assert_ne!(p.key(a), p.key(c));
        // IPv6 ::/64 (all zero) and IPv4 0.0.0.0 are different sources.
        assert_ne!(
            p.key(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
            p.key(v4(0, 0, 0, 0))
        );
        let exact = SourcePrefix::new(32, 128);
        assert_ne!(exact.key(v4(192, 0, 2, 1)), exact.key(v4(192, 0, 2, 2)));
    }

    #[test]
    fn a_source_gets_its_burst_then_its_rate() {
        let mut l = RateLimiter::new(SourcePrefix::new(32, 64), 10, 50, 64);
        let src = v4(192, 0, 2, 1);
        let allowed = (0..200).filter(|_| l.allows(src, 100)).count();
        assert_eq!(allowed, 50, "the burst, within one second");
        // One second later: 10 more; three seconds later: 30 more.
        assert_eq!((0..200).filter(|_| l.allows(src, 101)).count(), 10);
        assert_eq!((0..200).filter(|_| l.allows(src, 104)).count(), 30);
        // Idle long enough: the full burst again, never more.
        assert_eq!((0..200).filter(|_| l.allows(src, 1000)).count(), 50);
    }

    #[test]
    fn over_a_long_run_a_flooder_gets_the_rate() {
        let mut l = RateLimiter::new(SourcePrefix::new(32, 64), 100, 1000, 1024);
        let src = v4(198, 51, 100, 7);
        let mut allowed = 0u64;
        for second in 0..60 {
            allowed += (0..10_000).filter(|_| l.allows(src, second)).count() as u64;
        }
        assert_eq!(allowed, 1000 + 59 * 100);
    }

    #[test]
    fn light_sources_beside_heavy_ones_are_served() {
        // 512 buckets, 8 heavy sources flooding: a light source is refused only when both its
        // buckets are drained, and no heavy one gets more than twice its share.
        let mut l = RateLimiter::new(SourcePrefix::new(32, 64), 10, 20, 512);
        let heavy: Vec<IpAddr> = (0..8).map(|i| v4(203, 0, 113, i)).collect();
        let mut heavy_allowed = vec![0u64; heavy.len()];
        let mut light_refused = 0;
        for second in 0..20u32 {
            for _ in 0..100 {
                for (n, h) in heavy_allowed.iter_mut().zip(&heavy) {
                    *n += u64::from(l.allows(*h, second));
                }
            }
            for i in 0..100u32 {
                let light = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + second * 1000 + i));
                light_refused += u32::from(!l.allows(light, second));
            }
        }
        let share = 20 + 19 * 10;
        for n in &heavy_allowed {
            assert!(*n <= 2 * share, "{heavy_allowed:?}");
        }
        assert!(
            heavy_allowed.iter().sum::<u64>() >= 8 * share * 3 / 4,
            "{heavy_allowed:?}"
        );
        // 16 of 512 buckets drained: about (16/512)² of the light sources, i.e. 2 of 2000; a
        // light source whose line holds a heavy one's two buckets has 1 in 28 odds of both.
        assert!(
            light_refused <= 20,
            "{light_refused} of 2000 light sources refused"
        );
    }

    #[test]
    fn a_flood_of_one_off_sources_does_not_free_a_metered_source() {
        // A million distinct forged sources in 10 s through the default 65,536 buckets, while
        // one source floods at 10,000 datagrams a second.
        let mut l = RateLimiter::new(SourcePrefix::new(32, 64), 500, 5000, 65_536);
        let heavy = v4(203, 0, 113, 5);
        let (mut heavy_allowed, mut one_off_refused) = (0u64, 0u64);
        let mut x: u32 = 0x1234_5678;
        for second in 0..10u32 {
            for i in 0..100_000u32 {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                one_off_refused += u64::from(!l.allows(IpAddr::V4(Ipv4Addr::from(x)), second));
                if i % 10 == 0 {
                    heavy_allowed += u64::from(l.allows(heavy, second));
                }
            }
        }
        // The one-off sources that share a bucket with it take a few of its tokens.
        let share = 5000 + 9 * 500;
        assert!(
            (share * 99 / 100..=2 * share).contains(&heavy_allowed),
            "{heavy_allowed}"
        );
        // A one-off source is refused only when its two buckets are the flooder's: 1 in
        // 8,192 lines × 28 pairs, i.e. ~4.4 of the million.
        assert!(one_off_refused <= 20, "{one_off_refused}");
        // Overloaded (4,096 buckets, rate 5: ~49 one-off datagrams per bucket and second) the
        // flood drains buckets, but the heavy source still gets no more than twice its share.
        let mut small = RateLimiter::new(SourcePrefix::new(32, 64), 5, 20, 4096);
        let mut heavy_allowed = 0u64;
        for second in 0..10u32 {
            for i in 0..100_000u32 {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                small.allows(IpAddr::V4(Ipv4Addr::from(x)), second);
                if i % 100 == 0 {
                    heavy_allowed += u64::from(small.allows(heavy, second));
                }
            }
        }
        assert!(heavy_allowed <= 2 * (20 + 9 * 5), "{heavy_allowed}");
    }

    #[test]
    fn per_worker_share_is_rounded_up() {
        let c = LimitsConfig {
            requests_per_sec: 1000,
            burst: 10_000,
            ..LimitsConfig::default()
        };
        let l = RateLimiter::from_config(&c, 3).unwrap();
        assert_eq!(l.rate_and_burst(), (334, 3334));
        let off = LimitsConfig {
            enabled: false,
            ..c
        };
        assert!(RateLimiter::from_config(&off, 1).is_none());
    }
}
