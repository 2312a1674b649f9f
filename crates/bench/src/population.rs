//! The simulated population: which swarm each peer joins, how popular each swarm is, which
//! peers seed, and which event each announce carries.
//!
//! Everything here is deterministic for a given seed and allocation-free per request: info
//! hashes and peer ids are derived from indices by a mixing function instead of being stored.

use fjord_protocol::AnnounceEvent;
use rand::Rng;
use rand_distr::Distribution;
use rand_distr::weighted::WeightedAliasIndex;

/// How announces and scrapes pick swarms.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SwarmDistribution {
    /// Every swarm equally likely.
    Uniform,
    /// Swarm of rank `k` (1-based) has weight `1 / k^s`.
    Zipf(f64),
    /// The distribution aquatic_udp_load_test 0.9 uses: swarm `i` of `M` has weight
    /// `M / N + exp(6.5 - 500 i / M)` for `N` peers (a steep exponential head over a flat floor).
    Aquatic,
}

/// Samples swarm indices in `0..swarms`.
#[derive(Clone, Debug)]
pub struct SwarmSampler {
    swarms: u32,
    kind: SamplerKind,
}

#[derive(Clone, Debug)]
enum SamplerKind {
    Uniform,
    Zipf(rand_distr::Zipf<f64>),
    Alias(WeightedAliasIndex<f64>),
}

impl SwarmSampler {
    /// Builds a sampler over `swarms` swarms for a population of `peers` peers.
    pub fn new(dist: SwarmDistribution, swarms: u32, peers: u32) -> anyhow::Result<Self> {
        anyhow::ensure!(swarms > 0, "at least one swarm is needed");
        let kind = match dist {
            SwarmDistribution::Uniform => SamplerKind::Uniform,
            SwarmDistribution::Zipf(s) => {
                anyhow::ensure!(s >= 0.0 && s.is_finite(), "zipf exponent must be >= 0");
                SamplerKind::Zipf(
                    rand_distr::Zipf::new(f64::from(swarms), s)
                        .map_err(|e| anyhow::anyhow!("zipf: {e}"))?,
                )
            }
            SwarmDistribution::Aquatic => {
                SamplerKind::Alias(WeightedAliasIndex::new(aquatic_weights(swarms, peers))?)
            }
        };
        Ok(Self { swarms, kind })
    }

    /// Number of swarms sampled from.
    pub fn swarms(&self) -> u32 {
        self.swarms
    }

    /// One swarm index in `0..swarms`; index 0 is the most popular.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> u32 {
        match &self.kind {
            SamplerKind::Uniform => rng.random_range(0..self.swarms),
            SamplerKind::Zipf(z) => {
                // Zipf yields a rank in [1, n] as a float.
                let rank = z.sample(rng) as u64;
                (rank.saturating_sub(1) as u32).min(self.swarms - 1)
            }
            SamplerKind::Alias(a) => a.sample(rng) as u32,
        }
    }
}

/// The weights aquatic_udp_load_test gives its swarms (see [`SwarmDistribution::Aquatic`]).
pub fn aquatic_weights(swarms: u32, peers: u32) -> Vec<f64> {
    let m = f64::from(swarms);
    let floor = m / f64::from(peers.max(1));
    (0..swarms)
        .map(|i| floor + (6.5f64 - (500.0 * f64::from(i)) / m).exp())
        .collect()
}

/// Which events announces carry.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum EventModel {
    /// Each peer lives a session: its first announce is `started`; later announces are
    /// regular, except that with probability `p_complete` a leecher sends `completed` and
    /// becomes a seeder, and with probability `p_stop` the peer sends `stopped` and leaves.
    /// A stopped peer rejoins with `started`, seeding with the probability that keeps the
    /// seeder fraction at the configured ratio ([`rejoin_seeder_probability`]).
    Lifecycle {
        /// Chance per regular announce that a leecher completes.
        p_complete: f64,
        /// Chance per regular announce that a peer stops.
        p_stop: f64,
    },
    /// aquatic_udp_load_test's choice: every announce is `completed` with `left = 0` with
    /// probability `seeder_ratio`, otherwise `started` with `left = 50`.
    Aquatic,
}

/// One simulated peer (12 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerState {
    /// Swarm this peer announces in.
    pub swarm: u32,
    /// Port it announces.
    pub port: u16,
    /// Whether it is currently a seeder (`left == 0`).
    pub seeder: bool,
    /// Whether it has started and not stopped.
    pub active: bool,
    /// Whether it has announced at least once.
    pub announced: bool,
}

impl PeerState {
    /// A new, not yet started peer.
    pub fn new<R: Rng + ?Sized>(rng: &mut R, sampler: &SwarmSampler, seeder_ratio: f64) -> Self {
        Self {
            swarm: sampler.sample(rng),
            port: rng.random_range(1024..=u16::MAX),
            seeder: rng.random_bool(seeder_ratio),
            active: false,
            announced: false,
        }
    }

    /// The event and `left` value of this peer's next announce, advancing its state.
    pub fn next_announce<R: Rng + ?Sized>(
        &mut self,
        rng: &mut R,
        model: EventModel,
        seeder_ratio: f64,
    ) -> (AnnounceEvent, i64) {
        self.announced = true;
        match model {
            EventModel::Aquatic => {
                if rng.random_bool(seeder_ratio) {
                    self.seeder = true;
                    (AnnounceEvent::Completed, 0)
                } else {
                    self.seeder = false;
                    (AnnounceEvent::Started, 50)
                }
            }
            EventModel::Lifecycle { p_complete, p_stop } => {
                let event = if !self.active {
                    self.active = true;
                    AnnounceEvent::Started
                } else {
                    let r: f64 = rng.random();
                    if r < p_stop {
                        self.active = false;
                        // Whether it seeds when it rejoins: chosen to keep the expected seeder
                        // fraction at the configured ratio (see `rejoin_seeder_probability`).
                        let seeder = self.seeder;
                        self.seeder = rng.random_bool(rejoin_seeder_probability(
                            seeder_ratio,
                            p_complete,
                            p_stop,
                        ));
                        return (
                            AnnounceEvent::Stopped,
                            if seeder { 0 } else { LEFT_LEECHER },
                        );
                    } else if !self.seeder && r < p_stop + p_complete {
                        self.seeder = true;
                        AnnounceEvent::Completed
                    } else {
                        AnnounceEvent::None
                    }
                };
                (event, if self.seeder { 0 } else { LEFT_LEECHER })
            }
        }
    }
}

/// The probability that a peer rejoining after `stopped` seeds, chosen so that the seeder
/// fraction `ratio` is stationary in the lifecycle model.
///
/// Per announce, a leecher becomes a seeder with probability `p_complete`, and any peer stops
/// with probability `p_stop` and rejoins seeding with probability `q`. The seeder fraction `s`
/// is stationary when `(1 - s) p_complete = s p_stop - q p_stop`, i.e. for
/// `q = (s (p_complete + p_stop) - p_complete) / p_stop`. When completions alone exceed the
/// ratio (`q < 0`), rejoining peers all leech and the fraction settles at
/// `p_complete / (p_complete + p_stop)` instead.
pub fn rejoin_seeder_probability(ratio: f64, p_complete: f64, p_stop: f64) -> f64 {
    if p_stop <= 0.0 {
        return ratio;
    }
    ((ratio * (p_complete + p_stop) - p_complete) / p_stop).clamp(0.0, 1.0)
}

/// `left` announced by leechers in the lifecycle model.
pub const LEFT_LEECHER: i64 = 1 << 30;

/// The peers of one socket: global peer indices `first, first + stride, first + 2 stride, …`
/// below `total`.
pub fn peers_for_socket<R: Rng + ?Sized>(
    rng: &mut R,
    first: u32,
    stride: u32,
    total: u32,
    sampler: &SwarmSampler,
    seeder_ratio: f64,
) -> Vec<PeerState> {
    let count = if first >= total {
        0
    } else {
        (total - first).div_ceil(stride)
    };
    (0..count)
        .map(|_| PeerState::new(rng, sampler, seeder_ratio))
        .collect()
}

/// SplitMix64 finalizer: a cheap bijective mix.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The info hash of swarm `index` (pseudo-random, stable for a seed).
pub fn info_hash(seed: u64, index: u32) -> [u8; 20] {
    let a = mix64(seed ^ (u64::from(index) << 1 | 1));
    let b = mix64(a);
    let c = mix64(b);
    let mut out = [0u8; 20];
    out[..8].copy_from_slice(&a.to_be_bytes());
    out[8..16].copy_from_slice(&b.to_be_bytes());
    out[16..].copy_from_slice(&c.to_be_bytes()[..4]);
    out
}

/// Client prefixes the simulated peers announce with, and how many of every 100 peers use
/// each: an illustrative mix of the clients seen on public trackers (qBittorrent first, then
/// µTorrent, Transmission, libtorrent-based clients, …; not a measurement), and fjord-bench's
/// own `-FB0100-` for software a tracker does not know. Trackers that count clients (fjord's
/// `fjord_client_announces_total`) then do the work real traffic makes them do.
pub const CLIENT_MIX: [(&[u8; 8], u64); 16] = [
    (b"-qB4630-", 30),
    (b"-qB5010-", 10),
    (b"-UT355W-", 12),
    (b"-TR3000-", 6),
    (b"-TR4060-", 5),
    (b"-LT2080-", 5),
    (b"-BT7a5S-", 5),
    (b"-DE211s-", 4),
    (b"-BC0206-", 3),
    (b"-lt0D80-", 3),
    (b"-AZ5770-", 2),
    (b"-BI3600-", 2),
    (b"-WW0109-", 2),
    (b"TIX0289-", 2),
    (b"A2-1-35-", 3),
    (b"-FB0100-", 6),
];

/// The peer id of global peer `index`: a client prefix from [`CLIENT_MIX`] (eight bytes,
/// stable per peer) and 12 bytes derived from the index.
pub fn peer_id(seed: u64, index: u32) -> [u8; 20] {
    let a = mix64(seed.rotate_left(17) ^ u64::from(index));
    let b = mix64(a);
    let mut pick = b % 100;
    let mut prefix = CLIENT_MIX[0].0;
    for (p, share) in CLIENT_MIX {
        if pick < share {
            prefix = p;
            break;
        }
        pick -= share;
    }
    let mut out = [0u8; 20];
    out[..8].copy_from_slice(prefix);
    out[8..16].copy_from_slice(&a.to_be_bytes());
    out[16..].copy_from_slice(&b.to_be_bytes()[..4]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    fn rng() -> SmallRng {
        SmallRng::seed_from_u64(7)
    }

    #[test]
    fn every_distribution_samples_within_bounds() {
        let mut r = rng();
        for dist in [
            SwarmDistribution::Uniform,
            SwarmDistribution::Zipf(0.0),
            SwarmDistribution::Zipf(1.0),
            SwarmDistribution::Zipf(3.0),
            SwarmDistribution::Aquatic,
        ] {
            for swarms in [1u32, 2, 17, 1000] {
                let s = SwarmSampler::new(dist, swarms, 5000).unwrap();
                let mut seen_last = false;
                for _ in 0..20_000 {
                    let i = s.sample(&mut r);
                    assert!(i < swarms, "{dist:?}: {i} out of 0..{swarms}");
                    seen_last |= i == swarms - 1;
                }
                // The aquatic curve and steep Zipf put almost nothing on the tail by design.
                if swarms <= 17
                    && !matches!(
                        dist,
                        SwarmDistribution::Zipf(3.0) | SwarmDistribution::Aquatic
                    )
                {
                    assert!(
                        seen_last,
                        "{dist:?} never reached the last of {swarms} swarms"
                    );
                }
            }
        }
    }

    #[test]
    fn zipf_head_matches_theory() {
        // P(rank 1) = 1 / H(n, s); for n = 1000, s = 1: H = 7.4855, p = 0.13359.
        let n = 1000u32;
        let h: f64 = (1..=n).map(|k| 1.0 / f64::from(k)).sum();
        let s = SwarmSampler::new(SwarmDistribution::Zipf(1.0), n, 1).unwrap();
        let mut r = rng();
        let draws = 200_000;
        let mut head = 0u32;
        let mut second = 0u32;
        for _ in 0..draws {
            match s.sample(&mut r) {
                0 => head += 1,
                1 => second += 1,
                _ => {}
            }
        }
        let p0 = f64::from(head) / f64::from(draws);
        let p1 = f64::from(second) / f64::from(draws);
        assert!(
            (p0 - 1.0 / h).abs() < 0.005,
            "p0 = {p0}, expected {}",
            1.0 / h
        );
        assert!(
            (p1 - 0.5 / h).abs() < 0.005,
            "p1 = {p1}, expected {}",
            0.5 / h
        );
    }

    #[test]
    fn zipf_exponent_zero_is_flat() {
        let s = SwarmSampler::new(SwarmDistribution::Zipf(0.0), 4, 1).unwrap();
        let mut r = rng();
        let mut counts = [0u32; 4];
        for _ in 0..40_000 {
            counts[s.sample(&mut r) as usize] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn aquatic_weights_follow_the_published_formula() {
        let w = aquatic_weights(1_000_000, 2_000_000);
        assert_eq!(w.len(), 1_000_000);
        assert!((w[0] - (0.5 + 6.5f64.exp())).abs() < 1e-9);
        // Far down the tail only the floor M / N remains.
        assert!((w[999_999] - 0.5).abs() < 1e-9);
        assert!(w.windows(2).all(|p| p[0] >= p[1]));
    }

    #[test]
    fn seeder_ratio_is_respected() {
        let s = SwarmSampler::new(SwarmDistribution::Uniform, 100, 1).unwrap();
        let mut r = rng();
        for ratio in [0.0, 0.3, 0.75, 1.0] {
            let peers = peers_for_socket(&mut r, 0, 1, 100_000, &s, ratio);
            let seeders = peers.iter().filter(|p| p.seeder).count() as f64;
            let got = seeders / peers.len() as f64;
            assert!((got - ratio).abs() < 0.01, "ratio {ratio}: got {got}");
        }
    }

    #[test]
    fn sockets_partition_the_peers() {
        let s = SwarmSampler::new(SwarmDistribution::Uniform, 10, 1).unwrap();
        let mut r = rng();
        let total: usize = (0..7)
            .map(|first| peers_for_socket(&mut r, first, 7, 1000, &s, 0.5).len())
            .sum();
        assert_eq!(total, 1000);
        assert!(peers_for_socket(&mut r, 20, 30, 10, &s, 0.5).is_empty());
    }

    #[test]
    fn lifecycle_starts_runs_and_stops() {
        let s = SwarmSampler::new(SwarmDistribution::Uniform, 10, 1).unwrap();
        let mut r = rng();
        let model = EventModel::Lifecycle {
            p_complete: 0.0,
            p_stop: 0.0,
        };
        let mut p = PeerState::new(&mut r, &s, 0.0);
        assert_eq!(
            p.next_announce(&mut r, model, 0.0),
            (AnnounceEvent::Started, LEFT_LEECHER)
        );
        assert_eq!(
            p.next_announce(&mut r, model, 0.0),
            (AnnounceEvent::None, LEFT_LEECHER)
        );
        let complete = EventModel::Lifecycle {
            p_complete: 1.0,
            p_stop: 0.0,
        };
        assert_eq!(
            p.next_announce(&mut r, complete, 0.0),
            (AnnounceEvent::Completed, 0)
        );
        assert_eq!(
            p.next_announce(&mut r, complete, 0.0),
            (AnnounceEvent::None, 0)
        );
        let stop = EventModel::Lifecycle {
            p_complete: 0.0,
            p_stop: 1.0,
        };
        assert_eq!(p.next_announce(&mut r, stop, 0.0).0, AnnounceEvent::Stopped);
        assert!(!p.active);
        // Rejoins as a leecher (seeder ratio 0).
        assert_eq!(
            p.next_announce(&mut r, stop, 0.0),
            (AnnounceEvent::Started, LEFT_LEECHER)
        );
    }

    #[test]
    fn lifecycle_keeps_the_seeder_ratio() {
        let s = SwarmSampler::new(SwarmDistribution::Uniform, 10, 1).unwrap();
        let mut r = rng();
        for (ratio, p_complete, p_stop) in [(0.5, 0.01, 0.01), (0.5, 0.01, 0.02), (0.2, 0.01, 0.05)]
        {
            let model = EventModel::Lifecycle { p_complete, p_stop };
            let mut peers = peers_for_socket(&mut r, 0, 1, 2_000, &s, ratio);
            // Long enough for completions and stops to have reshuffled everyone.
            for _ in 0..600_000 {
                let i = r.random_range(0..peers.len());
                peers[i].next_announce(&mut r, model, ratio);
            }
            let got = peers.iter().filter(|p| p.seeder).count() as f64 / peers.len() as f64;
            assert!(
                (got - ratio).abs() < 0.04,
                "{ratio} {p_complete} {p_stop}: {got}"
            );
        }
        // Completions alone exceed the ratio: the fraction settles at pc / (pc + ps).
        assert_eq!(rejoin_seeder_probability(0.1, 0.02, 0.01), 0.0);
        assert_eq!(rejoin_seeder_probability(0.3, 0.0, 0.0), 0.3);
        assert!((rejoin_seeder_probability(0.5, 0.01, 0.02) - 0.25).abs() < 1e-12);
    }

    #[test]
    fn aquatic_sampler_matches_its_weights() {
        // M = 1000 swarms, N = 2000 peers: w_i = 0.5 + exp(6.5 - i / 2).
        let w = aquatic_weights(1000, 2000);
        let total: f64 = w.iter().sum();
        let s = SwarmSampler::new(SwarmDistribution::Aquatic, 1000, 2000).unwrap();
        let mut r = rng();
        let draws = 200_000;
        let mut counts = [0u32; 3];
        for _ in 0..draws {
            let i = s.sample(&mut r) as usize;
            if i < 3 {
                counts[i] += 1;
            }
        }
        for (i, c) in counts.iter().enumerate() {
            let got = f64::from(*c) / f64::from(draws);
            let want = w[i] / total;
            assert!((got - want).abs() < 0.005, "swarm {i}: {got} vs {want}");
        }
    }

    #[test]
    fn aquatic_events_follow_seeder_probability() {
        let s = SwarmSampler::new(SwarmDistribution::Uniform, 10, 1).unwrap();
        let mut r = rng();
        let mut p = PeerState::new(&mut r, &s, 0.5);
        let mut completed = 0;
        for _ in 0..10_000 {
            match p.next_announce(&mut r, EventModel::Aquatic, 0.75) {
                (AnnounceEvent::Completed, 0) => completed += 1,
                (AnnounceEvent::Started, 50) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!((7_200..7_800).contains(&completed), "{completed}");
    }

    #[test]
    fn derived_ids_are_distinct_and_stable() {
        assert_eq!(info_hash(1, 5), info_hash(1, 5));
        assert_ne!(info_hash(1, 5), info_hash(1, 6));
        assert_ne!(info_hash(1, 5), info_hash(2, 5));
        assert_ne!(peer_id(1, 5), peer_id(1, 6));
        assert_eq!(CLIENT_MIX.iter().map(|(_, n)| n).sum::<u64>(), 100);
        let mut fb = 0;
        for i in 0..10_000 {
            let id = peer_id(1, i);
            assert!(CLIENT_MIX.iter().any(|(p, _)| id.starts_with(&p[..])));
            fb += u32::from(id.starts_with(b"-FB0100-"));
        }
        assert!((400..800).contains(&fb), "{fb} of 10,000 are -FB0100-");
    }
}
