//! The report of one run: the summary of the measured window (warm-up excluded), the
//! per-second series, the settings that reproduce it, and its renderings (table, JSON, CSV).

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::config::{BenchConfig, LoadMode};
use crate::population::{EventModel, SwarmDistribution};
use crate::stats::{Counts, SecondStats, ThreadStats};
use crate::validate::Malformed;

/// `fjord-bench`'s version and the commit it was built from.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("FJORD_COMMIT"), ")");

/// Which build of fjord-bench produced a report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ToolInfo {
    /// "fjord-bench".
    pub name: &'static str,
    /// Crate version.
    pub version: &'static str,
    /// Git commit (12 hex digits) or "unknown".
    pub commit: &'static str,
}

impl ToolInfo {
    /// This build.
    pub fn current() -> Self {
        Self {
            name: "fjord-bench",
            version: env!("CARGO_PKG_VERSION"),
            commit: env!("FJORD_COMMIT"),
        }
    }
}

/// Counts by request kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct ByKind<T> {
    /// Connect.
    pub connect: T,
    /// Announce.
    pub announce: T,
    /// Scrape.
    pub scrape: T,
}

impl<T: Copy> ByKind<T> {
    fn from_array(a: [T; 3]) -> Self {
        Self {
            connect: a[0],
            announce: a[1],
            scrape: a[2],
        }
    }
}

/// Latency percentiles in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Replies measured.
    pub count: u64,
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Maximum.
    pub max_us: u64,
}

impl Latency {
    fn from_histogram<T: hdrhistogram::Counter>(h: &Histogram<T>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            mean_us: h.mean(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

/// Server-side measurements (with `--server-pid`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ServerUsage {
    /// The process measured.
    pub pid: u32,
    /// CPU seconds (user + system) it used between the start and the end of the run.
    pub cpu_seconds: f64,
    /// Peak resident set size (VmHWM) at the end of the run, bytes.
    pub peak_rss_bytes: Option<u64>,
    /// Resident set size (VmRSS) at the end of the run, bytes.
    pub rss_bytes: Option<u64>,
    /// Valid replies per server CPU second.
    pub responses_per_cpu_second: Option<f64>,
    /// Peak RSS divided by the distinct peers announced in this run: a rough figure. The
    /// server's baseline memory and peers left from earlier runs inflate it; peers that
    /// announced `stopped` (no longer stored) deflate it.
    pub bytes_per_peer: Option<f64>,
}

/// The population part of [`RunSettings`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PopulationSettings {
    /// Simulated peers.
    pub peers: u32,
    /// Swarms.
    pub swarms: u32,
    /// "zipf", "aquatic" or "uniform".
    pub distribution: &'static str,
    /// Zipf exponent (zipf only).
    pub zipf_exponent: Option<f64>,
    /// Fraction of seeders.
    pub seeder_ratio: f64,
    /// "lifecycle" or "aquatic".
    pub events: &'static str,
    /// Lifecycle: chance per announce that a leecher completes.
    pub p_complete: Option<f64>,
    /// Lifecycle: chance per announce that a peer stops.
    pub p_stop: Option<f64>,
    /// num_want of announces.
    pub num_want: i32,
    /// Fewest hashes per scrape.
    pub scrape_min: u8,
    /// Most hashes per scrape.
    pub scrape_max: u8,
    /// Seed of every random choice.
    pub seed: u64,
}

/// Request weights.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct MixSettings {
    /// Connect weight.
    pub connect: u32,
    /// Announce weight.
    pub announce: u32,
    /// Scrape weight.
    pub scrape: u32,
}

/// Every setting of a run, so that a JSON report is reproducible on its own.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunSettings {
    /// "closed" or "open".
    pub mode: &'static str,
    /// Open loop: requests per second.
    pub rate: Option<f64>,
    /// Load threads.
    pub threads: usize,
    /// Sockets per thread.
    pub sockets_per_thread: usize,
    /// Loopback source addresses.
    pub sources: u8,
    /// Source addresses bound (empty = automatic).
    pub bind: Vec<String>,
    /// Requests in flight per socket.
    pub in_flight: usize,
    /// Sending time, seconds.
    pub duration_seconds: Option<f64>,
    /// Request limit.
    pub requests: Option<u64>,
    /// Warm-up left out of the summary, seconds.
    pub warmup_seconds: f64,
    /// Reply timeout, ms.
    pub timeout_ms: u64,
    /// Connection-id refresh age, seconds.
    pub reconnect_after_seconds: f64,
    /// BEP 41 URL data sent with every announce (the target's path), if any.
    pub url_data: Option<String>,
    /// Request weights.
    pub mix: MixSettings,
    /// The simulated population.
    pub population: PopulationSettings,
    /// Datagrams per batch.
    pub batch: usize,
    /// sendmmsg/recvmmsg used.
    pub mmsg: bool,
    /// SO_RCVBUF asked for.
    pub recv_buffer: usize,
    /// Busy polling.
    pub spin: bool,
}

impl RunSettings {
    /// The settings of `cfg`.
    pub fn of(cfg: &BenchConfig) -> Self {
        let p = &cfg.population;
        let (distribution, zipf_exponent) = match p.distribution {
            SwarmDistribution::Uniform => ("uniform", None),
            SwarmDistribution::Zipf(s) => ("zipf", Some(s)),
            SwarmDistribution::Aquatic => ("aquatic", None),
        };
        let (events, p_complete, p_stop) = match p.events {
            EventModel::Lifecycle { p_complete, p_stop } => {
                ("lifecycle", Some(p_complete), Some(p_stop))
            }
            EventModel::Aquatic => ("aquatic", None, None),
        };
        let (mode, rate) = match cfg.mode {
            LoadMode::Closed => ("closed", None),
            LoadMode::Open { rate } => ("open", Some(rate)),
        };
        Self {
            mode,
            rate,
            threads: cfg.threads,
            sockets_per_thread: cfg.sockets_per_thread,
            sources: cfg.sources,
            bind: cfg.bind.iter().map(|ip| ip.to_string()).collect(),
            in_flight: cfg.in_flight,
            duration_seconds: cfg.duration.map(|d| d.as_secs_f64()),
            requests: cfg.requests,
            warmup_seconds: cfg.warmup.as_secs_f64(),
            timeout_ms: cfg.timeout.as_millis() as u64,
            reconnect_after_seconds: cfg.reconnect_after.as_secs_f64(),
            url_data: cfg.path.clone(),
            mix: MixSettings {
                connect: cfg.mix.connect,
                announce: cfg.mix.announce,
                scrape: cfg.mix.scrape,
            },
            population: PopulationSettings {
                peers: p.peers,
                swarms: p.swarms,
                distribution,
                zipf_exponent,
                seeder_ratio: p.seeder_ratio,
                events,
                p_complete,
                p_stop,
                num_want: p.num_want,
                scrape_min: p.scrape_min,
                scrape_max: p.scrape_max,
                seed: p.seed,
            },
            batch: cfg.batch,
            mmsg: cfg.use_mmsg,
            recv_buffer: cfg.recv_buffer,
            spin: cfg.spin,
        }
    }
}

/// One second of a run (requests counted in the second they were sent in).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SeriesRow {
    /// Start of this second, seconds since the run started.
    pub second: u32,
    /// Its length: 1, except for a shorter last second.
    pub seconds: f64,
    /// Whether any of it lies in the warm-up.
    pub warmup: bool,
    /// Requests sent per second.
    pub sent_per_second: f64,
    /// Open loop: requests due per second (sent + skipped).
    pub offered_per_second: f64,
    /// Valid replies per second, by kind.
    pub replies_per_second: ByKind<f64>,
    /// Valid replies per second.
    pub replies_per_second_total: f64,
    /// Error replies.
    pub error_replies: u64,
    /// Malformed replies.
    pub malformed: u64,
    /// Timeouts.
    pub timeouts: u64,
    /// Skipped sends.
    pub skipped: u64,
    /// Socket errors.
    pub socket_errors: u64,
    /// Fraction of the requests due that got no reply in time.
    pub loss: f64,
    /// Latency percentiles of this second's replies (2 significant digits).
    pub latency: Latency,
}

impl SeriesRow {
    fn of(second: u32, seconds: f64, warmup: bool, s: &SecondStats) -> Self {
        let c = &s.counts;
        let per_s = |n: u64| n as f64 / seconds.max(1e-9);
        Self {
            second,
            seconds,
            warmup,
            sent_per_second: per_s(c.sent_total()),
            offered_per_second: per_s(c.sent_total() + c.skipped),
            replies_per_second: ByKind::from_array(c.responses.map(per_s)),
            replies_per_second_total: per_s(c.responses_total()),
            error_replies: c.errors_total(),
            malformed: c.malformed_total(),
            timeouts: c.timeouts_total(),
            skipped: c.skipped,
            socket_errors: c.socket_errors,
            loss: c.loss(),
            latency: Latency::from_histogram(&s.latency),
        }
    }
}

/// The column names of [`series_csv`], in order.
pub const SERIES_CSV_HEADER: &str = "second,seconds,warmup,sent_per_s,offered_per_s,connect_per_s,announce_per_s,scrape_per_s,replies_per_s,error_replies,malformed,timeouts,skipped,socket_errors,loss,p50_us,p90_us,p99_us,max_us";

/// One CSV line of a row (without the newline), columns as in [`SERIES_CSV_HEADER`].
pub fn series_csv_line(r: &SeriesRow) -> String {
    format!(
        "{},{},{},{:.1},{:.1},{:.1},{:.1},{:.1},{:.1},{},{},{},{},{},{:.6},{},{},{},{}",
        r.second,
        r.seconds,
        r.warmup,
        r.sent_per_second,
        r.offered_per_second,
        r.replies_per_second.connect,
        r.replies_per_second.announce,
        r.replies_per_second.scrape,
        r.replies_per_second_total,
        r.error_replies,
        r.malformed,
        r.timeouts,
        r.skipped,
        r.socket_errors,
        r.loss,
        r.latency.p50_us,
        r.latency.p90_us,
        r.latency.p99_us,
        r.latency.max_us
    )
}

/// The per-second series as CSV, header first.
pub fn series_csv(rows: &[SeriesRow]) -> String {
    let mut out = String::from(SERIES_CSV_HEADER);
    out.push('\n');
    for r in rows {
        out.push_str(&series_csv_line(r));
        out.push('\n');
    }
    out
}

/// When a run's phases ended, in seconds since its start.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timing {
    /// End of the warm-up.
    pub warmup: f64,
    /// End of sending (deadline, request limit or stop).
    pub sending_end: f64,
    /// Last reply or timeout.
    pub last_activity: f64,
}

/// The final report of a run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// The build of fjord-bench.
    pub tool: ToolInfo,
    /// The command line, if run from one.
    pub command: Option<Vec<String>>,
    /// The tracker as given (`udp://host:port/path`).
    pub target: String,
    /// The address it resolved to.
    pub target_address: String,
    /// The first connects, before the run (counted by the tracker, not below).
    pub probe: Option<crate::probe::ProbeReply>,
    /// Every setting of the run.
    pub settings: RunSettings,
    /// "closed" or "open".
    pub mode: String,
    /// Open loop target rate, requests/s.
    pub target_rate: Option<f64>,
    /// Load-generating threads.
    pub threads: usize,
    /// Sockets in all.
    pub sockets: usize,
    /// Seconds from the first request to the last reply or timeout, warm-up included.
    pub elapsed_seconds: f64,
    /// Warm-up at the start, left out of everything below but `series`.
    pub warmup_seconds: f64,
    /// Length of the measured window: from the end of the warm-up to the end of sending.
    /// Rates below are counts of requests sent in this window divided by it.
    pub measured_seconds: f64,
    /// Requests sent by kind.
    pub sent: ByKind<u64>,
    /// Requests sent in all.
    pub sent_total: u64,
    /// Requests sent per second (in open loop, compare with `target_rate`).
    pub sent_per_second_total: f64,
    /// Requests due per second: sent plus (open loop) skipped.
    pub offered_per_second_total: f64,
    /// Valid replies by kind.
    pub responses: ByKind<u64>,
    /// Valid replies in all (error replies not included).
    pub responses_total: u64,
    /// Valid replies per second by kind.
    pub responses_per_second: ByKind<f64>,
    /// Valid replies per second in all.
    pub responses_per_second_total: f64,
    /// Error replies (action 3) by kind of request.
    pub error_replies: ByKind<u64>,
    /// Malformed replies by reason.
    pub malformed: std::collections::BTreeMap<&'static str, u64>,
    /// Malformed replies in all.
    pub malformed_total: u64,
    /// Replies matching no outstanding request (late, duplicate or forged).
    pub unexpected_replies: u64,
    /// Requests unanswered within the timeout, by kind.
    pub timeouts: ByKind<u64>,
    /// Fraction of the requests due that got no reply in time: (timeouts + skipped) /
    /// (sent + skipped). In closed loop nothing is skipped: timeouts / sent.
    pub loss: f64,
    /// Socket errors: failed sends (other than a full buffer) and ICMP errors such as port
    /// unreachable.
    pub socket_errors: u64,
    /// Datagrams deferred because the socket send buffer was full.
    pub send_blocked: u64,
    /// Open loop: scheduled requests skipped because every in-flight slot was taken.
    pub skipped: u64,
    /// Latency of all valid replies.
    pub latency: Latency,
    /// Latency by kind.
    pub latency_by_kind: ByKind<Latency>,
    /// Mean peer entries per announce reply.
    pub peers_per_announce: f64,
    /// Distinct simulated peers that announced.
    pub peers_announced: u64,
    /// Connection ids obtained (whole run).
    pub connection_ids: u64,
    /// CPU seconds fjord-bench itself used (whole run).
    pub client_cpu_seconds: f64,
    /// Valid replies per fjord-bench CPU second.
    pub responses_per_client_cpu_second: f64,
    /// Server measurements, with `--server-pid` (whole run).
    pub server: Option<ServerUsage>,
    /// One row per second of the run, warm-up included.
    pub series: Vec<SeriesRow>,
}

impl Report {
    /// Builds the report from merged counts.
    pub fn build(
        s: &ThreadStats,
        cfg: &BenchConfig,
        timing: Timing,
        client_cpu_seconds: f64,
        server: Option<ServerUsage>,
    ) -> Self {
        let c: &Counts = &s.summary;
        let measured_seconds = (timing.sending_end - timing.warmup).max(0.0);
        let responses_total = c.responses_total();
        let sent_total = c.sent_total();
        let per_sec = |n: u64| n as f64 / measured_seconds.max(1e-9);
        let settings = RunSettings::of(cfg);
        // One row per second of sending. Requests are counted where they were sent, so only
        // events without a request (late replies, socket errors) can fall after the end:
        // they join the last row.
        let rows = (timing.sending_end.ceil() as usize).max(1);
        let mut seconds: Vec<SecondStats> = s.seconds.iter().take(rows).cloned().collect();
        seconds.resize_with(rows, SecondStats::default);
        for late in s.seconds.iter().skip(rows) {
            seconds[rows - 1].merge(late);
        }
        let series = seconds
            .iter()
            .enumerate()
            .map(|(i, second)| {
                let length = (timing.sending_end - i as f64).clamp(0.0, 1.0);
                let length = if length > 0.0 { length } else { 1.0 };
                let warmup = (i as f64) < timing.warmup;
                SeriesRow::of(i as u32, length, warmup, second)
            })
            .collect();
        Self {
            tool: ToolInfo::current(),
            command: None,
            target: cfg.target_url.clone(),
            target_address: cfg.target.to_string(),
            probe: None,
            mode: settings.mode.to_string(),
            target_rate: settings.rate,
            settings,
            threads: cfg.threads,
            sockets: cfg.threads * cfg.sockets_per_thread,
            elapsed_seconds: timing.last_activity,
            warmup_seconds: timing.warmup,
            measured_seconds,
            sent: ByKind::from_array(c.sent),
            sent_total,
            sent_per_second_total: per_sec(sent_total),
            offered_per_second_total: per_sec(sent_total + c.skipped),
            responses: ByKind::from_array(c.responses),
            responses_total,
            responses_per_second: ByKind::from_array(c.responses.map(per_sec)),
            responses_per_second_total: per_sec(responses_total),
            error_replies: ByKind::from_array(c.errors),
            malformed: Malformed::ALL
                .iter()
                .map(|m| (m.name(), c.malformed[m.index()]))
                .collect(),
            malformed_total: c.malformed_total(),
            unexpected_replies: c.unexpected,
            timeouts: ByKind::from_array(c.timeouts),
            loss: c.loss(),
            socket_errors: c.socket_errors,
            send_blocked: c.send_blocked,
            skipped: c.skipped,
            latency: Latency::from_histogram(&s.latency),
            latency_by_kind: ByKind {
                connect: Latency::from_histogram(&s.latency_by_kind[0]),
                announce: Latency::from_histogram(&s.latency_by_kind[1]),
                scrape: Latency::from_histogram(&s.latency_by_kind[2]),
            },
            peers_per_announce: if c.responses[1] == 0 {
                0.0
            } else {
                c.peers_received as f64 / c.responses[1] as f64
            },
            peers_announced: s.peers_announced,
            connection_ids: s.connection_ids,
            client_cpu_seconds,
            responses_per_client_cpu_second: responses_total as f64 / client_cpu_seconds.max(1e-9),
            server,
            series,
        }
    }

    /// Error replies in all.
    pub fn error_replies_total(&self) -> u64 {
        self.error_replies.connect + self.error_replies.announce + self.error_replies.scrape
    }

    /// The per-second series as CSV.
    pub fn series_csv(&self) -> String {
        series_csv(&self.series)
    }

    /// The human-readable table.
    pub fn to_table(&self) -> String {
        let mut o = String::new();
        let rate = match self.target_rate {
            Some(r) => format!("open loop at {r:.0} req/s"),
            None => "closed loop".to_string(),
        };
        let _ = writeln!(
            o,
            "fjord-bench {}: {} ({}, {rate}), {} threads, {} sockets",
            VERSION, self.target, self.target_address, self.threads, self.sockets,
        );
        let _ = writeln!(
            o,
            "measured {:.2} s after a {:.2} s warm-up ({:.2} s in all), {:.0} requests/s sent",
            self.measured_seconds,
            self.warmup_seconds,
            self.elapsed_seconds,
            self.sent_per_second_total
        );
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "{:<10} {:>12} {:>12} {:>14} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "kind",
            "sent",
            "responses",
            "responses/s",
            "errors",
            "timeouts",
            "p50 µs",
            "p90 µs",
            "p99 µs",
            "p99.9 µs",
            "max µs"
        );
        let rows = [
            (
                "connect",
                self.sent.connect,
                self.responses.connect,
                self.responses_per_second.connect,
                self.error_replies.connect,
                self.timeouts.connect,
                self.latency_by_kind.connect,
            ),
            (
                "announce",
                self.sent.announce,
                self.responses.announce,
                self.responses_per_second.announce,
                self.error_replies.announce,
                self.timeouts.announce,
                self.latency_by_kind.announce,
            ),
            (
                "scrape",
                self.sent.scrape,
                self.responses.scrape,
                self.responses_per_second.scrape,
                self.error_replies.scrape,
                self.timeouts.scrape,
                self.latency_by_kind.scrape,
            ),
            (
                "total",
                self.sent_total,
                self.responses_total,
                self.responses_per_second_total,
                self.error_replies_total(),
                self.timeouts.connect + self.timeouts.announce + self.timeouts.scrape,
                self.latency,
            ),
        ];
        for (name, sent, resp, rps, err, to, l) in rows {
            let _ = writeln!(
                o,
                "{name:<10} {sent:>12} {resp:>12} {rps:>14.0} {err:>8} {to:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us
            );
        }
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "loss {:.4}% | malformed {} | unexpected replies {} | socket errors {} | send blocked {} | skipped {}",
            self.loss * 100.0,
            self.malformed_total,
            self.unexpected_replies,
            self.socket_errors,
            self.send_blocked,
            self.skipped
        );
        if self.malformed_total > 0 {
            let detail: Vec<String> = self
                .malformed
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            let _ = writeln!(o, "malformed by reason: {}", detail.join(", "));
        }
        let _ = writeln!(
            o,
            "peers per announce reply {:.2} | distinct peers announced {} | connection ids obtained {}",
            self.peers_per_announce, self.peers_announced, self.connection_ids
        );
        let _ = writeln!(
            o,
            "fjord-bench CPU {:.2} s ({:.0} responses per client CPU second)",
            self.client_cpu_seconds, self.responses_per_client_cpu_second
        );
        if let Some(s) = &self.server {
            let mb = |b: Option<u64>| {
                b.map(|b| format!("{:.1} MiB", b as f64 / 1048576.0))
                    .unwrap_or_else(|| "n/a".into())
            };
            let _ = writeln!(
                o,
                "server pid {}: CPU {:.2} s | {} responses per server CPU second | peak RSS {} | RSS {} | {} bytes per peer announced",
                s.pid,
                s.cpu_seconds,
                s.responses_per_cpu_second
                    .map(|v| format!("{v:.0}"))
                    .unwrap_or_else(|| "n/a".into()),
                mb(s.peak_rss_bytes),
                mb(s.rss_bytes),
                s.bytes_per_peer
                    .map(|v| format!("{v:.0}"))
                    .unwrap_or_else(|| "n/a".into()),
            );
        }
        o
    }
}

#[cfg(test)]
#[path = "report_tests.rs"]
mod tests;
