//! Capacity search: "how much will this tracker take before it breaks?"
//!
//! A sequence of open-loop steps, each a short run at a fixed offered rate, judged against
//! the limits (loss, p99, p99.9). From `start_rate` the rate is multiplied by `ramp_factor`
//! while steps pass (divided while they fail, down to `lowest_rate`); once a passing rate
//! `lo` and a failing rate `hi` are known, the midpoint is tried until `(hi - lo) / lo` is
//! at most `resolution`. The capacity is the highest passing rate below the lowest failing
//! one. Every step is kept: its offered and answered rates and latency make the capacity
//! curve.
//!
//! Open loop matters here: in closed loop a slow tracker slows the generator down with it,
//! and its latency looks fine while the queue is hidden in the generator. At a fixed offered
//! rate an overloaded tracker shows itself as loss and growing latency.
//!
//! A step whose generator could not offer its rate (fjord-bench itself out of CPU) does not
//! measure the tracker: the search stops there and the capacity is reported as a lower bound.

use std::time::Instant;

use serde::Serialize;

use crate::report::{Report, RunSettings, ToolInfo};
use crate::thresholds::{Breach, Thresholds, duration_us, percent};

/// Below this fraction of its target rate a step's generator is taken to have fallen short.
pub const GENERATOR_SHORTFALL: f64 = 0.9;

/// How the search proceeds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct SearchSettings {
    /// Rate of the first step, requests/s.
    pub start_rate: f64,
    /// Factor between steps until the first pass and the first failure are known.
    pub ramp_factor: f64,
    /// Stop bisecting when `(hi - lo) / lo` is at most this.
    pub resolution: f64,
    /// Most steps in all.
    pub max_steps: usize,
    /// Do not go below this rate when even the first step fails.
    pub lowest_rate: f64,
    /// What a step must stay within (loss, p99, p99.9; `min_rate` is for the capacity).
    pub limits: Thresholds,
    /// Seconds each step sends (warm-up included).
    pub step_seconds: f64,
    /// Seconds of each step left out of its judgement.
    pub step_warmup_seconds: f64,
}

impl SearchSettings {
    /// Checks the settings.
    pub fn validate(&self) -> anyhow::Result<()> {
        use anyhow::ensure;
        ensure!(
            self.start_rate > 0.0 && self.start_rate.is_finite(),
            "--start-rate must be positive"
        );
        ensure!(
            self.ramp_factor > 1.0 && self.ramp_factor.is_finite(),
            "--ramp-factor must be above 1"
        );
        ensure!(
            self.resolution > 0.0 && self.resolution < self.ramp_factor - 1.0,
            "--resolution must be positive and below --ramp-factor - 1"
        );
        ensure!(self.max_steps >= 2, "--max-steps must be at least 2");
        ensure!(
            self.lowest_rate > 0.0 && self.lowest_rate <= self.start_rate,
            "the lowest rate must be positive and at most --start-rate"
        );
        ensure!(
            self.limits.max_loss.is_some() || self.limits.max_p99_us.is_some(),
            "capacity mode needs --max-loss or --max-p99"
        );
        Ok(())
    }
}

/// One step of the search.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Step {
    /// 0-based.
    pub index: usize,
    /// The offered rate asked for, requests/s.
    pub rate: f64,
    /// What the generator actually offered (sent + skipped per second).
    pub offered_per_second: f64,
    /// Valid replies per second.
    pub replies_per_second: f64,
    /// Loss (timeouts + skipped over sent + skipped).
    pub loss: f64,
    /// Median latency, µs (none if nothing was answered).
    pub p50_us: Option<u64>,
    /// 99th percentile, µs.
    pub p99_us: Option<u64>,
    /// 99.9th percentile, µs.
    pub p999_us: Option<u64>,
    /// Whether the tracker kept every limit (loss, p99, p99.9) at what was offered.
    pub passed: bool,
    /// The generator offered less than [`GENERATOR_SHORTFALL`] of `rate`.
    pub generator_limited: bool,
    /// The limits it broke, and "generator" when fjord-bench fell short of the rate.
    pub breaches: Vec<Breach>,
    /// When it started, seconds since the search started.
    pub started_at_seconds: f64,
    /// Its full report (with its per-second series).
    pub report: Report,
}

impl Step {
    /// Judges `report`, the run at `rate`.
    pub fn judge(
        index: usize,
        rate: f64,
        started_at_seconds: f64,
        limits: &Thresholds,
        report: Report,
    ) -> Self {
        let answered = report.latency.count > 0;
        let per_step = Thresholds {
            min_rate: None,
            ..*limits
        };
        let mut breaches = per_step.check(&report);
        let generator_limited = report.offered_per_second_total < GENERATOR_SHORTFALL * rate;
        if generator_limited {
            breaches.push(Breach {
                limit: "generator",
                text: format!(
                    "fjord-bench offered only {:.0} of {rate:.0} requests/s",
                    report.offered_per_second_total
                ),
            });
        }
        Self {
            index,
            rate,
            offered_per_second: report.offered_per_second_total,
            replies_per_second: report.responses_per_second_total,
            loss: report.loss,
            p50_us: answered.then_some(report.latency.p50_us),
            p99_us: answered.then_some(report.latency.p99_us),
            p999_us: answered.then_some(report.latency.p999_us),
            passed: breaches.iter().all(|b| b.limit == "generator"),
            generator_limited,
            breaches,
            started_at_seconds,
            report,
        }
    }

    /// One line for the progress output.
    pub fn line(&self) -> String {
        let lat = |v: Option<u64>| v.map_or_else(|| "-".to_string(), duration_us);
        let verdict = if self.breaches.is_empty() {
            "ok".to_string()
        } else {
            let why = self
                .breaches
                .iter()
                .map(|b| b.text.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            if self.passed {
                format!("ok, but {why}")
            } else {
                why
            }
        };
        format!(
            "step {:>2}: offered {:>9.0}/s -> answered {:>9.0}/s, loss {}, p50 {}, p99 {}: {verdict}",
            self.index + 1,
            self.offered_per_second,
            self.replies_per_second,
            percent(self.loss),
            lat(self.p50_us),
            lat(self.p99_us),
        )
    }
}

/// The result of a search.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Capacity {
    /// The highest rate that passed, requests/s (for a generator-limited step, what was
    /// actually offered).
    pub rate: f64,
    /// Valid replies per second at that rate.
    pub replies_per_second: f64,
    /// p99 at that rate, µs.
    pub p99_us: Option<u64>,
    /// Loss at that rate.
    pub loss: f64,
    /// The lowest rate that failed, if any.
    pub lowest_failing_rate: Option<f64>,
    /// True when no rate above `rate` failed: the tracker may take more (the generator fell
    /// short, or the steps ran out, or the search was stopped).
    pub lower_bound: bool,
}

/// Why the search ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SearchEnd {
    /// Failing and passing rates are within the resolution.
    Resolved,
    /// The generator could not offer more.
    GeneratorLimited,
    /// `max_steps` were used up.
    OutOfSteps,
    /// Even the lowest rate failed.
    NothingPassed,
    /// Stopped from outside (Ctrl-C).
    Stopped,
}

/// The report of a capacity search.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SearchReport {
    /// The build of fjord-bench.
    pub tool: ToolInfo,
    /// The command line, if run from one.
    pub command: Option<Vec<String>>,
    /// "capacity".
    pub mode: &'static str,
    /// The tracker as given.
    pub target: String,
    /// The address it resolved to.
    pub target_address: String,
    /// The first connects, before the first step.
    pub probe: crate::probe::ProbeReply,
    /// The settings every step shares (rate and in-flight aside; see each step's report).
    pub settings: RunSettings,
    /// How the search proceeded.
    pub search: SearchSettings,
    /// Every step, in the order run.
    pub steps: Vec<Step>,
    /// The capacity found, if any rate passed.
    pub capacity: Option<Capacity>,
    /// Why the search ended.
    pub end: SearchEnd,
    /// The finding in one sentence.
    pub conclusion: String,
}

impl SearchReport {
    /// The steps sorted by rate (the capacity curve).
    pub fn curve(&self) -> Vec<&Step> {
        let mut v: Vec<&Step> = self.steps.iter().collect();
        v.sort_by(|a, b| a.rate.total_cmp(&b.rate));
        v
    }

    /// The curve as CSV, one row per step sorted by rate.
    pub fn curve_csv(&self) -> String {
        let mut out = String::from(
            "rate,offered_per_s,replies_per_s,loss,p50_us,p99_us,p999_us,passed,generator_limited,step\n",
        );
        let opt = |v: Option<u64>| v.map_or_else(String::new, |v| v.to_string());
        for s in self.curve() {
            out.push_str(&format!(
                "{:.0},{:.1},{:.1},{:.6},{},{},{},{},{},{}\n",
                s.rate,
                s.offered_per_second,
                s.replies_per_second,
                s.loss,
                opt(s.p50_us),
                opt(s.p99_us),
                opt(s.p999_us),
                s.passed,
                s.generator_limited,
                s.index + 1
            ));
        }
        out
    }

    /// The per-second series of every step as CSV: the step number and its rate, then the
    /// columns of [`crate::report::SERIES_CSV_HEADER`].
    pub fn series_csv(&self) -> String {
        let mut out = format!("step,rate,{}\n", crate::report::SERIES_CSV_HEADER);
        for s in &self.steps {
            for r in &s.report.series {
                out.push_str(&format!(
                    "{},{:.0},{}\n",
                    s.index + 1,
                    s.rate,
                    crate::report::series_csv_line(r)
                ));
            }
        }
        out
    }

    /// The human-readable summary: the curve, then the conclusion.
    pub fn to_table(&self) -> String {
        let mut o = format!(
            "fjord-bench {}: capacity of {} ({}), limits: {}\n\n",
            crate::report::VERSION,
            self.target,
            self.target_address,
            limits_text(&self.search.limits)
        );
        o.push_str(&format!(
            "{:>12} {:>12} {:>12} {:>9} {:>10} {:>10} {:>10}  verdict\n",
            "offered/s", "sent+skip/s", "answered/s", "loss", "p50", "p99", "p99.9"
        ));
        let lat = |v: Option<u64>| v.map_or_else(|| "-".to_string(), duration_us);
        for s in self.curve() {
            o.push_str(&format!(
                "{:>12.0} {:>12.0} {:>12.0} {:>9} {:>10} {:>10} {:>10}  {}\n",
                s.rate,
                s.offered_per_second,
                s.replies_per_second,
                percent(s.loss),
                lat(s.p50_us),
                lat(s.p99_us),
                lat(s.p999_us),
                match (s.passed, s.generator_limited) {
                    (true, false) => "ok",
                    (true, true) => "ok (generator fell short)",
                    (false, _) => "FAIL",
                }
            ));
        }
        o.push('\n');
        o.push_str(&self.conclusion);
        o.push('\n');
        o
    }
}

/// The limits in words.
pub fn limits_text(t: &Thresholds) -> String {
    let mut parts = Vec::new();
    if let Some(l) = t.max_loss {
        parts.push(format!("loss <= {}", percent(l)));
    }
    if let Some(v) = t.max_p99_us {
        parts.push(format!("p99 <= {}", duration_us(v)));
    }
    if let Some(v) = t.max_p999_us {
        parts.push(format!("p99.9 <= {}", duration_us(v)));
    }
    parts.join(", ")
}

/// What [`search`] found.
#[derive(Debug)]
pub struct SearchOutcome {
    /// Every step.
    pub steps: Vec<Step>,
    /// The capacity, if any rate passed.
    pub capacity: Option<Capacity>,
    /// Why it ended.
    pub end: SearchEnd,
    /// One sentence.
    pub conclusion: String,
}

/// Runs the search. `run_step(index, rate)` runs one open-loop step and returns its report,
/// or `None` if the search is to stop (Ctrl-C); `on_step` sees every judged step.
pub fn search(
    settings: &SearchSettings,
    mut run_step: impl FnMut(usize, f64) -> anyhow::Result<Option<Report>>,
    mut on_step: impl FnMut(&Step),
) -> anyhow::Result<SearchOutcome> {
    settings.validate()?;
    let started = Instant::now();
    let mut steps: Vec<Step> = Vec::new();
    // Index of the highest passing step, and the lowest failing rate.
    let mut lo: Option<usize> = None;
    let mut hi: Option<f64> = None;
    let mut rate = settings.start_rate;
    let end = loop {
        if steps.len() >= settings.max_steps {
            break SearchEnd::OutOfSteps;
        }
        let index = steps.len();
        let at = started.elapsed().as_secs_f64();
        let Some(report) = run_step(index, rate)? else {
            break SearchEnd::Stopped;
        };
        let step = Step::judge(index, rate, at, &settings.limits, report);
        on_step(&step);
        let (passed, limited) = (step.passed, step.generator_limited);
        steps.push(step);
        if passed {
            lo = Some(index);
        } else {
            hi = Some(hi.map_or(rate, |h| h.min(rate)));
        }
        if limited {
            // Nothing above what the generator managed can be offered from here.
            break SearchEnd::GeneratorLimited;
        }
        rate = match (lo.map(|i| steps[i].rate), hi) {
            (Some(l), None) => l * settings.ramp_factor,
            (None, Some(h)) => {
                let next = h / settings.ramp_factor;
                if next < settings.lowest_rate {
                    break SearchEnd::NothingPassed;
                }
                next
            }
            (Some(l), Some(h)) => {
                if (h - l) / l <= settings.resolution {
                    break SearchEnd::Resolved;
                }
                (l + h) / 2.0
            }
            (None, None) => unreachable!("a step either passed or failed"),
        };
    };
    let capacity = lo.map(|i| {
        let s = &steps[i];
        Capacity {
            rate: if s.generator_limited {
                s.offered_per_second
            } else {
                s.rate
            },
            replies_per_second: s.replies_per_second,
            p99_us: s.p99_us,
            loss: s.loss,
            lowest_failing_rate: hi,
            lower_bound: end != SearchEnd::Resolved,
        }
    });
    let conclusion = conclude(settings, &steps, capacity.as_ref(), end);
    Ok(SearchOutcome {
        steps,
        capacity,
        end,
        conclusion,
    })
}

fn conclude(
    settings: &SearchSettings,
    steps: &[Step],
    capacity: Option<&Capacity>,
    end: SearchEnd,
) -> String {
    let limits = limits_text(&settings.limits);
    let failing = |rate: f64| {
        steps
            .iter()
            .find(|s| s.rate == rate && !s.passed)
            .map(|s| {
                s.breaches
                    .iter()
                    .map(|b| b.text.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default()
    };
    match (capacity, end) {
        (Some(c), SearchEnd::Resolved) => format!(
            "capacity: {:.0} requests/s ({:.0} replies/s, loss {}, p99 {}): the highest rate offered with {limits}; {:.0}/s failed ({})",
            c.rate,
            c.replies_per_second,
            percent(c.loss),
            c.p99_us.map_or_else(|| "-".into(), duration_us),
            c.lowest_failing_rate.unwrap_or(f64::NAN),
            failing(c.lowest_failing_rate.unwrap_or(f64::NAN))
        ),
        (Some(c), SearchEnd::GeneratorLimited) => format!(
            "capacity: at least {:.0} requests/s. fjord-bench could not offer more from here (it ran out of CPU): give it more --threads or cores, or run it on several machines",
            c.rate
        ),
        (Some(c), SearchEnd::OutOfSteps) => format!(
            "capacity: at least {:.0} requests/s{}; the search ran out of steps (--max-steps {}) before it was resolved to {}",
            c.rate,
            c.lowest_failing_rate
                .map_or_else(String::new, |h| format!(", below {h:.0}")),
            settings.max_steps,
            percent(settings.resolution)
        ),
        (Some(c), _) => format!(
            "stopped after {} steps: capacity at least {:.0} requests/s",
            steps.len(),
            c.rate
        ),
        (None, SearchEnd::Stopped) => format!(
            "stopped after {} steps, before any rate passed",
            steps.len()
        ),
        (None, _) => {
            let lowest = steps.iter().map(|s| s.rate).fold(f64::INFINITY, f64::min);
            format!(
                "no capacity found: even {lowest:.0} requests/s, the lowest rate tried, broke the limits ({}); lower --start-rate or relax the limits",
                failing(lowest)
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BenchConfig;
    use crate::report::Timing;
    use crate::stats::ThreadStats;
    use crate::validate::{Issued, Kind};

    /// A report of a step at `rate` against a simulated tracker that answers at most
    /// `capacity` requests/s with 100 µs latency, and whose generator offers at most
    /// `generator` requests/s.
    fn simulated(rate: f64, capacity: f64, generator: f64) -> Report {
        let offered = rate.min(generator);
        let answered = offered.min(capacity);
        let mut t = ThreadStats::new(0);
        let (sent, ok) = (offered.round() as u64, answered.round() as u64);
        for k in 0..sent {
            let i = Issued::new(Kind::Announce, 0, k * 1_000_000_000 / sent);
            t.sent(i.kind, i.sent_ns);
            if k < ok {
                t.response(&i, i.sent_ns + 100_000);
            } else {
                t.timeout(&i);
            }
        }
        let timing = Timing {
            warmup: 0.0,
            sending_end: 1.0,
            last_activity: 1.0,
        };
        Report::build(
            &t,
            &BenchConfig::quick("127.0.0.1:1".parse().unwrap()),
            timing,
            0.1,
            None,
        )
    }

    fn settings(start: f64) -> SearchSettings {
        SearchSettings {
            start_rate: start,
            ramp_factor: 2.0,
            resolution: 0.05,
            max_steps: 30,
            lowest_rate: 10.0,
            limits: Thresholds {
                max_loss: Some(0.01),
                max_p99_us: Some(10_000),
                ..Thresholds::default()
            },
            step_seconds: 1.0,
            step_warmup_seconds: 0.0,
        }
    }

    fn run(s: &SearchSettings, capacity: f64, generator: f64) -> SearchOutcome {
        search(
            s,
            |_, rate| Ok(Some(simulated(rate, capacity, generator))),
            |_| {},
        )
        .unwrap()
    }

    #[test]
    fn ramps_up_then_bisects_to_the_resolution() {
        let out = run(&settings(100.0), 3_000.0, f64::INFINITY);
        assert_eq!(out.end, SearchEnd::Resolved);
        let c = out.capacity.unwrap();
        assert!(!c.lower_bound);
        // Loss up to 1 % passes, so the true limit is 3000 · 1/0.99 ≈ 3030.
        let hi = c.lowest_failing_rate.unwrap();
        assert!(c.rate <= 3_031.0 && hi > 3_030.0, "{c:?}");
        assert!((hi - c.rate) / c.rate <= 0.05, "{c:?}");
        let rates: Vec<f64> = out.steps.iter().map(|s| s.rate).collect();
        assert_eq!(
            &rates[..7],
            &[100.0, 200.0, 400.0, 800.0, 1600.0, 3200.0, 2400.0]
        );
        assert!(
            out.conclusion.starts_with("capacity: "),
            "{}",
            out.conclusion
        );
    }

    #[test]
    fn descends_when_the_first_step_fails() {
        let out = run(&settings(10_000.0), 700.0, f64::INFINITY);
        assert_eq!(out.end, SearchEnd::Resolved);
        let c = out.capacity.unwrap();
        assert!(c.rate <= 707.0 && c.rate >= 700.0 * 0.95, "{c:?}");
        assert_eq!(out.steps[1].rate, 5_000.0);
        assert!(!out.steps[0].passed);
    }

    #[test]
    fn a_generator_that_falls_short_gives_a_lower_bound() {
        let out = run(&settings(1_000.0), 1e9, 5_000.0);
        assert_eq!(out.end, SearchEnd::GeneratorLimited);
        let c = out.capacity.unwrap();
        assert!(c.lower_bound);
        assert_eq!(c.rate, 5_000.0, "what was really offered");
        assert!(
            out.conclusion.contains("at least 5000"),
            "{}",
            out.conclusion
        );
        let last = out.steps.last().unwrap();
        assert!(last.generator_limited && last.rate == 8_000.0);
    }

    #[test]
    fn nothing_passing_and_running_out_of_steps_are_said() {
        let out = run(&settings(160.0), 1.0, f64::INFINITY);
        assert_eq!(out.end, SearchEnd::NothingPassed);
        assert!(out.capacity.is_none());
        assert!(
            out.conclusion
                .starts_with("no capacity found: even 10 requests/s"),
            "{}",
            out.conclusion
        );
        let mut s = settings(100.0);
        s.max_steps = 3;
        let out = run(&s, 1e9, f64::INFINITY);
        assert_eq!(out.end, SearchEnd::OutOfSteps);
        let c = out.capacity.unwrap();
        assert!(c.lower_bound && c.rate == 400.0);
        // Stopping from outside ends the search with what was found.
        let out = search(
            &settings(100.0),
            |i, rate| Ok((i < 2).then(|| simulated(rate, 1e9, 1e9))),
            |_| {},
        )
        .unwrap();
        assert_eq!((out.end, out.steps.len()), (SearchEnd::Stopped, 2));
    }

    #[test]
    fn the_curve_and_its_csv_are_sorted_by_rate() {
        let s = settings(100.0);
        let out = run(&s, 1_000.0, f64::INFINITY);
        let report = SearchReport {
            tool: ToolInfo::current(),
            command: None,
            mode: "capacity",
            target: "udp://127.0.0.1:1".into(),
            target_address: "127.0.0.1:1".into(),
            probe: crate::probe::ProbeReply {
                connects: 1,
                round_trip_us: 10,
            },
            settings: RunSettings::of(&BenchConfig::quick("127.0.0.1:1".parse().unwrap())),
            search: s,
            steps: out.steps,
            capacity: out.capacity,
            end: out.end,
            conclusion: out.conclusion,
        };
        let rates: Vec<f64> = report.curve().iter().map(|s| s.rate).collect();
        assert!(rates.windows(2).all(|w| w[0] <= w[1]), "{rates:?}");
        let csv = report.curve_csv();
        assert_eq!(csv.lines().count(), report.steps.len() + 1);
        assert!(csv.lines().nth(1).unwrap().starts_with("100,"));
        let series = report.series_csv();
        assert_eq!(
            series.lines().count(),
            report.steps.len() + 1,
            "one 1-s row per step"
        );
        assert!(report.to_table().contains("capacity: "));
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["end"], "resolved");
        assert!(json["capacity"]["rate"].as_f64().unwrap() > 900.0);
    }
}
