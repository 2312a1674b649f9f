//! fjord-bench: a load generator for any BEP 15 (UDP) BitTorrent tracker.
//!
//! It simulates a population of peers spread over swarms of skewed popularity, sends
//! connect / announce / scrape requests in a configurable mix from many sockets and source
//! addresses, checks every reply strictly, and reports throughput, loss and latency, and
//! optionally the tracker's CPU time and memory.
//!
//! It answers an operator's question, "how much will this tracker take before it breaks?",
//! with a capacity search ([`find_capacity`]): open-loop steps of rising rate, each judged
//! against loss and latency limits, giving the capacity and the curve of offered against
//! answered rate. Every run keeps a per-second series (warm-up included, left out of the
//! summary), can be drawn (`--plot`), and can gate CI (`--max-loss`, `--max-p99`, …).
//!
//! Map of the crate:
//! - [`cli`]: the command line (clap) and its resolution into a [`cli::Plan`];
//! - [`target`]: `udp://host:port/path` targets, resolution, BEP 41 URL data;
//! - [`probe`]: the first connects, and a plain error when nothing answers;
//! - [`population`]: swarm popularity (Zipf, aquatic-like, uniform), peers, events;
//! - [`validate`]: outstanding-request tables and the reply check;
//! - [`engine`]: worker threads, sockets, pacing, connection-id upkeep;
//! - [`stats`]: counters and histograms per thread and per second;
//! - [`report`]: the report of a run (table, JSON, CSV);
//! - [`capacity`]: the capacity search and its report;
//! - [`thresholds`]: limits for CI and for the search;
//! - [`plot`]: SVG / PNG pictures (plotters);
//! - [`procstat`]: the server's CPU time and memory from `/proc`.
//!
//! Non-goals: HTTP trackers, BEP 41 options other than URL data, simulating NATs.

#![forbid(unsafe_code)]

pub mod capacity;
pub mod cli;
pub mod config;
pub mod engine;
pub mod plot;
pub mod population;
pub mod probe;
pub mod procstat;
pub mod report;
pub mod stats;
pub mod target;
pub mod thresholds;
pub mod validate;

use std::io::Write as _;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use capacity::{SearchReport, SearchSettings, Step};
use config::{BenchConfig, LoadMode};
use report::{Report, RunSettings, ServerUsage, Timing, ToolInfo};
use stats::{LiveCounters, LiveTotals, ThreadStats};

/// Probes the target, runs a load test and returns its report.
pub fn run(cfg: &BenchConfig) -> anyhow::Result<Report> {
    run_until(cfg, Arc::new(AtomicBool::new(false)))
}

/// Like [`run`], but sending also stops when `stop` becomes true (e.g. on Ctrl-C); the
/// report then covers what was done so far. Fails with a [`probe::ProbeError`] when no
/// tracker answers the first connects.
pub fn run_until(cfg: &BenchConfig, stop: Arc<AtomicBool>) -> anyhow::Result<Report> {
    cfg.validate()?;
    let probe = probe::probe(cfg)?;
    let mut report = load(cfg, stop)?;
    report.probe = Some(probe);
    Ok(report)
}

/// The in-flight bound per socket a step at `rate` needs so that slots run out only when
/// replies take longer than `window_us` (at least `base`, at most 65,536).
pub fn in_flight_for(rate: f64, window_us: u64, sockets: usize, base: usize) -> usize {
    let needed = (rate * window_us as f64 / 1e6 / sockets.max(1) as f64).ceil() as usize;
    needed.clamp(base, 1 << 16)
}

/// Probes the target once, then runs the capacity search: one open-loop run of `base` per
/// step (only its rate and in-flight bound change). `on_step` sees each judged step.
pub fn find_capacity(
    base: &BenchConfig,
    settings: &SearchSettings,
    stop: Arc<AtomicBool>,
    mut on_step: impl FnMut(&Step),
) -> anyhow::Result<SearchReport> {
    base.validate()?;
    settings.validate()?;
    let probe = probe::probe(base)?;
    // Slots enough for twice the p99 limit (at least 100 ms) of replies in flight: running out
    // of slots (skipped sends, counted as loss) then means the tracker is too slow, and a short
    // stall of either side shows as latency, which the p99 limit judges.
    let window_us = (settings.limits.max_p99_us.unwrap_or(0) * 2).max(100_000);
    let sockets = base.threads * base.sockets_per_thread;
    let outcome = capacity::search(
        settings,
        |_, rate| {
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                return Ok(None);
            }
            let mut cfg = base.clone();
            cfg.mode = LoadMode::Open { rate };
            cfg.in_flight = in_flight_for(rate, window_us, sockets, base.in_flight);
            let report = load(&cfg, Arc::clone(&stop))?;
            // A step cut short by Ctrl-C measures nothing.
            Ok((!stop.load(std::sync::atomic::Ordering::Relaxed)).then_some(report))
        },
        &mut on_step,
    )?;
    Ok(SearchReport {
        tool: ToolInfo::current(),
        command: None,
        mode: "capacity",
        target: base.target_url.clone(),
        target_address: base.target.to_string(),
        probe,
        settings: RunSettings::of(base),
        search: *settings,
        steps: outcome.steps,
        capacity: outcome.capacity,
        end: outcome.end,
        conclusion: outcome.conclusion,
    })
}

/// Runs a load test without probing first.
pub fn load(cfg: &BenchConfig, stop: Arc<AtomicBool>) -> anyhow::Result<Report> {
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
    let mut total = ThreadStats::new(cfg.warmup.as_nanos() as u64);
    let mut last_activity_ns = 0;
    let mut sending_end_ns = 0;
    for h in handles {
        let r = h
            .join()
            .map_err(|_| anyhow::anyhow!("a worker thread panicked"))?
            .context("worker failed")?;
        total.merge(&r.stats);
        last_activity_ns = last_activity_ns.max(r.last_activity_ns);
        sending_end_ns = sending_end_ns.max(r.sending_end_ns);
    }
    let client_cpu = procstat::own_cpu_seconds() - client_cpu_before;
    let responses_total = total.summary.responses_total();
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
    let secs = |ns: u64| Duration::from_nanos(ns).as_secs_f64();
    let timing = Timing {
        warmup: cfg.warmup.as_secs_f64().min(secs(sending_end_ns)),
        sending_end: secs(sending_end_ns),
        last_activity: secs(last_activity_ns.max(sending_end_ns)),
    };
    Ok(Report::build(&total, cfg, timing, client_cpu, server))
}
