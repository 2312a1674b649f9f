//! Counters, latency histograms and the final report.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::validate::{Kind, Malformed};

/// Highest latency recorded exactly, in microseconds (60 s); slower replies saturate.
const MAX_LATENCY_US: u64 = 60_000_000;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("static histogram bounds")
}

/// Counts kept by one worker thread (no sharing, no atomics).
#[derive(Clone, Debug)]
pub struct ThreadStats {
    /// Requests sent, by kind.
    pub sent: [u64; 3],
    /// Valid replies, by kind.
    pub responses: [u64; 3],
    /// Error replies, by kind of request.
    pub errors: [u64; 3],
    /// Malformed replies, by reason.
    pub malformed: [u64; 5],
    /// Replies matching no outstanding request.
    pub unexpected: u64,
    /// Requests unanswered within the timeout, by kind.
    pub timeouts: [u64; 3],
    /// Socket errors: send calls that failed other than for a full buffer, and errors the
    /// kernel queued on a socket (ICMP port unreachable: nothing listens at the target).
    pub socket_errors: u64,
    /// Datagrams not sent because the socket's send buffer was full (retried later).
    pub send_blocked: u64,
    /// Open loop: scheduled requests skipped because every slot was in flight.
    pub skipped: u64,
    /// Peer entries received in announce replies.
    pub peers_received: u64,
    /// Connection ids obtained.
    pub connection_ids: u64,
    /// Latency of valid replies, all kinds, µs.
    pub latency: Histogram<u64>,
    /// Latency by kind, µs.
    pub latency_by_kind: [Histogram<u64>; 3],
    /// Distinct simulated peers that announced at least once.
    pub peers_announced: u64,
}

impl Default for ThreadStats {
    fn default() -> Self {
        Self {
            sent: [0; 3],
            responses: [0; 3],
            errors: [0; 3],
            malformed: [0; 5],
            unexpected: 0,
            timeouts: [0; 3],
            socket_errors: 0,
            send_blocked: 0,
            skipped: 0,
            peers_received: 0,
            connection_ids: 0,
            latency: histogram(),
            latency_by_kind: [histogram(), histogram(), histogram()],
            peers_announced: 0,
        }
    }
}

impl ThreadStats {
    /// Records a valid reply.
    pub fn record_response(&mut self, kind: Kind, latency_ns: u64) {
        self.responses[kind.index()] += 1;
        let us = (latency_ns / 1000).clamp(1, MAX_LATENCY_US);
        self.latency.saturating_record(us);
        self.latency_by_kind[kind.index()].saturating_record(us);
    }

    /// Adds another thread's counts.
    pub fn merge(&mut self, o: &ThreadStats) {
        fn add<const N: usize>(a: &mut [u64; N], b: &[u64; N]) {
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        }
        add(&mut self.sent, &o.sent);
        add(&mut self.responses, &o.responses);
        add(&mut self.errors, &o.errors);
        add(&mut self.malformed, &o.malformed);
        add(&mut self.timeouts, &o.timeouts);
        self.unexpected += o.unexpected;
        self.socket_errors += o.socket_errors;
        self.send_blocked += o.send_blocked;
        self.skipped += o.skipped;
        self.peers_received += o.peers_received;
        self.connection_ids += o.connection_ids;
        self.peers_announced += o.peers_announced;
        self.latency.add(&o.latency).expect("same bounds");
        for (a, b) in self.latency_by_kind.iter_mut().zip(&o.latency_by_kind) {
            a.add(b).expect("same bounds");
        }
    }

    /// Copies the running totals into the shared live counters.
    pub fn publish(&self, live: &LiveCounters) {
        let total = |a: &[u64]| a.iter().sum::<u64>();
        live.sent.store(total(&self.sent), Ordering::Relaxed);
        for i in 0..3 {
            live.responses[i].store(self.responses[i], Ordering::Relaxed);
        }
        live.errors.store(total(&self.errors), Ordering::Relaxed);
        live.malformed
            .store(total(&self.malformed), Ordering::Relaxed);
        live.timeouts
            .store(total(&self.timeouts), Ordering::Relaxed);
    }
}

/// Running totals of one thread, read once a second by the progress line.
/// Aligned to its own cache lines so threads do not share one.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct LiveCounters {
    /// Requests sent.
    pub sent: AtomicU64,
    /// Valid replies by kind.
    pub responses: [AtomicU64; 3],
    /// Error replies.
    pub errors: AtomicU64,
    /// Malformed replies.
    pub malformed: AtomicU64,
    /// Timeouts.
    pub timeouts: AtomicU64,
}

/// Sums of [`LiveCounters`] at one moment.
#[derive(Clone, Copy, Debug, Default)]
pub struct LiveTotals {
    /// Requests sent.
    pub sent: u64,
    /// Valid replies by kind.
    pub responses: [u64; 3],
    /// Error replies.
    pub errors: u64,
    /// Malformed replies.
    pub malformed: u64,
    /// Timeouts.
    pub timeouts: u64,
}

impl LiveTotals {
    /// Sums all threads' counters.
    pub fn read(all: &[std::sync::Arc<LiveCounters>]) -> Self {
        let mut t = Self::default();
        for l in all {
            t.sent += l.sent.load(Ordering::Relaxed);
            for i in 0..3 {
                t.responses[i] += l.responses[i].load(Ordering::Relaxed);
            }
            t.errors += l.errors.load(Ordering::Relaxed);
            t.malformed += l.malformed.load(Ordering::Relaxed);
            t.timeouts += l.timeouts.load(Ordering::Relaxed);
        }
        t
    }

    /// One progress line describing the change since `prev` over `secs` seconds.
    pub fn progress_line(&self, prev: &Self, elapsed: f64, secs: f64) -> String {
        let d = |a: u64, b: u64| (a.saturating_sub(b)) as f64 / secs.max(1e-9);
        let total: u64 = self.responses.iter().sum();
        let prev_total: u64 = prev.responses.iter().sum();
        format!(
            "[{elapsed:6.1}s] {:>10.0} resp/s (connect {:.0}, announce {:.0}, scrape {:.0}) | sent {:.0}/s | errors {} malformed {} timeouts {}",
            d(total, prev_total),
            d(self.responses[0], prev.responses[0]),
            d(self.responses[1], prev.responses[1]),
            d(self.responses[2], prev.responses[2]),
            d(self.sent, prev.sent),
            self.errors,
            self.malformed,
            self.timeouts,
        )
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
    fn from_histogram(h: &Histogram<u64>) -> Self {
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

/// The final report of a run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// Tracker address.
    pub target: String,
    /// "closed" or "open".
    pub mode: String,
    /// Open loop target rate, requests/s.
    pub target_rate: Option<f64>,
    /// Load-generating threads.
    pub threads: usize,
    /// Sockets in all.
    pub sockets: usize,
    /// Seconds from the first request to the last reply or timeout.
    pub elapsed_seconds: f64,
    /// Requests sent by kind.
    pub sent: ByKind<u64>,
    /// Requests sent in all.
    pub sent_total: u64,
    /// Requests sent per second (in open loop, compare with `target_rate`).
    pub sent_per_second_total: f64,
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
    /// Fraction of sent requests that timed out.
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
    /// Connection ids obtained.
    pub connection_ids: u64,
    /// CPU seconds fjord-bench itself used.
    pub client_cpu_seconds: f64,
    /// Valid replies per fjord-bench CPU second.
    pub responses_per_client_cpu_second: f64,
    /// Server measurements, with `--server-pid`.
    pub server: Option<ServerUsage>,
}

impl Report {
    /// Builds the report from merged counts.
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        s: &ThreadStats,
        target: String,
        mode: &crate::config::LoadMode,
        threads: usize,
        sockets: usize,
        elapsed_seconds: f64,
        client_cpu_seconds: f64,
        server: Option<ServerUsage>,
    ) -> Self {
        let responses_total: u64 = s.responses.iter().sum();
        let sent_total: u64 = s.sent.iter().sum();
        let per_sec = |n: u64| n as f64 / elapsed_seconds.max(1e-9);
        let timeouts_total: u64 = s.timeouts.iter().sum();
        let (mode_name, target_rate) = match mode {
            crate::config::LoadMode::Closed => ("closed".to_string(), None),
            crate::config::LoadMode::Open { rate } => ("open".to_string(), Some(*rate)),
        };
        Self {
            target,
            mode: mode_name,
            target_rate,
            threads,
            sockets,
            elapsed_seconds,
            sent: ByKind::from_array(s.sent),
            sent_total,
            sent_per_second_total: per_sec(sent_total),
            responses: ByKind::from_array(s.responses),
            responses_total,
            responses_per_second: ByKind::from_array(s.responses.map(per_sec)),
            responses_per_second_total: per_sec(responses_total),
            error_replies: ByKind::from_array(s.errors),
            malformed: Malformed::ALL
                .iter()
                .map(|m| (m.name(), s.malformed[m.index()]))
                .collect(),
            malformed_total: s.malformed.iter().sum(),
            unexpected_replies: s.unexpected,
            timeouts: ByKind::from_array(s.timeouts),
            loss: if sent_total == 0 {
                0.0
            } else {
                timeouts_total as f64 / sent_total as f64
            },
            socket_errors: s.socket_errors,
            send_blocked: s.send_blocked,
            skipped: s.skipped,
            latency: Latency::from_histogram(&s.latency),
            latency_by_kind: ByKind {
                connect: Latency::from_histogram(&s.latency_by_kind[0]),
                announce: Latency::from_histogram(&s.latency_by_kind[1]),
                scrape: Latency::from_histogram(&s.latency_by_kind[2]),
            },
            peers_per_announce: if s.responses[1] == 0 {
                0.0
            } else {
                s.peers_received as f64 / s.responses[1] as f64
            },
            peers_announced: s.peers_announced,
            connection_ids: s.connection_ids,
            client_cpu_seconds,
            responses_per_client_cpu_second: responses_total as f64 / client_cpu_seconds.max(1e-9),
            server,
        }
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
            "fjord-bench: {} ({rate}), {} threads, {} sockets, {:.2} s, {:.0} requests/s sent",
            self.target,
            self.threads,
            self.sockets,
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
                self.error_replies.connect
                    + self.error_replies.announce
                    + self.error_replies.scrape,
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
mod tests {
    use super::*;
    use crate::config::LoadMode;

    #[test]
    fn progress_line_shows_rates_since_the_last_line() {
        let prev = LiveTotals {
            sent: 100,
            responses: [10, 80, 5],
            ..Default::default()
        };
        let now = LiveTotals {
            sent: 300,
            responses: [20, 260, 15],
            errors: 1,
            malformed: 2,
            timeouts: 3,
        };
        let line = now.progress_line(&prev, 3.0, 2.0);
        assert!(line.contains("100 resp/s"), "{line}");
        assert!(line.contains("announce 90"), "{line}");
        assert!(line.contains("sent 100/s"), "{line}");
        assert!(line.contains("errors 1 malformed 2 timeouts 3"), "{line}");
    }

    #[test]
    fn merge_and_report_add_up() {
        let mut a = ThreadStats {
            sent: [2, 10, 1],
            ..Default::default()
        };
        a.record_response(Kind::Connect, 50_000);
        a.record_response(Kind::Announce, 100_000);
        a.peers_received = 7;
        let mut b = ThreadStats {
            sent: [1, 5, 0],
            ..Default::default()
        };
        b.record_response(Kind::Announce, 300_000);
        b.timeouts = [0, 1, 0];
        b.malformed[Malformed::WrongLength.index()] = 2;
        a.merge(&b);
        let r = Report::build(&a, "x".into(), &LoadMode::Closed, 2, 8, 2.0, 0.5, None);
        assert_eq!(r.sent_total, 19);
        assert_eq!(r.sent_per_second_total, 9.5);
        assert_eq!(r.responses.announce, 2);
        assert_eq!(r.responses_total, 3);
        assert_eq!(r.responses_per_second_total, 1.5);
        assert_eq!(r.malformed_total, 2);
        assert_eq!(r.malformed["wrong_length"], 2);
        assert_eq!(r.peers_per_announce, 3.5);
        assert!((r.loss - 1.0 / 19.0).abs() < 1e-12);
        assert_eq!(r.latency.count, 3);
        assert!(
            (299..=301).contains(&r.latency.max_us),
            "{}",
            r.latency.max_us
        );
        assert!((r.latency_by_kind.announce.p50_us as i64 - 100).abs() <= 1);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["responses"]["announce"], 2);
        assert!(r.to_table().contains("announce"));
    }
}
