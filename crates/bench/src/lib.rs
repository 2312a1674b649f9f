//! fjord-bench: a load generator for any BEP 15 (UDP) BitTorrent tracker.
//!
//! It simulates a population of peers spread over swarms of skewed popularity, sends
//! connect / announce / scrape requests in a configurable mix from many sockets and source
//! addresses, checks every reply strictly, and reports throughput, loss and latency, and
//! optionally the tracker's CPU time and memory.
//!
//! Map of the crate:
//! - [`cli`]: the command line (clap) and its resolution into a [`config::BenchConfig`];
//! - [`population`]: swarm popularity (Zipf, aquatic-like, uniform), peers, events;
//! - [`validate`]: outstanding-request tables and the reply check;
//! - [`engine`]: worker threads, sockets, pacing, connection-id upkeep;
//! - [`stats`]: counters, histograms, the report (table and JSON);
//! - [`procstat`]: the server's CPU time and memory from `/proc`.
//!
//! Non-goals: HTTP trackers, BEP 41 option generation beyond none, simulating NATs.

#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod engine;
pub mod population;
pub mod procstat;
pub mod stats;
pub mod validate;

use std::io::Write as _;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use config::BenchConfig;
use stats::{LiveCounters, LiveTotals, Report, ServerUsage, ThreadStats};

/// Runs a load test and returns its report.
pub fn run(cfg: &BenchConfig) -> anyhow::Result<Report> {
    run_until(cfg, Arc::new(AtomicBool::new(false)))
}

/// Like [`run`], but sending also stops when `stop` becomes true (e.g. on Ctrl-C); the
/// report then covers what was done so far.
pub fn run_until(cfg: &BenchConfig, stop: Arc<AtomicBool>) -> anyhow::Result<Report> {
    cfg.validate()?;
    let total_sockets = cfg.threads * cfg.sockets_per_thread;
    anyhow::ensure!(
        cfg.population.peers as usize >= total_sockets,
        "--peers ({}) must be at least the number of sockets ({total_sockets})",
        cfg.population.peers
    );
    let sampler = population::SwarmSampler::new(
        cfg.population.distribution,
        cfg.population.swarms,
        cfg.population.peers,
    )?;
    let mut sockets = Vec::with_capacity(cfg.threads);
    for t in 0..cfg.threads {
        let mut mine = Vec::with_capacity(cfg.sockets_per_thread);
        for s in 0..cfg.sockets_per_thread {
            let g = t * cfg.sockets_per_thread + s;
            mine.push(
                engine::open_socket(cfg, g)
                    .with_context(|| format!("opening socket {g} towards {}", cfg.target))?,
            );
        }
        sockets.push(mine);
    }
    if let Some(pid) = cfg.server_pid {
        procstat::sample(pid).with_context(|| format!("reading /proc/{pid} (--server-pid)"))?;
    }
    let live: Vec<Arc<LiveCounters>> = (0..cfg.threads).map(|_| Arc::default()).collect();
    let shared = Arc::new(engine::Shared {
        cfg: cfg.clone(),
        sampler,
        start: OnceLock::new(),
        ready: Barrier::new(cfg.threads + 1),
        stop,
    });
    let mut handles = Vec::with_capacity(cfg.threads);
    for (t, socks) in sockets.into_iter().enumerate() {
        let shared = Arc::clone(&shared);
        let live = Arc::clone(&live[t]);
        handles.push(
            std::thread::Builder::new()
                .name(format!("fjord-bench-{t}"))
                .spawn(move || engine::run_worker(&shared, t, socks, &live))?,
        );
    }
    // Measure from the moment every worker has built its peers.
    shared.ready.wait();
    let start = *shared.start.get_or_init(Instant::now);
    let client_cpu_before = procstat::own_cpu_seconds();
    let server_before = match cfg.server_pid.map(procstat::sample) {
        Some(Ok(sample)) => Some(sample),
        Some(Err(e)) => {
            shared
                .stop
                .store(true, std::sync::atomic::Ordering::Relaxed);
            return Err(e).context("reading /proc of --server-pid at the start");
        }
        None => None,
    };
    // Progress line once a second until every worker is done.
    let mut prev = LiveTotals::default();
    let mut prev_at = Instant::now();
    while !handles.iter().all(|h| h.is_finished()) {
        std::thread::sleep(Duration::from_millis(50));
        if cfg.progress && prev_at.elapsed() >= Duration::from_secs(1) {
            let now = LiveTotals::read(&live);
            let secs = prev_at.elapsed().as_secs_f64();
            let line = now.progress_line(&prev, start.elapsed().as_secs_f64(), secs);
            let _ = writeln!(std::io::stderr(), "{line}");
            prev = now;
            prev_at = Instant::now();
        }
    }
    let mut total = ThreadStats::default();
    let mut last_activity_ns = 0;
    for h in handles {
        let r = h
            .join()
            .map_err(|_| anyhow::anyhow!("a worker thread panicked"))?
            .context("worker failed")?;
        total.merge(&r.stats);
        last_activity_ns = last_activity_ns.max(r.last_activity_ns);
    }
    let client_cpu = procstat::own_cpu_seconds() - client_cpu_before;
    let responses_total: u64 = total.responses.iter().sum();
    let server = match (cfg.server_pid, server_before) {
        (Some(pid), Some(before)) => {
            let after = procstat::sample(pid)
                .with_context(|| format!("reading /proc/{pid} after the run"))?;
            let cpu_seconds = after.cpu_seconds - before.cpu_seconds;
            Some(ServerUsage {
                pid,
                cpu_seconds,
                peak_rss_bytes: after.peak_rss_bytes,
                rss_bytes: after.rss_bytes,
                responses_per_cpu_second: (cpu_seconds > 0.0)
                    .then(|| responses_total as f64 / cpu_seconds),
                bytes_per_peer: match (after.peak_rss_bytes, total.peers_announced) {
                    (Some(rss), peers) if peers > 0 => Some(rss as f64 / peers as f64),
                    _ => None,
                },
            })
        }
        _ => None,
    };
    let elapsed = Duration::from_nanos(last_activity_ns).as_secs_f64();
    Ok(Report::build(
        &total,
        cfg.target.to_string(),
        &cfg.mode,
        cfg.threads,
        total_sockets,
        elapsed,
        client_cpu,
        server,
    ))
}
