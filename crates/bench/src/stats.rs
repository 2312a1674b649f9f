//! Counters and latency histograms, kept per worker thread without sharing.
//!
//! Every request is accounted to the second **in which it was sent**: its reply (valid, error
//! or malformed), its latency or its timeout all land in that second's bucket, so a bucket's
//! loss is exactly "of the requests sent in this second, how many got no reply", and the
//! buckets add up to the totals. Requests sent before the warm-up ends are kept in the
//! per-second buckets but left out of the summary ([`ThreadStats::summary`]). Events that
//! belong to no request (a reply matching nothing, a socket error, a skipped send) are
//! accounted to the second they happen in.

use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;

use crate::validate::{Issued, Kind, Malformed};

/// Highest latency recorded exactly, in microseconds (60 s); slower replies saturate.
pub const MAX_LATENCY_US: u64 = 60_000_000;

const NS_PER_SECOND: u64 = 1_000_000_000;

/// A histogram for the summary: 3 significant digits, 1 µs to 60 s.
pub fn summary_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("static histogram bounds")
}

/// A histogram for one second: 2 significant digits (percentiles within 1 %), growing only as
/// far as the slowest reply recorded, so a long run's buckets stay small.
fn second_histogram() -> Histogram<u32> {
    Histogram::new(2).expect("static histogram precision")
}

fn latency_us(issued: &Issued, now_ns: u64) -> u64 {
    (now_ns.saturating_sub(issued.sent_ns) / 1000).clamp(1, MAX_LATENCY_US)
}

/// Counts of one second, or of the measured window.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Requests sent, by kind.
    pub sent: [u64; 3],
    /// Valid replies, by kind.
    pub responses: [u64; 3],
    /// Error replies, by kind of request.
    pub errors: [u64; 3],
    /// Malformed replies, by reason.
    pub malformed: [u64; 5],
    /// Requests unanswered within the timeout, by kind.
    pub timeouts: [u64; 3],
    /// Replies matching no outstanding request.
    pub unexpected: u64,
    /// Socket errors: send calls that failed other than for a full buffer, and errors the
    /// kernel queued on a socket (ICMP port unreachable: nothing listens at the target).
    pub socket_errors: u64,
    /// Datagrams not sent because the socket's send buffer was full (retried later).
    pub send_blocked: u64,
    /// Open loop: scheduled requests skipped because every slot was in flight.
    pub skipped: u64,
    /// Peer entries received in announce replies.
    pub peers_received: u64,
}

impl Counts {
    /// Adds `o` to these counts.
    pub fn add(&mut self, o: &Counts) {
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
    }

    /// Requests sent in all.
    pub fn sent_total(&self) -> u64 {
        self.sent.iter().sum()
    }

    /// Valid replies in all.
    pub fn responses_total(&self) -> u64 {
        self.responses.iter().sum()
    }

    /// Error replies in all.
    pub fn errors_total(&self) -> u64 {
        self.errors.iter().sum()
    }

    /// Malformed replies in all.
    pub fn malformed_total(&self) -> u64 {
        self.malformed.iter().sum()
    }

    /// Timeouts in all.
    pub fn timeouts_total(&self) -> u64 {
        self.timeouts.iter().sum()
    }

    /// Requests that got no reply in time, as a fraction of those due: timeouts plus (open
    /// loop) requests skipped because every in-flight slot was taken, over sent plus skipped.
    pub fn loss(&self) -> f64 {
        let due = self.sent_total() + self.skipped;
        if due == 0 {
            0.0
        } else {
            (self.timeouts_total() + self.skipped) as f64 / due as f64
        }
    }
}

/// One second of a run.
#[derive(Clone, Debug)]
pub struct SecondStats {
    /// Its counts.
    pub counts: Counts,
    /// Latency of the valid replies to requests sent in this second, all kinds, µs.
    pub latency: Histogram<u32>,
}

impl Default for SecondStats {
    fn default() -> Self {
        Self {
            counts: Counts::default(),
            latency: second_histogram(),
        }
    }
}

impl SecondStats {
    /// Adds another thread's same second.
    pub fn merge(&mut self, o: &SecondStats) {
        self.counts.add(&o.counts);
        self.latency
            .add(&o.latency)
            .expect("auto-resizing histogram");
    }
}

/// Counts kept by one worker thread (no sharing, no atomics).
#[derive(Clone, Debug)]
pub struct ThreadStats {
    /// Requests sent from this time on (ns since the start) count in the summary: the end
    /// of the warm-up.
    pub window_start_ns: u64,
    /// Counts of the requests sent after the warm-up (and of other events after it).
    pub summary: Counts,
    /// Latency of valid replies in the summary, all kinds, µs.
    pub latency: Histogram<u64>,
    /// Latency by kind in the summary, µs.
    pub latency_by_kind: [Histogram<u64>; 3],
    /// Connection ids obtained over the whole run.
    pub connection_ids: u64,
    /// Distinct simulated peers that announced at least once.
    pub peers_announced: u64,
    /// Every second of the run, warm-up included; index = second since the start.
    pub seconds: Vec<SecondStats>,
}

impl Default for ThreadStats {
    fn default() -> Self {
        Self::new(0)
    }
}

impl ThreadStats {
    /// Empty counts whose summary starts at `window_start_ns`.
    pub fn new(window_start_ns: u64) -> Self {
        Self {
            window_start_ns,
            summary: Counts::default(),
            latency: summary_histogram(),
            latency_by_kind: [
                summary_histogram(),
                summary_histogram(),
                summary_histogram(),
            ],
            connection_ids: 0,
            peers_announced: 0,
            seconds: Vec::new(),
        }
    }

    fn second(&mut self, at_ns: u64) -> &mut SecondStats {
        let i = (at_ns / NS_PER_SECOND) as usize;
        if i >= self.seconds.len() {
            self.seconds.resize_with(i + 1, SecondStats::default);
        }
        &mut self.seconds[i]
    }

    /// Applies `f` to the second of `at_ns` and, after the warm-up, to the summary.
    fn count(&mut self, at_ns: u64, f: impl Fn(&mut Counts)) {
        f(&mut self.second(at_ns).counts);
        if at_ns >= self.window_start_ns {
            f(&mut self.summary);
        }
    }

    /// A request of `kind` went out at `now_ns`.
    pub fn sent(&mut self, kind: Kind, now_ns: u64) {
        self.count(now_ns, |c| c.sent[kind.index()] += 1);
    }

    /// A request counted by [`sent`](Self::sent) did not go out after all.
    pub fn unsent(&mut self, issued: &Issued) {
        self.count(issued.sent_ns, |c| {
            c.sent[issued.kind.index()] = c.sent[issued.kind.index()].saturating_sub(1);
        });
    }

    /// A valid reply to `issued` arrived at `now_ns`.
    pub fn response(&mut self, issued: &Issued, now_ns: u64) {
        let kind = issued.kind.index();
        let us = latency_us(issued, now_ns);
        let sec = self.second(issued.sent_ns);
        sec.counts.responses[kind] += 1;
        // Auto-resizing: grows up to `us` (at most 60 s), so recording cannot fail.
        let _ = sec.latency.record(us);
        if issued.sent_ns >= self.window_start_ns {
            self.summary.responses[kind] += 1;
            self.latency.saturating_record(us);
            self.latency_by_kind[kind].saturating_record(us);
        }
    }

    /// An announce reply to `issued` carried `peers` peer entries.
    pub fn peers_received(&mut self, issued: &Issued, peers: u32) {
        self.count(issued.sent_ns, |c| c.peers_received += u64::from(peers));
    }

    /// An error reply to `issued`.
    pub fn error_reply(&mut self, issued: &Issued) {
        self.count(issued.sent_ns, |c| c.errors[issued.kind.index()] += 1);
    }

    /// A malformed reply to `issued`.
    pub fn malformed(&mut self, issued: &Issued, reason: Malformed) {
        self.count(issued.sent_ns, |c| c.malformed[reason.index()] += 1);
    }

    /// `issued` got no reply within the timeout.
    pub fn timeout(&mut self, issued: &Issued) {
        self.count(issued.sent_ns, |c| c.timeouts[issued.kind.index()] += 1);
    }

    /// A reply matching no outstanding request arrived at `now_ns`.
    pub fn unexpected(&mut self, now_ns: u64) {
        self.count(now_ns, |c| c.unexpected += 1);
    }

    /// A socket error at `now_ns`.
    pub fn socket_error(&mut self, now_ns: u64) {
        self.count(now_ns, |c| c.socket_errors += 1);
    }

    /// `n` datagrams found the send buffer full at `now_ns`.
    pub fn send_blocked(&mut self, n: u64, now_ns: u64) {
        self.count(now_ns, |c| c.send_blocked += n);
    }

    /// Open loop: `n` scheduled requests skipped at `now_ns` for want of an in-flight slot.
    pub fn skipped(&mut self, n: u64, now_ns: u64) {
        self.count(now_ns, |c| c.skipped += n);
    }

    /// Adds another thread's counts (with the same warm-up).
    pub fn merge(&mut self, o: &ThreadStats) {
        self.summary.add(&o.summary);
        self.connection_ids += o.connection_ids;
        self.peers_announced += o.peers_announced;
        self.latency.add(&o.latency).expect("same bounds");
        for (a, b) in self.latency_by_kind.iter_mut().zip(&o.latency_by_kind) {
            a.add(b).expect("same bounds");
        }
        if o.seconds.len() > self.seconds.len() {
            self.seconds
                .resize_with(o.seconds.len(), SecondStats::default);
        }
        for (a, b) in self.seconds.iter_mut().zip(&o.seconds) {
            a.merge(b);
        }
    }

    /// Copies the running totals (warm-up included) into the shared live counters.
    pub fn publish(&self, live: &LiveCounters) {
        let mut all = Counts::default();
        for s in &self.seconds {
            all.add(&s.counts);
        }
        live.sent.store(all.sent_total(), Ordering::Relaxed);
        for i in 0..3 {
            live.responses[i].store(all.responses[i], Ordering::Relaxed);
        }
        live.errors.store(all.errors_total(), Ordering::Relaxed);
        live.malformed
            .store(all.malformed_total(), Ordering::Relaxed);
        live.timeouts.store(all.timeouts_total(), Ordering::Relaxed);
        live.socket_errors
            .store(all.socket_errors, Ordering::Relaxed);
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
    /// Socket errors.
    pub socket_errors: AtomicU64,
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
    /// Socket errors.
    pub socket_errors: u64,
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
            t.socket_errors += l.socket_errors.load(Ordering::Relaxed);
        }
        t
    }

    /// One progress line describing the change since `prev` over `secs` seconds.
    pub fn progress_line(&self, prev: &Self, elapsed: f64, secs: f64) -> String {
        let d = |a: u64, b: u64| (a.saturating_sub(b)) as f64 / secs.max(1e-9);
        let total: u64 = self.responses.iter().sum();
        let prev_total: u64 = prev.responses.iter().sum();
        format!(
            "[{elapsed:6.1}s] {:>10.0} resp/s (connect {:.0}, announce {:.0}, scrape {:.0}) | sent {:.0}/s | errors {} malformed {} timeouts {} socket errors {}",
            d(total, prev_total),
            d(self.responses[0], prev.responses[0]),
            d(self.responses[1], prev.responses[1]),
            d(self.responses[2], prev.responses[2]),
            d(self.sent, prev.sent),
            self.errors,
            self.malformed,
            self.timeouts,
            self.socket_errors,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issued(kind: Kind, sent_ns: u64) -> Issued {
        Issued::new(kind, 0, sent_ns)
    }

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
            socket_errors: 4,
        };
        let line = now.progress_line(&prev, 3.0, 2.0);
        assert!(line.contains("100 resp/s"), "{line}");
        assert!(line.contains("announce 90"), "{line}");
        assert!(line.contains("sent 100/s"), "{line}");
        assert!(
            line.contains("errors 1 malformed 2 timeouts 3 socket errors 4"),
            "{line}"
        );
    }

    #[test]
    fn requests_are_accounted_to_the_second_they_were_sent_in() {
        let s = 1_000_000_000;
        // Warm-up ends at 1.5 s.
        let mut t = ThreadStats::new(s + s / 2);
        let early = issued(Kind::Announce, s / 2);
        let mid = issued(Kind::Announce, s + s / 4); // second 1, still warm-up
        let late = issued(Kind::Scrape, s + 3 * s / 4); // second 1, measured
        for i in [&early, &mid, &late] {
            t.sent(i.kind, i.sent_ns);
        }
        // Replies arrive in later seconds but count where their request was sent.
        t.response(&early, 2 * s);
        t.response(&late, 2 * s + 10_000);
        t.timeout(&mid);
        t.skipped(3, 2 * s + 1);
        assert_eq!(t.seconds.len(), 3);
        assert_eq!(t.seconds[0].counts.sent, [0, 1, 0]);
        assert_eq!(t.seconds[0].counts.responses, [0, 1, 0]);
        assert_eq!(t.seconds[1].counts.sent, [0, 1, 1]);
        assert_eq!(t.seconds[1].counts.responses, [0, 0, 1]);
        assert_eq!(t.seconds[1].counts.timeouts, [0, 1, 0]);
        assert_eq!(t.seconds[1].counts.loss(), 0.5);
        assert_eq!(t.seconds[2].counts.skipped, 3);
        assert_eq!(t.seconds[0].latency.len(), 1);
        let max = t.seconds[0].latency.max();
        assert!((max as i64 - 1_500_000).abs() < 20_000, "{max}");
        // The summary has only what was sent after 1.5 s (and the skip at 2 s).
        assert_eq!(t.summary.sent, [0, 0, 1]);
        assert_eq!(t.summary.responses, [0, 0, 1]);
        assert_eq!(t.summary.timeouts_total(), 0);
        assert_eq!(t.summary.skipped, 3);
        assert_eq!(t.latency.len(), 1);
        assert!(
            (249_000..=251_000).contains(&t.latency.max()),
            "{}",
            t.latency.max()
        );
        // A request that did not go out is taken back where it was counted.
        let unsent = issued(Kind::Connect, 2 * s + 5);
        t.sent(Kind::Connect, unsent.sent_ns);
        t.unsent(&unsent);
        assert_eq!(t.seconds[2].counts.sent, [0, 0, 0]);
        assert_eq!(t.summary.sent, [0, 0, 1]);
    }

    #[test]
    fn merge_adds_summaries_and_seconds() {
        let mut a = ThreadStats::new(0);
        a.sent(Kind::Connect, 10);
        a.response(&issued(Kind::Connect, 10), 50_010);
        let mut b = ThreadStats::new(0);
        for at in [20, 1_000_000_020, 2_000_000_020] {
            b.sent(Kind::Announce, at);
            b.response(&issued(Kind::Announce, at), at + 100_000);
        }
        b.peers_received(&issued(Kind::Announce, 20), 7);
        a.merge(&b);
        assert_eq!(a.seconds.len(), 3);
        assert_eq!(a.seconds[0].counts.responses, [1, 1, 0]);
        assert_eq!(a.seconds[0].latency.len(), 2);
        assert_eq!(a.seconds[2].counts.responses, [0, 1, 0]);
        assert_eq!(a.summary.responses, [1, 3, 0]);
        assert_eq!(a.summary.peers_received, 7);
        assert_eq!(a.latency.len(), 4);
        assert_eq!(a.latency_by_kind[1].len(), 3);
        let live = LiveCounters::default();
        a.publish(&live);
        assert_eq!(live.sent.load(Ordering::Relaxed), 4);
        assert_eq!(live.responses[1].load(Ordering::Relaxed), 3);
    }
}
