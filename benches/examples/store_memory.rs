//! Memory per peer of fjord-store, from RSS.
//!
//! `cargo run -p fjord-benches --release --example store_memory -- [v4|v6] [peers] [swarms]
//! [threads] [churn rounds]` (defaults: v4, 10,000,000 peers, 1,000,000 swarms, 1 thread, no
//! churn; v6 defaults to 2,000,000 / 200,000).
//!
//! With `threads` > 1 the shuffled work list is cut into that many slices announced
//! concurrently (one worker per core, as the server runs). With `churn rounds` > 0, after the
//! load each round makes 5 % of the stored peers leave (`stopped`), as many new peers join
//! (Zipf-distributed over 110 % of the swarm ranks, so some swarms die and new ones appear),
//! the clock moves 60 s and the store is cleaned like the server does (slices of 4,096 swarms
//! until a cycle completes); bytes per peer are then measured over the peers stored at the end.
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

/// `rounds` of churn (see the module doc) on the loaded store; `work` holds the stored peers
/// and is kept up to date. Returns the peers stored at the end.
fn churn<A: Gen>(store: &PeerStore, sizes: &[u32], work: &mut Vec<u64>, rounds: u32) -> u64 {
    let mut rng = StdRng::seed_from_u64(11);
    let mut now = 1_000u32;
    let ranks = sizes.len() as f64 * 1.1;
    // Next unused peer index per rank (ranks past the loaded ones start empty).
    let mut next: Vec<u32> = sizes.to_vec();
    next.resize(ranks as usize + 1, 0);
    let zipf = rand_distr::Zipf::new(ranks, 1.0).expect("zipf");
    let mut out = Vec::new();
    for _ in 0..rounds {
        now += 60;
        let n = work.len() / 20;
        work.shuffle(&mut rng);
        for w in work.drain(..n) {
            let (r, j) = ((w >> 32) as u32, w as u32);
            let o = store.announce(
                &info_hash(r),
                A::peer(r, j),
                1,
                AnnounceEvent::Stopped,
                0,
                now,
                0,
                &mut out,
            );
            assert_eq!(o.status, PeerStatus::Removed);
        }
        for k in 0..n {
            let r = (rand::Rng::sample(&mut rng, zipf) as usize - 1).min(next.len() - 1);
            let j = next[r];
            next[r] += 1;
            let w = ((r as u64) << 32) | u64::from(j);
            let o = store.announce(
                &info_hash(r as u32),
                A::peer(r as u32, j),
                1,
                AnnounceEvent::Started,
                0,
                now,
                k as u64,
                &mut out,
            );
            assert_eq!(o.status, PeerStatus::Inserted);
            work.push(w);
        }
        loop {
            if store.clean(now, 4_096).cycle_complete {
                break;
            }
        }
        trim();
        if std::env::var("FJORD_MEMORY_DRAIN").is_ok() {
            for _ in 0..200_000 {
                store.scrape_one::<A>(&info_hash(0));
            }
        }
        if std::env::var("FJORD_MEMORY_ROUNDS").is_ok() {
            let (c, u, f) = store.slab_usage();
            let n = work.len() as f64;
            eprintln!(
                "round: RSS {:.2} MiB, slab chunks {:.2} B/peer, in use {:.2}, free {:.2}",
                vm_rss_bytes() as f64 / 1048576.0,
                c as f64 / n,
                u as f64 / n,
                f as f64 / n
            );
        }
    }
    work.len() as u64
}

fn run<A: Gen>(peers: u64, swarms: u64, threads: usize, rounds: u32) {
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
    let inserted = std::sync::atomic::AtomicU64::new(0);
    let chunk = work.len().div_ceil(threads.max(1));
    std::thread::scope(|sc| {
        for (t, part) in work.chunks(chunk.max(1)).enumerate() {
            let (store, inserted) = (&store, &inserted);
            sc.spawn(move || {
                let mut out = Vec::new();
                let mut n = 0;
                for (k, &w) in part.iter().enumerate() {
                    let (r, j) = ((w >> 32) as u32, w as u32);
                    let left = if mix(w).is_multiple_of(3) { 0 } else { 1_000 };
                    let o = store.announce(
                        &info_hash(r),
                        A::peer(r, j),
                        left,
                        AnnounceEvent::Started,
                        0,
                        1_000,
                        (k + t * chunk) as u64,
                        &mut out,
                    );
                    n += u64::from(o.status == PeerStatus::Inserted);
                }
                inserted.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            });
        }
    });
    let inserted = inserted.into_inner();
    trim();
    let elapsed = start.elapsed();
    assert_eq!(inserted, work.len() as u64, "every peer must be stored");
    let stored = churn::<A>(&store, &sizes, &mut work, rounds);
    // A few more pins let crossbeam-epoch free the tables retired by the last migrations.
    for _ in 0..1_000 {
        store.scrape::<A>(&[info_hash(0)], &mut Vec::new());
    }
    let after = vm_rss_bytes();
    let st = store.stats();
    let fs = if A::NAME == "IPv4" { st.v4 } else { st.v6 };
    assert_eq!(fs.seeders + fs.leechers, stored);
    if rounds == 0 {
        assert_eq!(fs.swarms, sizes.len() as u64);
    }
    let inserted = stored;
    let alloc = if cfg!(fjord_mimalloc) {
        "mimalloc"
    } else {
        "system allocator"
    };
    println!(
        "{}: stored {} peers in {} swarms; load {:.2?} with {threads} thread(s), {rounds} churn rounds",
        A::NAME,
        inserted,
        fs.swarms,
        elapsed,
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
    if std::env::var("FJORD_MEMORY_CLASSES").is_ok() {
        for (size, c, u, f) in store.slab_usage_by_class() {
            if c > 0 {
                println!(
                    "  class {size:>6}: chunks {:>6} KiB, used {:>6} KiB, free {:>6} KiB",
                    c / 1024,
                    u / 1024,
                    f / 1024
                );
            }
        }
    }
    if std::env::var("FJORD_MEMORY_SMAPS").is_ok() {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
        let (mut size, mut region) = (0u64, String::new());
        for line in smaps.lines() {
            if line.contains('-') && !line.starts_with(|c: char| c.is_ascii_uppercase()) {
                region = line.to_string();
            } else if let Some(v) = line.strip_prefix("Size:") {
                size = v.trim().trim_end_matches(" kB").parse().unwrap_or(0);
            } else if let Some(v) = line.strip_prefix("Rss:") {
                let rss: u64 = v.trim().trim_end_matches(" kB").parse().unwrap_or(0);
                if rss > 512 {
                    println!("  mapping {size:>8} kB, rss {rss:>8} kB: {region}");
                }
            }
        }
    }
    let (chunks, used, free) = store.slab_usage();
    println!(
        "{}: block slabs: {:.2} bytes per peer in chunks ({:.2} in use, {:.2} free)",
        A::NAME,
        chunks as f64 / inserted as f64,
        used as f64 / inserted as f64,
        free as f64 / inserted as f64
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
        "v4" => run::<SocketAddrV4>(
            num(1, 10_000_000),
            num(2, 1_000_000),
            num(3, 1) as usize,
            num(4, 0) as u32,
        ),
        "v6" => run::<SocketAddrV6>(
            num(1, 2_000_000),
            num(2, 200_000),
            num(3, 1) as usize,
            num(4, 0) as u32,
        ),
        other => panic!("unknown family {other}: use v4 or v6"),
    }
}

/// `FJORD_MALLOC_TRIM=1`: glibc's `malloc_trim(0)` after the load and after each churn round
/// (gives the free pages inside the heap back to the kernel).
fn trim() {
    if std::env::var("FJORD_MALLOC_TRIM").as_deref() == Ok("1") {
        // SAFETY: malloc_trim has no preconditions.
        unsafe { libc::malloc_trim(0) };
    }
}
