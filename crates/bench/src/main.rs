//! `fjord-bench`: load-test any BEP 15 UDP tracker, or find its capacity. See
//! `fjord-bench --help`.
//!
//! Every run that does not succeed ends with one line on stderr saying why; the exit status
//! tells which kind of failure it was (see the help).
#![forbid(unsafe_code)]

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context as _;
use clap::Parser as _;
use fjord_bench::cli::{Cli, Invocation, Outputs, Plan};
use fjord_bench::probe::ProbeError;
use fjord_bench::report::Report;
use fjord_bench::thresholds::Thresholds;

/// Exit status of a run that broke a limit.
const EXIT_LIMIT: u8 = 4;
/// Exit status when nothing (valid) answered.
const EXIT_NO_REPLY: u8 = 3;
/// Exit status when a reply was malformed.
const EXIT_MALFORMED: u8 = 2;

fn main() -> ExitCode {
    // Usage errors exit 1 (clap's default 2 means "malformed reply" here); --help and
    // --version print and exit 0.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(u8::from(e.use_stderr()));
        }
    };
    match run(&cli) {
        Ok((code, last_line)) => {
            eprintln!("fjord-bench: {last_line}");
            ExitCode::from(code)
        }
        Err(e) => {
            let code = if e.downcast_ref::<ProbeError>().is_some() {
                EXIT_NO_REPLY
            } else {
                1
            };
            eprintln!("fjord-bench: {e:#}");
            ExitCode::from(code)
        }
    }
}

fn write_file(path: &Path, contents: &str) -> anyhow::Result<()> {
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}

/// Runs the invocation; returns the exit status and the last line to print.
fn run(cli: &Cli) -> anyhow::Result<(u8, String)> {
    let Invocation {
        plan,
        thresholds,
        outputs,
    } = cli.to_invocation()?;
    // First Ctrl-C: stop sending and report; a second one exits at once.
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&stop))?;
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    let command: Vec<String> = std::env::args().collect();
    match plan {
        Plan::Run(cfg) => {
            let mut report = fjord_bench::run_until(&cfg, stop)?;
            report.command = Some(command);
            emit_run(&report, &outputs)?;
            Ok(verdict(&report, &thresholds))
        }
        Plan::Capacity { base, search } => {
            let progress = base.progress;
            let mut report = fjord_bench::find_capacity(&base, &search, stop, |step| {
                if progress {
                    let _ = writeln!(std::io::stderr(), "{}", step.line());
                }
            })?;
            report.command = Some(command);
            if outputs.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.to_table());
            }
            if let Some(path) = &outputs.csv {
                write_file(path, &report.series_csv())?;
            }
            if let Some(path) = &outputs.curve_csv {
                write_file(path, &report.curve_csv())?;
            }
            if let Some(path) = &outputs.plot {
                fjord_bench::plot::plot_search(&report, path)?;
            }
            let malformed: u64 = report.steps.iter().map(|s| s.report.malformed_total).sum();
            Ok(match &report.capacity {
                _ if malformed > 0 => (
                    EXIT_MALFORMED,
                    format!(
                        "{malformed} malformed replies during the search (see the steps' reports)"
                    ),
                ),
                None => (EXIT_LIMIT, report.conclusion.clone()),
                Some(c) => match thresholds.min_rate {
                    Some(min) if c.rate < min => (
                        EXIT_LIMIT,
                        format!("capacity {:.0} requests/s < --min-rate {min:.0}", c.rate),
                    ),
                    _ => (0, report.conclusion.clone()),
                },
            })
        }
    }
}

fn emit_run(report: &Report, outputs: &Outputs) -> anyhow::Result<()> {
    if outputs.json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{}", report.to_table());
    }
    if let Some(path) = &outputs.csv {
        write_file(path, &report.series_csv())?;
    }
    if let Some(path) = &outputs.plot {
        fjord_bench::plot::plot_run(report, path)?;
    }
    Ok(())
}

/// The exit status of a single run and the reason, as its last line.
fn verdict(report: &Report, thresholds: &Thresholds) -> (u8, String) {
    if report.malformed_total > 0 {
        return (
            EXIT_MALFORMED,
            format!(
                "FAILED: {} malformed replies (by reason: {:?})",
                report.malformed_total,
                report
                    .malformed
                    .iter()
                    .filter(|(_, n)| **n > 0)
                    .collect::<Vec<_>>()
            ),
        );
    }
    if report.responses_total == 0 {
        return (
            EXIT_NO_REPLY,
            format!(
                "FAILED: no valid reply from {} in the measured window ({} sent, {} timeouts, {} error replies, {} socket errors)",
                report.target,
                report.sent_total,
                report.timeouts.connect + report.timeouts.announce + report.timeouts.scrape,
                report.error_replies_total(),
                report.socket_errors
            ),
        );
    }
    let breaches = thresholds.check(report);
    let p = |v: u64| Some(v);
    if breaches.is_empty() {
        let checked = thresholds.passed_text(
            report.loss,
            p(report.latency.p99_us),
            p(report.latency.p999_us),
            report.responses_per_second_total,
        );
        let summary = format!(
            "{:.0} replies/s, loss {}, p99 {}",
            report.responses_per_second_total,
            fjord_bench::thresholds::percent(report.loss),
            fjord_bench::thresholds::duration_us(report.latency.p99_us)
        );
        (
            0,
            if thresholds.any() {
                format!("passed: {checked}")
            } else {
                format!("done: {summary}")
            },
        )
    } else {
        (
            EXIT_LIMIT,
            format!(
                "FAILED: {}",
                breaches
                    .iter()
                    .map(|b| b.text.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        )
    }
}
