//! What a cache line beyond the caches costs on this machine: the yardstick for how much of an
//! announce's time is waiting for the store's memory (docs/benchmarks.md, "Sixth round").
//!
//! `cargo run -p fjord-benches --release --example memory_latency -- [MiB...]` (default: 1 8
//! 48 120). For each working-set size it prints, in ns per 64-byte line:
//!
//! * **dependent**: a pointer chase through a random cycle over every line of the set (each
//!   load needs the one before: the full latency, TLB misses included);
//! * **independent**: loads of random lines whose addresses are known in advance, so the core
//!   keeps as many in flight as its fill buffers allow: what one line costs at best when many
//!   misses overlap (the limit the store's staged prefetches approach).
//!
//! Pin it like the server (`taskset -c 1`); run nothing else meanwhile.

use std::hint::black_box;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const LINE_WORDS: usize = 8;

fn measure(mib: usize) -> (f64, f64) {
    let lines = mib * (1 << 20) / 64;
    let mut rng = StdRng::seed_from_u64(0x9E37_79B9_7F4A_7C15);
    // A random cyclic order of the lines (Sattolo's shuffle: one cycle through all of them).
    let mut order: Vec<usize> = (0..lines).collect();
    for i in (1..lines).rev() {
        let j = rng.random_range(0..i);
        order.swap(i, j);
    }
    let mut buf = vec![0u64; lines * LINE_WORDS];
    for k in 0..lines {
        buf[order[k] * LINE_WORDS] = order[(k + 1) % lines] as u64;
    }
    drop(order);
    let steps = 4_000_000usize;
    let mut p = 0usize;
    let t = Instant::now();
    for _ in 0..steps {
        p = buf[p * LINE_WORDS] as usize;
    }
    let dependent = t.elapsed().as_nanos() as f64 / steps as f64;
    black_box(p);
    let n = 8_000_000usize;
    let idx: Vec<u32> = (0..n).map(|_| rng.random_range(0..lines as u32)).collect();
    let t = Instant::now();
    let mut sum = 0u64;
    for &i in &idx {
        sum = sum.wrapping_add(buf[i as usize * LINE_WORDS + 1]);
    }
    let independent = t.elapsed().as_nanos() as f64 / n as f64;
    black_box(sum);
    (dependent, independent)
}

fn main() {
    let mut sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("MiB"))
        .collect();
    if sizes.is_empty() {
        sizes = vec![1, 8, 48, 120];
    }
    for mib in sizes {
        let (d, i) = measure(mib);
        println!("{mib:>5} MiB: dependent {d:6.1} ns/line, independent {i:5.1} ns/line");
    }
}
