//! Limits a run must stay within (`--max-loss`, `--max-p99`, `--max-p999`, `--min-rate`):
//! for CI gates, and, in capacity mode, the definition of "still coping" at each step.

use std::fmt;

use serde::Serialize;

use crate::report::Report;

/// The limits; `None` = not checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Thresholds {
    /// Highest acceptable loss, as a fraction (0.01 = 1 %).
    pub max_loss: Option<f64>,
    /// Highest acceptable p99 latency, µs.
    pub max_p99_us: Option<u64>,
    /// Highest acceptable p99.9 latency, µs.
    pub max_p999_us: Option<u64>,
    /// Lowest acceptable rate of valid replies per second (in capacity mode: the lowest
    /// acceptable capacity).
    pub min_rate: Option<f64>,
}

/// One limit a run did not keep.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Breach {
    /// Which limit: "loss", "p99", "p99.9", "rate".
    pub limit: &'static str,
    /// What was measured and what was allowed, in words.
    pub text: String,
}

impl fmt::Display for Breach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Formats a fraction as a percentage with enough digits to see small losses.
pub fn percent(fraction: f64) -> String {
    let p = fraction * 100.0;
    if p == 0.0 || p >= 1.0 {
        format!("{p:.2} %")
    } else {
        format!("{p:.3} %")
    }
}

/// Formats microseconds for people: µs below 1 ms, ms below 10 s, else s.
pub fn duration_us(us: u64) -> String {
    if us < 1_000 {
        format!("{us} µs")
    } else if us < 10_000_000 {
        format!("{:.2} ms", us as f64 / 1000.0)
    } else {
        format!("{:.1} s", us as f64 / 1e6)
    }
}

impl Thresholds {
    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        self.max_loss.is_some()
            || self.max_p99_us.is_some()
            || self.max_p999_us.is_some()
            || self.min_rate.is_some()
    }

    /// The latency and loss limits of `self`, each replaced by `defaults`' where unset.
    pub fn or(self, defaults: Thresholds) -> Thresholds {
        Thresholds {
            max_loss: self.max_loss.or(defaults.max_loss),
            max_p99_us: self.max_p99_us.or(defaults.max_p99_us),
            max_p999_us: self.max_p999_us.or(defaults.max_p999_us),
            min_rate: self.min_rate.or(defaults.min_rate),
        }
    }

    /// Every limit `report` breaks. A report with no valid reply has no latency, so it
    /// breaks a latency limit by definition.
    pub fn check(&self, report: &Report) -> Vec<Breach> {
        self.check_values(
            report.loss,
            (report.latency.count > 0).then_some(report.latency.p99_us),
            (report.latency.count > 0).then_some(report.latency.p999_us),
            report.responses_per_second_total,
        )
    }

    /// [`check`](Self::check) on bare values (p99 and p99.9 `None` when nothing was
    /// answered).
    pub fn check_values(
        &self,
        loss: f64,
        p99_us: Option<u64>,
        p999_us: Option<u64>,
        rate: f64,
    ) -> Vec<Breach> {
        let mut out = Vec::new();
        if let Some(max) = self.max_loss
            && loss > max
        {
            out.push(Breach {
                limit: "loss",
                text: format!("loss {} > --max-loss {}", percent(loss), percent(max)),
            });
        }
        for (name, flag, max, value) in [
            ("p99", "--max-p99", self.max_p99_us, p99_us),
            ("p99.9", "--max-p999", self.max_p999_us, p999_us),
        ] {
            let Some(max) = max else { continue };
            match value {
                Some(v) if v <= max => {}
                Some(v) => out.push(Breach {
                    limit: name,
                    text: format!("{name} {} > {flag} {}", duration_us(v), duration_us(max)),
                }),
                None => out.push(Breach {
                    limit: name,
                    text: format!(
                        "no {name}: nothing was answered ({flag} {})",
                        duration_us(max)
                    ),
                }),
            }
        }
        if let Some(min) = self.min_rate
            && rate < min
        {
            out.push(Breach {
                limit: "rate",
                text: format!("{rate:.0} replies/s < --min-rate {min:.0}"),
            });
        }
        out
    }

    /// What was checked and passed, for the last line of a passing run.
    pub fn passed_text(
        &self,
        loss: f64,
        p99_us: Option<u64>,
        p999_us: Option<u64>,
        rate: f64,
    ) -> String {
        let mut parts = Vec::new();
        if let Some(max) = self.max_loss {
            parts.push(format!("loss {} <= {}", percent(loss), percent(max)));
        }
        if let (Some(max), Some(v)) = (self.max_p99_us, p99_us) {
            parts.push(format!("p99 {} <= {}", duration_us(v), duration_us(max)));
        }
        if let (Some(max), Some(v)) = (self.max_p999_us, p999_us) {
            parts.push(format!("p99.9 {} <= {}", duration_us(v), duration_us(max)));
        }
        if let Some(min) = self.min_rate {
            parts.push(format!("{rate:.0} replies/s >= {min:.0}"));
        }
        parts.join(", ")
    }
}

/// Parses a loss limit: a fraction (`0.01`) or a percentage (`1%`, `0.5 %`).
pub fn parse_fraction(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let (number, scale) = match t.strip_suffix('%') {
        Some(n) => (n.trim(), 100.0),
        None => (t, 1.0),
    };
    let v: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a fraction (0.01) or a percentage (1%)"))?;
    let v = v / scale;
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("{s:?} is not within 0-100 %"));
    }
    Ok(v)
}

/// Parses a latency limit in µs from `250us`, `5ms`, `1.5s` or a bare number of
/// milliseconds.
pub fn parse_latency_us(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (number, scale) = if let Some(n) = t.strip_suffix("us").or_else(|| t.strip_suffix("µs")) {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1e6)
    } else {
        (t, 1e3)
    };
    let v: f64 = number.trim().parse().map_err(|_| {
        format!("{s:?} is not a duration (e.g. 500us, 5ms, 1s; a bare number is ms)")
    })?;
    if !(v > 0.0 && v.is_finite()) {
        return Err(format!("{s:?} must be positive"));
    }
    Ok((v * scale).round().max(1.0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_and_percentages() {
        assert_eq!(parse_fraction("0.01"), Ok(0.01));
        assert_eq!(parse_fraction("1%"), Ok(0.01));
        assert_eq!(parse_fraction(" 0.5 %"), Ok(0.005));
        assert_eq!(parse_fraction("0"), Ok(0.0));
        assert!(parse_fraction("150%").is_err());
        assert!(parse_fraction("2").is_err());
        assert!(parse_fraction("lots").is_err());
    }

    #[test]
    fn latencies_with_units() {
        assert_eq!(parse_latency_us("250us"), Ok(250));
        assert_eq!(parse_latency_us("250µs"), Ok(250));
        assert_eq!(parse_latency_us("5ms"), Ok(5_000));
        assert_eq!(parse_latency_us("1.5s"), Ok(1_500_000));
        assert_eq!(parse_latency_us("20"), Ok(20_000));
        assert!(parse_latency_us("0ms").is_err());
        assert!(parse_latency_us("fast").is_err());
    }

    #[test]
    fn each_breach_is_named_and_limits_that_hold_are_silent() {
        let t = Thresholds {
            max_loss: Some(0.01),
            max_p99_us: Some(5_000),
            max_p999_us: Some(20_000),
            min_rate: Some(1000.0),
        };
        assert!(t.any());
        assert!(
            t.check_values(0.01, Some(5_000), Some(20_000), 1000.0)
                .is_empty()
        );
        let b = t.check_values(0.079, Some(12_300), Some(20_000), 999.0);
        let texts: Vec<String> = b.iter().map(|b| b.to_string()).collect();
        assert_eq!(
            texts,
            [
                "loss 7.90 % > --max-loss 1.00 %",
                "p99 12.30 ms > --max-p99 5.00 ms",
                "999 replies/s < --min-rate 1000"
            ]
        );
        let b = t.check_values(1.0, None, None, 0.0);
        assert_eq!(b.len(), 4);
        assert!(b[1].text.starts_with("no p99"), "{}", b[1].text);
        assert!(!Thresholds::default().any());
        assert!(
            Thresholds::default()
                .check_values(1.0, None, None, 0.0)
                .is_empty()
        );
        assert_eq!(
            t.passed_text(0.0, Some(800), Some(900), 2000.0),
            "loss 0.00 % <= 1.00 %, p99 800 µs <= 5.00 ms, p99.9 900 µs <= 20.00 ms, 2000 replies/s >= 1000"
        );
    }
}
