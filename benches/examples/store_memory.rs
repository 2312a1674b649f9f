//! Memory per peer of fjord-store, from RSS.
//!
//! `cargo run -p fjord-benches --release --example store_memory -- [v4|v6] [peers] [swarms]`
//! (defaults: v4, 10,000,000 peers, 1,000,000 swarms; v6 defaults to 2,000,000 / 200,000).
//!
//! Swarm sizes are Zipf-skewed: size(rank) = max(1, round(C / rank)) with C chosen so that the
//! sizes add up to the peer count (a few huge swarms, a long tail of 1–3 peer swarms). Peers
//! are announced in a shuffled order (swarms grow interleaved, as in real traffic), all
//! distinct, 1/3 seeders. Bytes per peer = (VmRSS after loading − VmRSS before creating the
//! store) / peers; the shuffled work list is allocated before the first reading and kept
//! alive past the second, so it is not counted.
//!
//! The system allocator is used, as in the `fjord` binary. Build with
//! `RUSTFLAGS="--cfg fjord_mimalloc"` to measure mimalloc instead.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::time::Instant;

use fjord_store::{AnnounceEvent, PeerAddress, PeerStatus, PeerStore, StoreConfig};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

#[cfg(fjord_mimalloc)]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn vm_rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = s.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

fn zipf_sizes(peers: u64, swarms: u64) -> Vec<u32> {
    let total = |c: f64| {
        (1..=swarms)
            .map(|r| ((c / r as f64).round() as u64).max(1))
            .sum::<u64>()
    };
    let (mut lo, mut hi) = (0.0f64, peers as f64);
    for _ in 0..60 {
        let mid = (lo + hi) / 2.0;
        if total(mid) < peers {
            lo = mid
        } else {
            hi = mid
        }
    }
    let mut sizes: Vec<u32> = (1..=swarms)
        .map(|r| ((hi / r as f64).round() as u32).max(1))
        .collect();
    // Trim the rounding excess from the biggest swarm so the total is exact.
    let excess = sizes
        .iter()
        .map(|&s| u64::from(s))
        .sum::<u64>()
        .saturating_sub(peers);
    sizes[0] -= excess as u32;
    sizes
}

fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn info_hash(rank: u32) -> [u8; 20] {
    let mut h = [0u8; 20];
    for (k, chunk) in h.chunks_mut(8).enumerate() {
        let v = mix(u64::from(rank) * 3 + k as u64).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
    h
}

trait Gen: PeerAddress {
    fn peer(rank: u32, j: u32) -> Self;
    const NAME: &'static str;
}
impl Gen for SocketAddrV4 {
    // Distinct within a swarm: (ip, port) from an injective function of j.
    fn peer(rank: u32, j: u32) -> Self {
        let ip = (mix(u64::from(rank)) as u32) ^ (j >> 12).wrapping_mul(0x9e37_79b9);
        SocketAddrV4::new(Ipv4Addr::from(ip), 1024 + (j & 0xFFF) as u16)
    }
    const NAME: &'static str = "IPv4";
}
impl Gen for SocketAddrV6 {
    fn peer(rank: u32, j: u32) -> Self {
        let hi = mix(u64::from(rank));
        let lo = mix(u64::from(j) ^ (u64::from(rank) << 32));
        let a = (u128::from(hi) << 64) | u128::from(lo);
        SocketAddrV6::new(Ipv6Addr::from(a), 1024 + (j & 0xFFF) as u16, 0, 0)
    }
    const NAME: &'static str = "IPv6";
}

fn run<A: Gen>(peers: u64, swarms: u64) {
    let sizes = zipf_sizes(peers, swarms);
    let mut work: Vec<u64> = Vec::with_capacity(peers as usize);
    for (r, &s) in sizes.iter().enumerate() {
        for j in 0..s {
            work.push(((r as u64) << 32) | u64::from(j));
        }
    }
    // FJORD_MEMORY_ORDER=sequential loads swarm by swarm instead (to see how much of the
    // allocator overhead comes from interleaved growth).
    if std::env::var("FJORD_MEMORY_ORDER").as_deref() != Ok("sequential") {
        work.shuffle(&mut StdRng::seed_from_u64(7));
    }
    let ones = sizes.iter().filter(|&&s| s == 1).count();
    let small = sizes.iter().filter(|&&s| s <= 3).count();
    println!(
        "{}: {} peers over {} swarms (largest {}, {} of 1 peer, {} of <= 3)",
        A::NAME,
        work.len(),
        sizes.len(),
        sizes[0],
        ones,
        small
    );

    let before = vm_rss_bytes();
    let store = PeerStore::new(StoreConfig::default());
    let start = Instant::now();
    let mut out = Vec::new();
    let mut inserted = 0u64;
    for (k, &w) in work.iter().enumerate() {
        let (r, j) = ((w >> 32) as u32, w as u32);
        let left = if mix(w).is_multiple_of(3) { 0 } else { 1_000 };
        let o = store.announce(
            &info_hash(r),
            A::peer(r, j),
            left,
            AnnounceEvent::Started,
            0,
            1_000,
            k as u64,
            &mut out,
        );
        inserted += u64::from(o.status == PeerStatus::Inserted);
    }
    let elapsed = start.elapsed();
    // A few more pins let crossbeam-epoch free the tables retired by the last migrations.
    for _ in 0..1_000 {
        store.scrape::<A>(&[info_hash(0)], &mut Vec::new());
    }
    let after = vm_rss_bytes();
    let st = store.stats();
    let fs = if A::NAME == "IPv4" { st.v4 } else { st.v6 };
    assert_eq!(inserted, work.len() as u64, "every peer must be stored");
    assert_eq!(fs.seeders + fs.leechers, inserted);
    assert_eq!(fs.swarms, sizes.len() as u64);
    let alloc = if cfg!(fjord_mimalloc) {
        "mimalloc"
    } else {
        "system allocator"
    };
    println!(
        "{}: stored {} peers in {} swarms; load {:.2?} ({:.0} ns/announce, 1 thread)",
        A::NAME,
        inserted,
        fs.swarms,
        elapsed,
        elapsed.as_nanos() as f64 / inserted as f64
    );
    println!(
        "{}: RSS {:.1} MiB -> {:.1} MiB: {:.2} bytes per peer ({alloc})",
        A::NAME,
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        (after - before) as f64 / inserted as f64
    );
    let (sw, tb, map) = store.allocated_bytes::<A>();
    println!(
        "{}: requested from the allocator: block headers {:.2} + peer slots {:.2} + map {:.2} = {:.2} bytes per peer",
        A::NAME,
        sw as f64 / inserted as f64,
        tb as f64 / inserted as f64,
        map as f64 / inserted as f64,
        (sw + tb + map) as f64 / inserted as f64
    );
    drop(work);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let fam = args.first().map(String::as_str).unwrap_or("v4");
    let num = |i: usize, d: u64| {
        args.get(i)
            .map(|s| s.replace('_', "").parse().expect("number"))
            .unwrap_or(d)
    };
    match fam {
        "v4" => run::<SocketAddrV4>(num(1, 10_000_000), num(2, 1_000_000)),
        "v6" => run::<SocketAddrV6>(num(1, 2_000_000), num(2, 200_000)),
        other => panic!("unknown family {other}: use v4 or v6"),
    }
}
