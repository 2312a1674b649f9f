//! Snapshot write and load of a large store (issue 16), through the server's own code
//! (`fjord_server::state::StateDir`, the same calls the maintenance thread and the start use).
//!
//! `cargo run -p fjord-benches --release --example snapshot_10m -- [peers] [swarms] [dir]
//! [zipf|uniform]` (defaults: 10,000,000 IPv4 peers over 1,000,000 swarms, a temporary
//! directory under /tmp, zipf). Each peer's swarm is drawn from fjord-bench's swarm sampler
//! (Zipf, exponent 1, as real trackers: a few huge swarms, a long tail) or round-robin
//! (uniform: 10 peers each at the defaults); peers are announced at store times 0..1,800 s (so
//! their ages differ), 1/3 seeders, 1/7 with event completed. Prints: live bytes per peer (VmRSS after
//! loading minus before creating the store, over the peers), the snapshot write time (walk +
//! write + fsync + rename), the file's size and bytes per peer, the load time into a fresh store
//! and the peers restored, and checks that the restored store counts the same.
//!
//! With a `dir` the snapshot is left there (`dir/snapshot.bin`), so that `fjord --state-dir dir`
//! starts with these peers (the worker-latency measurement of docs/benchmarks.md).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Instant;

use fjord_bench::population::{SwarmDistribution, SwarmSampler};
use fjord_server::fjord_store::{AnnounceEvent, PeerStore, StoreConfig};
use fjord_server::state::{Loaded, StateDir};
use rand::SeedableRng;
use rand::rngs::StdRng;

fn vm_rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = s.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

fn info_hash(swarm: u32) -> [u8; 20] {
    let mut h = [0x42u8; 20];
    let x = u64::from(swarm).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h[..8].copy_from_slice(&x.to_le_bytes());
    h[8..12].copy_from_slice(&swarm.to_le_bytes());
    h
}

fn main() {
    let mut args = std::env::args().skip(1);
    let peers: u32 = args
        .next()
        .map_or(10_000_000, |a| a.parse().expect("peers"));
    let swarms: u32 = args
        .next()
        .map_or(1_000_000, |a| a.parse().expect("swarms"));
    let keep = args.next().map(PathBuf::from);
    let zipf = match args.next().as_deref() {
        None | Some("zipf") => true,
        Some("uniform") => false,
        Some(other) => panic!("distribution: zipf or uniform, not {other}"),
    };
    let sampler = SwarmSampler::new(SwarmDistribution::Zipf(1.0), swarms, peers).expect("sampler");
    let mut rng = StdRng::seed_from_u64(16);
    let dir = keep.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("fjord-snapshot-10m-{}", std::process::id()))
    });
    let config = StoreConfig::default();
    let rss0 = vm_rss_bytes();
    let store = PeerStore::new(config.clone());
    let mut out = Vec::new();
    let t = Instant::now();
    for p in 0..peers {
        let swarm = if zipf {
            sampler.sample(&mut rng)
        } else {
            p % swarms
        };
        let addr = SocketAddrV4::new(Ipv4Addr::from(0x0a00_0000u32.wrapping_add(p)), 6881);
        let left = i64::from(p % 3 != 0);
        let event = if p % 7 == 0 {
            AnnounceEvent::Completed
        } else {
            AnnounceEvent::Started
        };
        let when = p.wrapping_mul(2_654_435_761) % 1800;
        store.announce(&info_hash(swarm), addr, left, event, 0, when, 0, &mut out);
    }
    let load_secs = t.elapsed().as_secs_f64();
    let live = vm_rss_bytes() - rss0;
    let stats = store.stats();
    let stored = stats.v4.seeders + stats.v4.leechers;
    println!(
        "store ({}): {stored} IPv4 peers in {} swarms, announced in {load_secs:.1} s; live {:.2} bytes/peer (RSS)",
        if zipf { "zipf" } else { "uniform" },
        stats.v4.swarms,
        live as f64 / stored as f64
    );

    let state = StateDir::open(&dir).expect("state dir");
    let now = 1800;
    let unix = 1_800_000_000;
    let w = state.write_snapshot(&store, now, unix).expect("write");
    println!(
        "write: {:.2} s, {} bytes ({:.2} bytes/peer), {} records in {} blocks, {:.0} peers/s",
        w.duration.as_secs_f64(),
        w.totals.bytes,
        w.totals.bytes as f64 / w.totals.peers as f64,
        w.totals.records,
        w.totals.blocks,
        w.totals.peers as f64 / w.duration.as_secs_f64()
    );
    let before = (stats.v4.seeders, stats.v4.leechers, stats.v4.swarms);
    let completed = stats.v4.completed;
    drop(store);

    let fresh = PeerStore::new(config);
    match state.load_snapshot(&fresh, 0, unix) {
        Loaded::Restored {
            restored_peers,
            duration,
            totals,
            ..
        } => println!(
            "load: {:.2} s, {restored_peers} of {} peers restored, {:.0} peers/s",
            duration.as_secs_f64(),
            totals.peers,
            restored_peers as f64 / duration.as_secs_f64()
        ),
        other => panic!("load: {other:?}"),
    }
    let s = fresh.stats();
    assert_eq!((s.v4.seeders, s.v4.leechers, s.v4.swarms), before);
    assert_eq!(s.v4.completed, completed);
    println!(
        "restored store equal: {} seeders, {} leechers, {} swarms, {} completed",
        before.0, before.1, before.2, completed
    );
    if keep.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        println!("snapshot left in {}", state.snapshot_path().display());
    }
}
