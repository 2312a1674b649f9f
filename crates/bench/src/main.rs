//! `fjord-bench`: load-test any BEP 15 UDP tracker. See `fjord-bench --help`.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use clap::Parser as _;
use fjord_bench::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fjord-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    let cfg = cli.to_config()?;
    // First Ctrl-C: stop sending and report; a second one exits at once.
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&stop))?;
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    let report = fjord_bench::run_until(&cfg, stop)?;
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_table());
    }
    Ok(if report.malformed_total > 0 {
        ExitCode::from(2)
    } else if report.responses_total == 0 {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}
