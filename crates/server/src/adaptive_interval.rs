//! The load-adaptive announce interval: under sustained load the interval sent to clients rises
//! stepwise, and it falls back when calm. BEP 15 clients announce once per interval, so the
//! announce load is inversely proportional to it: doubling it halves that load without
//! refusing anyone.
//!
//! The maintenance thread owns an [`IntervalController`] and feeds it the datagrams the
//! workers received ([`IntervalController::observe`]); the interval in force is an
//! [`AnnounceInterval`] (one atomic), which the handler reads once per announce reply and the
//! metrics export as `fjord_announce_interval_seconds`.
//!
//! Rule, once per `window_secs` (the load is the mean over the window):
//! - load ≥ `load_fraction × capacity`: one step up (`step_secs`), up to `max_interval_secs`;
//! - below: one step down (not below `protocol.announce_interval_secs`) when the load it would
//!   bring stays below 90 % of that threshold. Clients of a shorter interval announce more
//!   often, so the load after a step down is estimated as `load × interval / shorter`; the
//!   10 % margin keeps the interval from flapping between two steps.
//!
//! Clients learn a new interval at their next announce, so a step takes up to one (old)
//! interval to show fully in the load; a window much shorter than the interval makes the
//! controller climb faster than the load can answer (it then steps down again once calm).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::config::AdaptiveIntervalConfig;

/// The announce interval in force (seconds), shared by the workers and the maintenance thread.
#[derive(Debug, Clone)]
pub struct AnnounceInterval(Arc<AtomicU32>);

impl AnnounceInterval {
    /// Starting at `secs`.
    pub fn new(secs: u32) -> Self {
        AnnounceInterval(Arc::new(AtomicU32::new(secs)))
    }
    /// The interval in force.
    #[inline]
    pub fn get(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }
    /// Puts `secs` in force.
    pub fn set(&self, secs: u32) {
        self.0.store(secs, Ordering::Relaxed);
    }
}

/// Decides the interval from the load (see the module docs).
#[derive(Debug, Clone)]
pub struct IntervalController {
    base: u32,
    max: u32,
    step: u32,
    window_ms: u64,
    threshold: f64,
    interval: AnnounceInterval,
    /// (milliseconds, datagrams received) at the start of the current window.
    window_start: Option<(u64, u64)>,
}

impl IntervalController {
    /// A controller starting at `base` (`protocol.announce_interval_secs`), writing into
    /// `interval`; `None` when `capacity_requests_per_sec` is 0 (off).
    pub fn from_config(
        c: &AdaptiveIntervalConfig,
        base: u32,
        interval: AnnounceInterval,
    ) -> Option<Self> {
        (c.capacity_requests_per_sec > 0).then(|| IntervalController {
            base,
            max: c.max_interval_secs.max(base),
            step: c.step_secs.max(1),
            window_ms: u64::from(c.window_secs.max(1)) * 1000,
            threshold: c.load_fraction * c.capacity_requests_per_sec as f64,
            interval,
            window_start: None,
        })
    }

    /// The datagrams received so far (all workers) at `now_ms` (any monotonic milliseconds).
    /// At the end of each window the interval may move one step; returns the interval in force.
    pub fn observe(&mut self, now_ms: u64, received: u64) -> u32 {
        let current = self.interval.get();
        let Some((start_ms, start_count)) = self.window_start else {
            self.window_start = Some((now_ms, received));
            return current;
        };
        let elapsed = now_ms.saturating_sub(start_ms);
        if elapsed < self.window_ms {
            return current;
        }
        self.window_start = Some((now_ms, received));
        let load = received.saturating_sub(start_count) as f64 * 1000.0 / elapsed as f64;
        let next = if load >= self.threshold {
            current.saturating_add(self.step).min(self.max)
        } else if current > self.base {
            let shorter = current.saturating_sub(self.step).max(self.base);
            let load_after = load * f64::from(current) / f64::from(shorter);
            if load_after < 0.9 * self.threshold {
                shorter
            } else {
                current
            }
        } else {
            current
        };
        if next != current {
            tracing::info!(
                "announce interval {next} s (was {current} s): {load:.0} datagrams/s over the \
                 last {} s, threshold {:.0}",
                elapsed / 1000,
                self.threshold
            );
            self.interval.set(next);
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn controller() -> (IntervalController, AnnounceInterval) {
        let c = AdaptiveIntervalConfig {
            capacity_requests_per_sec: 1000,
            load_fraction: 0.8,
            max_interval_secs: 3600,
            step_secs: 600,
            window_secs: 10,
        };
        let interval = AnnounceInterval::new(1800);
        (
            IntervalController::from_config(&c, 1800, interval.clone()).unwrap(),
            interval,
        )
    }

    /// Feeds `rate` datagrams per second for `windows` windows of 10 s; returns the intervals.
    fn run(
        c: &mut IntervalController,
        t: &mut u64,
        n: &mut u64,
        rate: u64,
        windows: usize,
    ) -> Vec<u32> {
        (0..windows)
            .map(|_| {
                *t += 10_000;
                *n += rate * 10;
                c.observe(*t, *n)
            })
            .collect()
    }

    #[test]
    fn rises_stepwise_under_load_and_falls_back_when_calm() {
        let (mut c, interval) = controller();
        let (mut t, mut n) = (0, 0);
        c.observe(t, n);
        assert_eq!(
            run(&mut c, &mut t, &mut n, 500, 2),
            [1800, 1800],
            "below 800/s"
        );
        assert_eq!(
            run(&mut c, &mut t, &mut n, 900, 5),
            [2400, 3000, 3600, 3600, 3600],
            "one step per window, up to the maximum"
        );
        assert_eq!(interval.get(), 3600);
        // 700/s at 3600 s would be 840/s at 3000 s: above 90 % of 800, so it holds.
        assert_eq!(run(&mut c, &mut t, &mut n, 700, 2), [3600, 3600]);
        // 590/s: 708/s at 3000 s (below 720: one step down), 737/s at 2400 s (holds).
        assert_eq!(run(&mut c, &mut t, &mut n, 590, 2), [3000, 3000]);
        // Calm: back to the configured interval, never below.
        assert_eq!(
            run(&mut c, &mut t, &mut n, 100, 4),
            [2400, 1800, 1800, 1800]
        );
    }

    #[test]
    fn off_without_a_capacity_and_no_decision_before_a_window_ends() {
        let c = AdaptiveIntervalConfig::default();
        assert!(IntervalController::from_config(&c, 1800, AnnounceInterval::new(1800)).is_none());
        let (mut c, _) = controller();
        c.observe(0, 0);
        assert_eq!(
            c.observe(9_999, 1_000_000),
            1800,
            "the window has not ended"
        );
        assert_eq!(c.observe(10_000, 1_000_000), 2400);
    }
}
