//! Peer store: announce and scrape ns/op, fjord-store against a locked baseline.
//!
//! `cargo bench -p fjord-benches --bench store -- --warm-up-time 1 --measurement-time 3`
//!
//! Both stores are pre-loaded with the same 1,000,000 IPv4 peers over 100,000 swarms whose
//! sizes are Zipf-skewed (size ∝ 1/rank, at least 1). Each operation picks a uniformly random
//! stored peer, so swarm popularity follows swarm size (the big swarms are hot, as in real
//! traffic): `announce` is a refresh of that peer (event none, num_want 50, the reply's peers
//! copied into a reused Vec); `scrape` asks for that peer's swarm. With 2 threads the work is
//! split and the figure is wall time / total operations (inverse throughput), so it is
//! directly comparable with the 1-thread figure.
//!
//! The baseline is what aquatic does: `parking_lot::RwLock<HashMap<[u8; 20], Swarm>>` in 128
//! shards keyed with ahash, each swarm an index map (Vec of peers + ahash HashMap from address
//! to position) so random runs of peers can be handed out; announce takes the shard's write
//! lock, scrape its read lock.

use std::collections::HashMap;
use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use fjord_store::{AnnounceEvent, PeerStore, StoreConfig, SwarmCounts};
use parking_lot::RwLock;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SWARMS: u64 = 100_000;
const PEERS: u64 = 1_000_000;
const NOW: u32 = 10_000;
const NUM_WANT: i32 = 50;

// ------------------------------------------------------------------ baseline

struct BPeer {
    seeder: bool,
    valid_until: u32,
}

#[derive(Default)]
struct BSwarm {
    peers: Vec<(SocketAddrV4, BPeer)>,
    index: HashMap<SocketAddrV4, usize, ahash::RandomState>,
    seeders: u32,
    leechers: u32,
    completed: u32,
}

struct Baseline {
    shards: Vec<RwLock<HashMap<[u8; 20], BSwarm, ahash::RandomState>>>,
    hasher: ahash::RandomState,
}

impl Baseline {
    fn new() -> Self {
        Baseline {
            shards: (0..128).map(|_| RwLock::new(HashMap::default())).collect(),
            hasher: ahash::RandomState::new(),
        }
    }
    fn shard(&self, ih: &[u8; 20]) -> &RwLock<HashMap<[u8; 20], BSwarm, ahash::RandomState>> {
        &self.shards[(self.hasher.hash_one(ih) as usize) % self.shards.len()]
    }
    #[allow(clippy::too_many_arguments)]
    fn announce(
        &self,
        ih: &[u8; 20],
        peer: SocketAddrV4,
        left: i64,
        num_want: usize,
        now: u32,
        random: u64,
        out: &mut Vec<SocketAddrV4>,
    ) -> (u32, u32) {
        out.clear();
        let seeder = left == 0;
        let mut map = self.shard(ih).write();
        let sw = map.entry(*ih).or_default();
        match sw.index.get(&peer) {
            Some(&i) => {
                let p = &mut sw.peers[i].1;
                if p.seeder != seeder {
                    if seeder {
                        sw.seeders += 1;
                        sw.leechers -= 1;
                    } else {
                        sw.seeders -= 1;
                        sw.leechers += 1;
                    }
                }
                *p = BPeer {
                    seeder,
                    valid_until: now + 2_700,
                };
            }
            None => {
                sw.index.insert(peer, sw.peers.len());
                sw.peers.push((
                    peer,
                    BPeer {
                        seeder,
                        valid_until: now + 2_700,
                    },
                ));
                if seeder {
                    sw.seeders += 1
                } else {
                    sw.leechers += 1
                }
            }
        }
        let n = sw.peers.len();
        let limit = n.min(num_want * 16 + 64);
        let start = (((random >> 32) * n as u64) >> 32) as usize;
        for k in 0..limit {
            let (a, p) = &sw.peers[(start + k) % n];
            if *a != peer && p.valid_until > now && !(seeder && p.seeder) {
                out.push(*a);
                if out.len() >= num_want {
                    break;
                }
            }
        }
        (sw.seeders, sw.leechers)
    }
    fn scrape(&self, ih: &[u8; 20]) -> SwarmCounts {
        let map = self.shard(ih).read();
        map.get(ih)
            .map_or_else(SwarmCounts::default, |s| SwarmCounts {
                seeders: s.seeders,
                completed: s.completed,
                leechers: s.leechers,
            })
    }
}

// ------------------------------------------------------------------ workload

fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

struct Workload {
    hashes: Vec<[u8; 20]>,
    /// (swarm rank, peer index within the swarm, random)
    ops: Vec<(u32, u32, u64)>,
}

fn peer(r: u32, j: u32) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::from(mix(u64::from(r)) as u32 ^ (j >> 12)),
        1024 + (j & 0xFFF) as u16,
    )
}
fn left(r: u32, j: u32) -> i64 {
    if mix((u64::from(r) << 32) | u64::from(j)).is_multiple_of(3) {
        0
    } else {
        1_000
    }
}

impl Workload {
    fn new() -> Self {
        let total = |c: f64| {
            (1..=SWARMS)
                .map(|r| ((c / r as f64).round() as u64).max(1))
                .sum::<u64>()
        };
        let (mut lo, mut hi) = (0.0f64, PEERS as f64);
        for _ in 0..60 {
            let mid = (lo + hi) / 2.0;
            if total(mid) < PEERS {
                lo = mid
            } else {
                hi = mid
            }
        }
        let sizes: Vec<u32> = (1..=SWARMS)
            .map(|r| ((hi / r as f64).round() as u32).max(1))
            .collect();
        let mut rng = StdRng::seed_from_u64(3);
        let hashes = (0..SWARMS).map(|_| rng.random()).collect();
        // All stored peers as (rank, j); operations sample them uniformly.
        let mut all = Vec::with_capacity(PEERS as usize + 1000);
        for (r, &s) in sizes.iter().enumerate() {
            for j in 0..s {
                all.push((r as u32, j));
            }
        }
        let ops = (0..1 << 20).map(|_| {
            let (r, j) = all[rng.random_range(0..all.len())];
            (r, j, rng.random())
        });
        let mut w = Workload {
            hashes,
            ops: ops.collect(),
        };
        // Load order: every stored peer once (ops[..] reuse them).
        w.ops.extend(all.iter().map(|&(r, j)| (r, j, u64::MAX)));
        w
    }
    fn sample_ops(&self) -> &[(u32, u32, u64)] {
        &self.ops[..1 << 20]
    }
    fn load_ops(&self) -> &[(u32, u32, u64)] {
        &self.ops[1 << 20..]
    }
}

/// Runs `iters` operations split over `threads` threads; returns the wall time.
fn run_split(iters: u64, threads: usize, op: &(dyn Fn(usize, u64) + Sync)) -> Duration {
    let barrier = Barrier::new(threads);
    let times: Vec<Duration> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let barrier = &barrier;
                s.spawn(move || {
                    let n = iters / threads as u64 + u64::from((t as u64) < iters % threads as u64);
                    barrier.wait();
                    let start = Instant::now();
                    for i in 0..n {
                        op(t, i);
                    }
                    start.elapsed()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    times.into_iter().max().unwrap()
}

fn bench_store(c: &mut Criterion) {
    let w = Workload::new();
    let fjord = PeerStore::new(StoreConfig::default());
    let base = Baseline::new();
    let mut out = Vec::new();
    for &(r, j, _) in w.load_ops() {
        let ih = &w.hashes[r as usize];
        fjord.announce(
            ih,
            peer(r, j),
            left(r, j),
            AnnounceEvent::Started,
            0,
            NOW,
            0,
            &mut out,
        );
        base.announce(ih, peer(r, j), left(r, j), 0, NOW, 0, &mut out);
    }
    assert_eq!(
        fjord.stats().v4.seeders + fjord.stats().v4.leechers,
        w.load_ops().len() as u64
    );
    let ops = w.sample_ops();
    let mask = ops.len() - 1;
    let offset = |t: usize, i: u64| (t * 524_287 + i as usize) & mask;

    let mut g = c.benchmark_group("store/announce");
    for threads in [1, 2] {
        g.bench_function(BenchmarkId::new("fjord", threads), |b| {
            b.iter_custom(|iters| {
                run_split(iters, threads, &|t, i| {
                    thread_local!(static OUT: std::cell::RefCell<Vec<SocketAddrV4>> = const { std::cell::RefCell::new(Vec::new()) });
                    let (r, j, rnd) = ops[offset(t, i)];
                    OUT.with_borrow_mut(|out| {
                        black_box(fjord.announce(&w.hashes[r as usize], peer(r, j), left(r, j), AnnounceEvent::None, NUM_WANT, NOW, rnd, out));
                    });
                })
            })
        });
        g.bench_function(BenchmarkId::new("rwlock-baseline", threads), |b| {
            b.iter_custom(|iters| {
                run_split(iters, threads, &|t, i| {
                    thread_local!(static OUT: std::cell::RefCell<Vec<SocketAddrV4>> = const { std::cell::RefCell::new(Vec::new()) });
                    let (r, j, rnd) = ops[offset(t, i)];
                    OUT.with_borrow_mut(|out| {
                        black_box(base.announce(&w.hashes[r as usize], peer(r, j), left(r, j), NUM_WANT as usize, NOW, rnd, out));
                    });
                })
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("store/scrape");
    for threads in [1, 2] {
        g.bench_function(BenchmarkId::new("fjord", threads), |b| {
            b.iter_custom(|iters| {
                run_split(iters, threads, &|t, i| {
                    let (r, _, _) = ops[offset(t, i)];
                    black_box(fjord.scrape_one::<SocketAddrV4>(&w.hashes[r as usize]));
                })
            })
        });
        g.bench_function(BenchmarkId::new("rwlock-baseline", threads), |b| {
            b.iter_custom(|iters| {
                run_split(iters, threads, &|t, i| {
                    let (r, _, _) = ops[offset(t, i)];
                    black_box(base.scrape(&w.hashes[r as usize]));
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_store);
criterion_main!(benches);
