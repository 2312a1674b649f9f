//! Long uptime on a fake clock (issue 10): weeks of simulated time, so the 13-bit stamps wrap
//! dozens of times, with peers joining, refreshing, leaving, going silent and coming back, for
//! every peer timeout from the smallest to the largest accepted and the slowest clean
//! settings. Checked against a model at every step:
//! * no stale peer is ever handed out (a peer returned was heard from within the timeout,
//!   up to the 8-second stamp granularity);
//! * no peer is lost (one heard from well within the timeout is stored);
//! * every departed peer is gone within timeout + 2 × (cycle + call interval) + 8 s, the
//!   bound the store guarantees (two visits of a swarm are at most two cycles apart); the
//!   largest delay seen is printed (about one cycle: the walk advances evenly);
//! * per-swarm and global counts equal the stored peers.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};

use fjord_store::{AnnounceEvent, MAX_PEER_TIMEOUT_SECS, PeerStore, StoreConfig};

const SWARMS: u8 = 24;
const PEERS: u32 = 12;

fn peer(i: u32) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(0x0a01_0000 + i), 6881)
}

/// splitmix64: a reproducible stream of decisions.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One simulated deployment: `days` of time in steps of `interval` seconds (one clean call per
/// step, with a budget of one swarm, so the cycle bound alone keeps expiry on time).
fn simulate(timeout: u32, cycle: u32, interval: u32, days: u32, seed: u64) -> u32 {
    let config = StoreConfig {
        peer_timeout_secs: timeout,
        clean_cycle_secs: cycle,
        ..StoreConfig::default()
    };
    let cycle = cycle.min(config.max_clean_cycle_secs());
    let s = PeerStore::new(config);
    let mut rng = Rng(seed);
    // (swarm, peer) -> last announce; absent = stopped or never announced.
    let mut heard: HashMap<(u8, u32), u32> = HashMap::new();
    // Peers that announce regularly (the others are silent until they come back).
    let mut active = vec![false; (SWARMS as usize) * PEERS as usize];
    let mut now: u32 = 5_000;
    let end = now + days * 86_400;
    let mut out = Vec::new();
    let (mut handed_out, mut expired_seen) = (0u64, 0u64);
    // The longest a departed peer stayed stored past its timeout.
    let mut latest = 0u32;
    let bound = timeout + 8 + 2 * (cycle + interval);
    while now < end {
        now += interval;
        for _ in 0..6 {
            let sw = rng.below(u64::from(SWARMS)) as u8;
            let p = rng.below(u64::from(PEERS)) as u32;
            let k = sw as usize * PEERS as usize + p as usize;
            let ih = [sw + 1; 20];
            match rng.below(10) {
                0 => {
                    s.announce(&ih, peer(p), 1, AnnounceEvent::Stopped, 0, now, 0, &mut out);
                    heard.remove(&(sw, p));
                    active[k] = false;
                }
                1 => active[k] = false, // goes silent (crashes, loses its network)
                _ => {
                    active[k] = true;
                    let o = s.announce(
                        &ih,
                        peer(p),
                        1,
                        AnnounceEvent::None,
                        50,
                        now,
                        rng.next(),
                        &mut out,
                    );
                    heard.insert((sw, p), now);
                    handed_out += out.len() as u64;
                    for q in &out {
                        let j = u32::from(*q.ip()) - 0x0a01_0000;
                        let t = heard.get(&(sw, j)).copied();
                        assert!(
                            t.is_some_and(|t| now - t < timeout + 8),
                            "timeout {timeout}: stale peer {q} handed out at {now} (last heard {t:?})"
                        );
                    }
                    assert!(o.leechers >= 1);
                }
            }
        }
        // Active peers re-announce before their timeout (as real clients do).
        for (k, a) in active.iter().enumerate() {
            let (sw, p) = ((k / PEERS as usize) as u8, (k % PEERS as usize) as u32);
            if *a
                && heard
                    .get(&(sw, p))
                    .is_some_and(|&t| now - t + interval >= timeout / 2)
            {
                s.announce(
                    &[sw + 1; 20],
                    peer(p),
                    1,
                    AnnounceEvent::None,
                    0,
                    now,
                    0,
                    &mut out,
                );
                heard.insert((sw, p), now);
            }
        }
        s.clean(now, 1);
        // The store against the model, swarm by swarm.
        for sw in 0..SWARMS {
            let stored = s
                .peers_of::<SocketAddrV4>(&[sw + 1; 20])
                .unwrap_or_default();
            for p in 0..PEERS {
                let t = heard.get(&(sw, p)).copied();
                let present = stored.iter().any(|(q, _)| *q == peer(p));
                if let Some(t) = t
                    && now - t + 8 <= timeout
                {
                    assert!(
                        present,
                        "timeout {timeout}: fresh peer {p} of swarm {sw} lost"
                    );
                }
                if let Some(t) = t
                    && present
                    && now - t > timeout
                {
                    latest = latest.max(now - t - timeout);
                }
                if t.is_none_or(|t| now - t > bound) {
                    assert!(
                        !present,
                        "timeout {timeout}, cycle {cycle}: departed peer {p} of swarm {sw} still stored at {now} (last heard {t:?})"
                    );
                }
                expired_seen += u64::from(t.is_some_and(|t| now - t > timeout) && !present);
            }
        }
        let (_, peers, counted) = s.audit::<SocketAddrV4>();
        assert_eq!(peers as i64, counted);
        assert_eq!(s.stats().v4.seeders + s.stats().v4.leechers, peers as u64);
    }
    assert!(
        handed_out > 0 && expired_seen > 0,
        "the simulation exercised nothing"
    );
    assert!(s.clean_stats().cycles > 0);
    latest
}

#[test]
fn weeks_of_uptime_at_every_timeout() {
    // Debug builds (cargo test --workspace) simulate less; release runs the full span.
    let days = if cfg!(debug_assertions) { 6 } else { 28 };
    let timeouts = [
        8,
        60,
        300,
        1_800,
        2_700,
        7_200,
        16_384,
        24_000,
        MAX_PEER_TIMEOUT_SECS,
    ];
    for (i, &timeout) in timeouts.iter().enumerate() {
        // Half of them with the slowest cycle accepted (clamped to the bound), the rest with
        // a short one; calls every 5 minutes, the slowest interval the server accepts.
        let cycle = if i % 2 == 0 { u32::MAX } else { 600 };
        let late = simulate(timeout, cycle, 300, days, 0x5eed ^ i as u64);
        let cycle = cycle.min(
            StoreConfig {
                peer_timeout_secs: timeout,
                ..StoreConfig::default()
            }
            .max_clean_cycle_secs(),
        );
        eprintln!(
            "timeout {timeout} s, cycle {cycle} s: departed peers stayed at most {late} s past the timeout"
        );
    }
}
