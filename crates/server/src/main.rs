//! The `fjord` tracker binary: configuration, logging, signals, supervision.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;
use fjord_server::Config;
use fjord_server::access_list::Reloaded;
use fjord_server::config::{ConfigError, DEFAULT_CONFIG_TOML};
use sd_notify::NotifyState;

/// fjord: a lock-free UDP BitTorrent tracker (BEP 15).
///
/// With no arguments it runs with the embedded defaults (see --print-config).
#[derive(Parser, Debug)]
#[command(name = "fjord", version = fjord_server::logging::VERSION, about)]
struct Cli {
    /// TOML configuration file; flags override it.
    #[arg(short, long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Print the default configuration (commented TOML) and exit.
    #[arg(long)]
    print_config: bool,
    /// UDP address to listen on (repeatable; replaces network.listen).
    #[arg(long, value_name = "ADDR")]
    listen: Vec<SocketAddr>,
    /// Worker threads (0 = one per core).
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// Prometheus exporter address (metrics.listen; enables metrics).
    #[arg(long, value_name = "ADDR", conflicts_with = "no_metrics")]
    metrics_listen: Option<SocketAddr>,
    /// Do not serve metrics (metrics.enabled = false).
    #[arg(long)]
    no_metrics: bool,
    /// Log level (log_level); RUST_LOG overrides it.
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    /// Log format: text or json (log_format).
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
    /// Access-list file (access_list.path).
    #[arg(long, value_name = "PATH")]
    access_list: Option<PathBuf>,
    /// Access-list mode: off, allow or deny (access_list.mode).
    #[arg(long, value_name = "MODE")]
    access_list_mode: Option<String>,
    /// Catalogue of named torrents (stats.catalogue).
    #[arg(long, value_name = "PATH")]
    catalogue: Option<PathBuf>,
    /// User to switch to after binding (privileges.user).
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
    /// Group to switch to after binding (privileges.group).
    #[arg(long, value_name = "NAME")]
    group: Option<String>,
    /// Connection-id key, 32 hex characters (connection_id.key). Prefer the environment
    /// variable: a flag is visible to every user in the process list.
    #[arg(
        long,
        value_name = "HEX",
        env = "FJORD_CONNECTION_ID_KEY",
        hide_env_values = true
    )]
    connection_id_key: Option<String>,
    /// Previous connection-id key, accepted but never issued while a new key is rolled out
    /// (connection_id.previous_key).
    #[arg(
        long,
        value_name = "HEX",
        env = "FJORD_CONNECTION_ID_PREVIOUS_KEY",
        hide_env_values = true
    )]
    connection_id_previous_key: Option<String>,
    /// State directory: swarm snapshots and the kept connection-id key (state.dir).
    #[arg(long, value_name = "PATH")]
    state_dir: Option<PathBuf>,
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let mut config = match &cli.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if !cli.listen.is_empty() {
        config.network.listen = cli.listen.clone();
    }
    if let Some(n) = cli.workers {
        config.workers = n;
    }
    if let Some(a) = cli.metrics_listen {
        config.metrics.listen = a;
        config.metrics.enabled = true;
    }
    if cli.no_metrics {
        config.metrics.enabled = false;
    }
    if let Some(l) = &cli.log_level {
        config.log_level = l.clone();
    }
    if let Some(f) = &cli.log_format {
        config.log_format = toml::Value::String(f.clone()).try_into().map_err(|_| {
            anyhow::anyhow!("invalid value for `log_format` (--log-format): expected text or json")
        })?;
    }
    if let Some(p) = &cli.access_list {
        config.access_list.path = Some(p.clone());
    }
    if let Some(m) = &cli.access_list_mode {
        config.access_list.mode = toml::Value::String(m.clone())
            .try_into()
            .map_err(|_| anyhow::anyhow!("invalid value for `access_list.mode` (--access-list-mode): expected off, allow or deny"))?;
    }
    if let Some(p) = &cli.catalogue {
        config.stats.catalogue = Some(p.clone());
    }
    if let Some(u) = &cli.user {
        config.privileges.user = u.clone();
    }
    if let Some(g) = &cli.group {
        config.privileges.group = g.clone();
    }
    if let Some(d) = &cli.state_dir {
        config.state.dir = Some(d.clone());
    }
    type SetKey = fn(&mut Config, String);
    let keys: [(&Option<String>, SetKey, &str, &str); 2] = [
        (
            &cli.connection_id_key,
            |c, k| c.connection_id.key = k,
            "connection_id.key",
            "--connection-id-key or FJORD_CONNECTION_ID_KEY",
        ),
        (
            &cli.connection_id_previous_key,
            |c, k| c.connection_id.previous_key = k,
            "connection_id.previous_key",
            "--connection-id-previous-key or FJORD_CONNECTION_ID_PREVIOUS_KEY",
        ),
    ];
    for (value, set, key, source) in keys {
        if let Some(k) = value {
            set(&mut config, k.clone());
            if let Err(e @ ConfigError::Invalid { key: bad, .. }) = config.validate()
                && bad == key
            {
                anyhow::bail!("{e} (from {source})");
            }
        }
    }
    config.validate()?;
    Ok(config)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.print_config {
        print!("{DEFAULT_CONFIG_TOML}");
        return ExitCode::SUCCESS;
    }
    let config = match load_config(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fjord: {e:#}");
            return ExitCode::from(2);
        }
    };
    fjord_server::logging::init(&config.log_level, config.log_format);

    let term = Arc::new(AtomicBool::new(false));
    let hup = Arc::new(AtomicBool::new(false));
    for (sig, flag) in [
        (signal_hook::consts::SIGTERM, &term),
        (signal_hook::consts::SIGINT, &term),
        (signal_hook::consts::SIGHUP, &hup),
    ] {
        if let Err(e) = signal_hook::flag::register(sig, Arc::clone(flag)) {
            eprintln!("fjord: cannot install signal handler: {e}");
            return ExitCode::FAILURE;
        }
    }

    let server = match fjord_server::start(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fjord: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    // One line per bound address on stdout, for scripts and tests (`--listen 127.0.0.1:0`).
    for a in server.local_addrs() {
        say(&format!("fjord listening on udp {a}"));
    }
    if let Some(a) = server.metrics_addr() {
        say(&format!("fjord metrics on http://{a}/metrics"));
    }
    // Sockets bound, metrics served, workers running: tell systemd (Type=notify).
    notify_service_manager(&[NotifyState::Ready, NotifyState::Status("serving")]);
    loop {
        if let Some(failure) = server.wait_failure(Duration::from_millis(100)) {
            eprintln!("fjord: {failure}; exiting");
            tracing::error!("{failure}; exiting");
            // Do not join the other workers: exit now, loudly.
            std::process::exit(70);
        }
        if hup.swap(false, Ordering::Relaxed) {
            match server.reload_access_list() {
                // The source logs each successful load itself.
                Ok(Reloaded::Loaded { .. }) => {}
                Ok(Reloaded::Off) => {
                    tracing::info!("SIGHUP: the access list is off; nothing to reload")
                }
                Err(e) => tracing::error!("SIGHUP: {e}; the previous access list stays in force"),
            }
            // The source logs a successful load itself.
            if let Some(Err(e)) = server.reload_catalogue() {
                tracing::error!("SIGHUP: {e}; the previous catalogue stays in force");
            }
        }
        if term.load(Ordering::Relaxed) {
            tracing::info!("stopping");
            notify_service_manager(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
            return match server.shutdown() {
                Ok(c) => {
                    tracing::info!(
                        rx_packets = c.rx_packets,
                        tx_packets = c.tx_packets,
                        dropped = c.total_drops(),
                        "stopped"
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("fjord: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
    }
}

/// Sends `states` to the service manager when one asked for them (`NOTIFY_SOCKET` set, as
/// systemd does for `Type=notify`); without it this does nothing. A failed send is logged and
/// otherwise ignored: the tracker serves whether or not its supervisor listens.
fn notify_service_manager(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("cannot notify the service manager (NOTIFY_SOCKET): {e}");
    }
}

/// One line on stdout for scripts and supervisors. A closed or full stdout is ignored: the
/// tracker must not die because whoever started it stopped reading (`println!` would panic).
fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
