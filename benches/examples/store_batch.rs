//! What the request pipeline's prefetching buys in the store: announces to random swarms of a
//! store too large for the CPU caches, in batches of 32, one after the other
//! (`PeerStore::announce`) against staged under one pin (`Pinned::prefetch_map`, then
//! `prefetch_block`, then `announce`), and staged with the third stage too
//! (`Pinned::prefetch_peers`: the lines a big swarm's upsert and selection read first),
//! alternating in rounds; ns per announce for each. With 2 peers per swarm every block is
//! small and the third stage has nothing to prefetch; try `100000 10000000` (100 per swarm).
//!
//! `cargo run -p fjord-benches --release --example store_batch -- [swarms] [peers] [rounds]`
//! (defaults: 1,000,000 swarms, 2,000,000 peers, as aquatic_udp_load_test's population; 10
//! rounds of 2,000,000 announces each way). Every announce refreshes a stored peer of a
//! uniformly random swarm (num_want 30), as the load generator's announce-heavy mix does;
//! three peers in four are seeders.

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Instant;

use fjord_store::{AnnounceEvent, PeerStore, StoreConfig};

const BATCH: usize = 32;
const NOW: u32 = 1_000;

fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn info_hash(s: u64) -> [u8; 20] {
    let mut h = [0u8; 20];
    for (k, c) in h.chunks_mut(8).enumerate() {
        c.copy_from_slice(&mix(s * 3 + k as u64).to_le_bytes()[..c.len()]);
    }
    h
}

/// Three peers in four are seeders (`left` 0), as in aquatic_udp_load_test's population: a
/// seeder's selection skips the other seeders, so it walks about four slots per peer it takes.
fn left(j: u64) -> i64 {
    i64::from(j.is_multiple_of(4))
}

fn peer(s: u64, j: u64) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::from(mix(s ^ (j << 40)) as u32),
        1024 + (j % 60_000) as u16,
    )
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("number"))
        .collect();
    let swarms = args.first().copied().unwrap_or(1_000_000);
    let peers = args.get(1).copied().unwrap_or(2_000_000);
    let rounds = args.get(2).copied().unwrap_or(10);
    let per_swarm = (peers / swarms).max(1);
    let store = PeerStore::new(StoreConfig::default());
    let mut out = Vec::new();
    for s in 0..swarms {
        for j in 0..per_swarm {
            store.announce(
                &info_hash(s),
                peer(s, j),
                left(j),
                AnnounceEvent::Started,
                0,
                NOW,
                0,
                &mut out,
            );
        }
    }
    let hashes: Vec<[u8; 20]> = (0..swarms).map(info_hash).collect();
    let n = 2_000_000usize;
    let ops: Vec<(u64, u64)> = (0..n as u64)
        .map(|i| (mix(i ^ 0x55) % swarms, mix(i ^ 0xaa) % per_swarm))
        .collect();
    println!(
        "{swarms} swarms, {} peers; {n} announces per run in batches of {BATCH}",
        swarms * per_swarm
    );
    let (mut seq_total, mut staged_total, mut staged3_total) = (0.0, 0.0, 0.0);
    for round in 0..rounds {
        let t = Instant::now();
        for &(s, j) in &ops {
            black_box(store.announce(
                &hashes[s as usize],
                peer(s, j),
                left(j),
                AnnounceEvent::None,
                30,
                NOW,
                s,
                &mut out,
            ));
        }
        let seq = t.elapsed().as_nanos() as f64 / n as f64;
        let mut keys = Vec::with_capacity(BATCH);
        let mut staged_run = |peers_stage: bool| {
            let t = Instant::now();
            for batch in ops.chunks(BATCH) {
                let pinned = store.pin();
                keys.clear();
                keys.extend(
                    batch
                        .iter()
                        .map(|&(s, _)| pinned.prefetch_map::<SocketAddrV4>(&hashes[s as usize])),
                );
                for key in &keys {
                    pinned.prefetch_block::<SocketAddrV4>(key);
                }
                if peers_stage {
                    for (key, &(s, j)) in keys.iter().zip(batch) {
                        pinned.prefetch_peers(key, &peer(s, j), s);
                    }
                }
                for (key, &(s, j)) in keys.iter().zip(batch) {
                    out.clear();
                    black_box(pinned.announce(
                        key,
                        peer(s, j),
                        left(j),
                        AnnounceEvent::None,
                        30,
                        NOW,
                        s,
                        &mut out,
                    ));
                }
            }
            t.elapsed().as_nanos() as f64 / n as f64
        };
        // Which staged variant goes first alternates by round (the second runs on caches the
        // first warmed).
        let (staged, staged3) = if round % 2 == 0 {
            let s = staged_run(false);
            (s, staged_run(true))
        } else {
            let s3 = staged_run(true);
            (staged_run(false), s3)
        };
        // The pin alone: one pin per batch, no prefetch.
        let t = Instant::now();
        for batch in ops.chunks(BATCH) {
            let pinned = store.pin();
            for &(s, j) in batch {
                let key = store.swarm_key(&hashes[s as usize]);
                out.clear();
                black_box(pinned.announce(
                    &key,
                    peer(s, j),
                    left(j),
                    AnnounceEvent::None,
                    30,
                    NOW,
                    s,
                    &mut out,
                ));
            }
        }
        let pinned_only = t.elapsed().as_nanos() as f64 / n as f64;
        println!(
            "round {round}: one by one {seq:.1} ns, one pin per batch {pinned_only:.1} ns, staged {staged:.1} ns: {:.2}x, three stages {staged3:.1} ns: {:.2}x",
            seq / staged,
            seq / staged3
        );
        seq_total += seq;
        staged_total += staged;
        staged3_total += staged3;
    }
    println!(
        "mean: one by one {:.1} ns, staged {:.1} ns: {:.2}x, three stages {:.1} ns: {:.2}x",
        seq_total / rounds as f64,
        staged_total / rounds as f64,
        seq_total / staged_total,
        staged3_total / rounds as f64,
        seq_total / staged3_total
    );
}
